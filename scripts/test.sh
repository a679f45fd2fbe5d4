#!/usr/bin/env bash
# The whole test suite on a fresh machine (Python 3.11 + pip + node/npm):
# install (torch pinned to the CPU wheel first), lint, type-check, then unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e ".[torch,test]"
bash scripts/install-emulators.sh >/dev/null

$PY -m ruff check cloudwds tests integration bench scripts
$PY -m ruff format --check cloudwds tests integration bench scripts
$PY -m mypy cloudwds
$PY -m pytest -q -p no:cacheprovider "$@"
