"""``python -m manifold_ps.cli`` (also what ``torchrun -m manifold_ps.cli ...`` runs)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
