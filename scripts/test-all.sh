#!/usr/bin/env bash
# The full test suite, from a fresh clone: installs what is missing, builds, packages,
# then runs the type check, the linters (ESLint, ruff), the unit tests (node:test), the
# integration tests (node:test against real services started on this machine: sshd, SLURM),
# the Python tests (pytest on real CPU or GPU PyTorch) and the end-to-end suite inside a real
# VS Code (code-server).
# Nothing is skipped for a missing tool: a missing tool is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
LOGS="$ROOT/test-artifacts/logs"
mkdir -p "$LOGS"
failed_stages=()

stage() { printf '\n=== %s ===\n' "$1"; }
die() { echo "test-all: $*" >&2; exit 1; }

stage "install"
bash scripts/setup-system.sh --tests || die "installing the Debian packages the tests need failed"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
fi
PY="$(bash scripts/setup-python.sh | tail -n 1)" || die "no Python with PyTorch: see the message above"
[ -x "$PY" ] || die "setup-python.sh did not give an interpreter"
bash scripts/setup-e2e.sh || die "installing the end-to-end tools failed"
export MEMBIT_PYTHON="$PY"

stage "type check"
npm run --silent typecheck || failed_stages+=("typecheck")

stage "lint (eslint)"
# TypeScript and the build scripts: typescript-eslint's strict, type-checked rules, configured in
# eslint.config.mjs (tsc itself runs in the type check stage above; `npm run lint` runs both).
npm run --silent lint:eslint || failed_stages+=("eslint")

stage "lint (ruff)"
# Python: pyflakes and pycodestyle's correctness classes, configured in kernels/pyproject.toml.
"$(dirname "$PY")/ruff" check --config kernels/pyproject.toml kernels samples test/gpu || failed_stages+=("ruff")

stage "build and package"
npm run package || die "npm run package failed"
node esbuild.mjs --tests || die "building the tests failed"

stage "report fixtures from the current harness"
# The unit tests read reports the harness of this checkout writes, not committed copies
# that could drift from it.
export MEMBIT_REPORT_FIXTURES="$ROOT/test-artifacts/report-fixtures"
bash scripts/make-report-fixtures.sh "$MEMBIT_REPORT_FIXTURES" > "$LOGS/report-fixtures.log" 2>&1 \
  || { cat "$LOGS/report-fixtures.log"; failed_stages+=("report-fixtures"); unset MEMBIT_REPORT_FIXTURES; }

stage "unit tests (node:test)"
node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$LOGS/unit.tap" out/test/unit/ \
  || failed_stages+=("unit")

stage "integration tests (node:test; a real sshd on 127.0.0.1 and a one-node SLURM cluster)"
node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$LOGS/integration.tap" out/test/integration/ \
  || failed_stages+=("integration")

stage "Python tests (pytest)"
(cd kernels && "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml="$LOGS/pytest.xml" tests) | tee "$LOGS/pytest.log"
py_rc=${PIPESTATUS[0]}
# pytest exits 5 when it collected nothing: for us that is a broken suite, not a pass.
[ "$py_rc" -eq 0 ] || failed_stages+=("pytest(rc=$py_rc)")

stage "end-to-end tests (code-server)"
node out/test/e2e/codeServer.js | tee "$LOGS/e2e.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_stages+=("e2e")

stage "end-to-end tests in an untrusted workspace (code-server, Restricted Mode)"
node out/test/e2e/codeServer.js --untrusted | tee "$LOGS/e2e-untrusted.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_stages+=("e2e-untrusted")

stage "summary"
unit_pass=$(grep -E '^# pass ' "$LOGS/unit.tap" | awk '{s+=$3} END {print s+0}')
unit_fail=$(grep -E '^# fail ' "$LOGS/unit.tap" | awk '{s+=$3} END {print s+0}')
int_pass=$(grep -E '^# pass ' "$LOGS/integration.tap" 2>/dev/null | awk '{s+=$3} END {print s+0}')
int_fail=$(grep -E '^# fail ' "$LOGS/integration.tap" 2>/dev/null | awk '{s+=$3} END {print s+0}')
py_pass=$(grep -oE '[0-9]+ passed' "$LOGS/pytest.log" | tail -n 1 | awk '{print $1+0}')
py_fail=$(grep -oE '[0-9]+ (failed|error)' "$LOGS/pytest.log" | awk '{s+=$1} END {print s+0}')
py_skip=$(grep -oE '[0-9]+ skipped' "$LOGS/pytest.log" | tail -n 1 | awk '{print $1+0}')
# One summary line per suite run (the trusted window, then the untrusted one); a run that
# printed none counts as a failure.
e2e_pass=0
e2e_fail=0
for log in "$LOGS/e2e.log" "$LOGS/e2e-untrusted.log"; do
  line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed' "$log" 2>/dev/null | tail -n 1)
  if [ -n "$line" ]; then
    e2e_pass=$(( e2e_pass + $(echo "$line" | awk '{print $2+0}') ))
    e2e_fail=$(( e2e_fail + $(echo "$line" | awk '{print $4+0}') ))
  else
    e2e_fail=$(( e2e_fail + 1 ))
  fi
done
echo "unit:   ${unit_pass} passed, ${unit_fail} failed"
echo "integration: ${int_pass} passed, ${int_fail} failed"
echo "python: ${py_pass:-0} passed, ${py_fail:-0} failed, ${py_skip:-0} skipped (CUDA-only tests on a machine without a GPU; reasons above)"
echo "e2e:    ${e2e_pass:-0} passed, ${e2e_fail:-0} failed"
total_pass=$(( unit_pass + int_pass + ${py_pass:-0} + ${e2e_pass:-0} ))
total_fail=$(( unit_fail + int_fail + ${py_fail:-0} + ${e2e_fail:-0} ))
if [ "${#failed_stages[@]}" -gt 0 ] && [ "$total_fail" -eq 0 ]; then total_fail=${#failed_stages[@]}; fi
echo "${total_pass} passed, ${total_fail} failed"
if [ "${#failed_stages[@]}" -gt 0 ]; then
  echo "test-all: failed stages: ${failed_stages[*]}" >&2
  exit 1
fi
