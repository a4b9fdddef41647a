#!/usr/bin/env bash
# Set everything up and run the test suite against a real embedded PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
exec .venv/bin/python -m pytest "$@"
