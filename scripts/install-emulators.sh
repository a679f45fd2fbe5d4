#!/usr/bin/env bash
# Install the Azurite blob emulator (npm) used by the integration tests. Idempotent.
# Python-side servers (moto, gcp-storage-emulator) come from `pip install -e .[test]`.
set -euo pipefail

command -v node >/dev/null || { echo "node not found: install node >= 20 and npm first" >&2; exit 1; }
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
    echo "azurite $AZURITE_VERSION already installed" >&2
else
    command -v npm >/dev/null || { echo "npm not found" >&2; exit 1; }
    mkdir -p "$PREFIX"
    echo "installing azurite@$AZURITE_VERSION into $PREFIX" >&2
    npm install --prefix "$PREFIX" "azurite@$AZURITE_VERSION" --no-audit --no-fund >&2
fi

[ "$(installed_version)" = "$AZURITE_VERSION" ] || { echo "azurite install failed" >&2; exit 1; }
echo "$BIN"
