#!/usr/bin/env bash
# Set everything up and run the main job on the embedded database.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/sisyphus db upgrade
.venv/bin/sisyphus db status
