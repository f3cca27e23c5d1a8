#!/usr/bin/env bash
# On a CUDA machine: the GPU tests of membit.sparse while the three convergence runs train
# side by side, then the speed benchmark on an otherwise idle GPU. Everything lands in OUTDIR.
#
#   bash benchmarks/run_sparse24_gpu.sh [OUTDIR]        (default benchmarks/results/sparse24-run)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/sparse24-run}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
"$PY" -c 'import torch; from membit.sparse import cusparselt; print(torch.__version__, torch.cuda.get_device_name(0), cusparselt.check(torch.device("cuda"), torch.bfloat16))' 2>&1 | tee "$OUT/env.log"
pids=()
for v in dense sparse sparse-ft; do
  "$PY" benchmarks/train_sparse24.py --variant "$v" --steps "${CONV_STEPS:-3000}" --out "$OUT/conv_$v.json" > "$OUT/conv_$v.log" 2>&1 &
  pids+=($!)
done
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_sparse_gpu.py tests/test_sparse.py tests/test_sparse_patch.py > "$OUT/pytest_sparse.log" 2>&1
tail -n 15 "$OUT/pytest_sparse.log"
for p in "${pids[@]}"; do wait "$p"; done
tail -n 2 "$OUT"/conv_*.log
"$PY" benchmarks/plot_sparse24.py "$OUT"/conv_dense.json "$OUT"/conv_sparse.json "$OUT"/conv_sparse-ft.json --out "$OUT/sparse24_convergence"
"$PY" benchmarks/bench_sparse24.py --ffn --advice --e2e --budget-s "${BENCH_BUDGET:-270}" \
  --out "$OUT/sparse24.json" --advice-out "$OUT/advice.json" 2> "$OUT/bench.log"
