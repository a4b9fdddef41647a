#!/usr/bin/env bash
# Set everything up and run the test suite against a real embedded PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
# The browser tests (marker `browser`) drive Debian's chromium through Playwright; never
# `playwright install` (its browser download is not a package). Without chromium they skip.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "note: /usr/bin/chromium is missing: the browser tests will be skipped (apt-get install chromium)" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
