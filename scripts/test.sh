#!/usr/bin/env bash
# Quickstart 2: the whole test suite. Real-data tests use ../shared/data/fsdd (or $AUDIOCOMP_FSDD) when present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
