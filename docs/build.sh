#!/usr/bin/env bash
# Build the HTML documentation with warnings as errors; the tutorials run during the build.
#
#   docs/build.sh                 # full build into docs/_build/html
#   docs/build.sh -E              # extra arguments go to sphinx-build (here: fresh environment)
#   MANIFOLD_PS_DOCS_PLOT=False docs/build.sh   # pages only, tutorials not executed
#
# Needs the package installed with the docs extra: pip install -e ".[docs]".
set -euo pipefail
DOCS="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$DOCS")"

export MPLBACKEND=Agg
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
if [ -z "${MANIFOLD_PS_DATA:-}" ]; then
  export MANIFOLD_PS_DATA="$(cd "$ROOT/.." && pwd)/shared/data"
fi
if [ ! -d "$MANIFOLD_PS_DATA" ]; then
  echo "docs/build.sh: data folder not found: MANIFOLD_PS_DATA=$MANIFOLD_PS_DATA" >&2
  echo "  the tutorials read real data; point MANIFOLD_PS_DATA at the data folder (see docs/data.rst)" >&2
  exit 2
fi

# Tutorials share trained models through this folder (tutorial 3 saves the prior tutorial 4 uses).
export MANIFOLD_PS_TUTORIAL_CACHE="${MANIFOLD_PS_TUTORIAL_CACHE:-$DOCS/_build/tutorial_cache}"

start=$(date +%s)
python -m sphinx -W --keep-going -b html "$@" "$DOCS" "$DOCS/_build/html"
echo "docs/build.sh: built in $(( $(date +%s) - start )) s -> $DOCS/_build/html/index.html"
