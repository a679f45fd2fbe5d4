#!/usr/bin/env bash
# The whole test suite on a fresh machine (Python 3.11 + pip + Node.js >= 22 with npm):
# install (torch pinned to the CPU wheel first), lint, type-check, build the docs, then unit and
# integration tests. CI runs exactly this script (.ci/run). Each step prints a "==>" header.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
step() { echo "==> $*"; }
# pip's own lines, less the "already satisfied" ones; pip's exit status is kept (pipefail).
pip_install() {
    $PY -m pip install --disable-pip-version-check --progress-bar off "$@" \
        | { grep -v "^Requirement already satisfied" || true; }
}

step "installing torch==2.13.0 (pinned first: an unpinned torch pulls several GB of CUDA packages)"
pip_install "torch==2.13.0"
step "installing cloudwds with its test and docs dependencies"
pip_install -e ".[torch,test]"
step "installing the Azurite emulator (needs Node.js >= 22 and npm)"
bash scripts/install-emulators.sh >/dev/null

step "ruff: lint and format check"
$PY -m ruff check cloudwds tests integration bench scripts
$PY -m ruff format --check cloudwds tests integration bench scripts
step "mypy"
$PY -m mypy cloudwds
step "docs: mkdocs build --strict (warnings are errors)"
SITE_DIR="$(mktemp -d)"
$PY -m mkdocs build --strict --quiet --site-dir "$SITE_DIR"
rm -rf "$SITE_DIR"
step "pytest: unit (tests/) and integration (integration/) suites"
$PY -m pytest -q -p no:cacheprovider "$@"
