#!/usr/bin/env bash
# Create .venv and install audiocomp with its pinned dependencies; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing audiocomp and its dependencies into .venv (first time: several minutes, ~5 GB)"
  .venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
  .venv/bin/python -m pip install --disable-pip-version-check -q -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
