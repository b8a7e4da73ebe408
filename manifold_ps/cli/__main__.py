"""``python -m manifold_ps.cli`` (also what ``torchrun -m manifold_ps.cli ...`` runs)."""

import sys

from . import console_main

if __name__ == "__main__":
    sys.exit(console_main())
