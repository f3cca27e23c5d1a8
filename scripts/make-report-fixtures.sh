#!/usr/bin/env bash
# Writes the report fixtures the unit tests read (the GPT sample on CPU: baseline, packed
# dropout and 2:4) with the real harness, into OUTDIR (default test/fixtures/reports).
# The test command runs it into test-artifacts/ on every run, so the TypeScript reader is
# tested against what the current harness writes, not against files from an older one.
#   bash scripts/make-report-fixtures.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-test/fixtures/reports}"
PY="${MEMBIT_PYTHON:-$PWD/.venv/bin/python}"
[ -f dist/cli.js ] || { echo "make-report-fixtures: dist/cli.js is missing: run 'node esbuild.mjs' first" >&2; exit 1; }
mkdir -p "$OUT"
ARGS=(--batch-size 4 --seq-len 64 --n-layer 2 --n-embd 64 --n-head 2 --data-bytes 200000 --device cpu)
for v in baseline packed sparse24; do
  # 2:4 refreshes its mask every 40 steps: warm up past the first refresh so the report has
  # a flip rate.
  steps=5 warmup=1; [ "$v" = sparse24 ] && steps=60 warmup=40
  node dist/cli.js profile --python "$PY" --root samples --steps 2 --warmup "$warmup" --variant "$v" \
    --out "$OUT/gpt_tiny_cpu_$v.json" -- samples/gpt_tiny.py --steps "$steps" "${ARGS[@]}" >/dev/null
done
echo "make-report-fixtures: wrote $OUT/gpt_tiny_cpu_{baseline,packed,sparse24}.json"
