#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install sisyphus-db into it with the pinned torch pair.
# Usage: scripts/bootstrap.sh [extra]   e.g. `scripts/bootstrap.sh test`
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "sisyphus-db needs Python 3.11 or newer ($python_bin is $("$python_bin" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
target="."
if [ -n "${1:-}" ]; then target=".[$1]"; fi
.venv/bin/python -m pip install --quiet -c constraints.txt -e "$target"
