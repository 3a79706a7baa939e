#!/usr/bin/env bash
# Quickstart 1: the whole pipeline on synthetic audio. Extra arguments go to `audiocomp demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/audiocomp demo "$@"
