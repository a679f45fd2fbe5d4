#!/usr/bin/env bash
# Install the Azurite blob emulator (npm) used by the integration tests. Idempotent.
# Python-side servers (moto, gcp-storage-emulator) come from `pip install -e .[test]`.
# Needs node and npm: node >= 22 (the pinned Azurite declares engines.node ">=22.0.0").
set -euo pipefail

# The Node.js major version the pinned Azurite supports, and the oldest one it has been seen to
# run the integration tests on. Below the first we warn; below the second we stop.
NODE_SUPPORTED_MAJOR=22
NODE_OLDEST_WORKING_MAJOR=20

if ! command -v node >/dev/null; then
    echo "node not found: install Node.js >= $NODE_SUPPORTED_MAJOR (with npm) first, e.g. from your" \
        "distribution or https://nodejs.org" >&2
    exit 1
fi
NODE_VERSION="$(node --version)"             # v22.11.0
NODE_MAJOR="${NODE_VERSION#v}"
NODE_MAJOR="${NODE_MAJOR%%.*}"
if [ "$NODE_MAJOR" -lt "$NODE_OLDEST_WORKING_MAJOR" ]; then
    echo "node $NODE_VERSION is too old for the Azurite emulator: install Node.js >= $NODE_SUPPORTED_MAJOR" >&2
    exit 1
elif [ "$NODE_MAJOR" -lt "$NODE_SUPPORTED_MAJOR" ]; then
    echo "warning: node $NODE_VERSION is older than the $NODE_SUPPORTED_MAJOR.x that Azurite supports" \
        "(npm will say EBADENGINE); the tests run on it, but install Node.js >= $NODE_SUPPORTED_MAJOR" \
        "if the Azure tests fail to start" >&2
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The single pin lives in integration/package.json.
AZURITE_VERSION="$(node -p "require(process.argv[1]).dependencies.azurite" "$HERE/../integration/package.json")"
PREFIX="${CLOUDWDS_EMULATORS_DIR:-$HOME/.cache/cloudwds-emulators}"
BIN="$PREFIX/node_modules/.bin/azurite-blob"
PKG_JSON="$PREFIX/node_modules/azurite/package.json"

installed_version() {
    [ -f "$PKG_JSON" ] && node -p "require(process.argv[1]).version" "$PKG_JSON" 2>/dev/null || true
}

if [ "$(installed_version)" = "$AZURITE_VERSION" ] && [ -x "$BIN" ]; then
    echo "azurite $AZURITE_VERSION already installed in $PREFIX (node $NODE_VERSION)" >&2
else
    command -v npm >/dev/null || { echo "npm not found: install npm (it comes with Node.js)" >&2; exit 1; }
    mkdir -p "$PREFIX"
    echo "installing azurite@$AZURITE_VERSION into $PREFIX with npm (node $NODE_VERSION) ..." >&2
    npm install --prefix "$PREFIX" "azurite@$AZURITE_VERSION" --no-audit --no-fund >&2
fi

[ "$(installed_version)" = "$AZURITE_VERSION" ] || { echo "azurite install failed" >&2; exit 1; }
echo "$BIN"
