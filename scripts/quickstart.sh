#!/usr/bin/env bash
# Set everything up and run the main job on the embedded database: `sisyphus demo`
# renders a drive video with rare road works, ingests it, builds the index, searches with
# one road-works frame and reports precision against the ground truth (HTML page too).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/sisyphus demo "$@"
