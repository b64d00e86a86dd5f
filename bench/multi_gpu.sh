#!/usr/bin/env bash
# The several-GPU measurements of bench/RESULTS.md, in one go, on a machine with 2 GPUs whose
# python3 has CUDA PyTorch (packages it lacks as wheels in .whl/, as for `make gpu-test`).
# Logs and JSON go to $BENCH_OUT (default /tmp/benchout).
#   bash bench/multi_gpu.sh
set -u
BENCH_OUT=${BENCH_OUT:-/tmp/benchout}
mkdir -p "$BENCH_OUT"
export OUT="$BENCH_OUT" PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
python3 bench/generate_e2e.py --steps 40 > "$BENCH_OUT/e2e_eager.log" 2>&1
python3 bench/reconstruct.py --kind head --steps 1000 --no-ablation --gpus 1 > "$BENCH_OUT/reconstruct_head_1.log" 2>&1
python3 bench/reconstruct.py --kind head --steps 1000 --no-ablation --gpus 2 > "$BENCH_OUT/reconstruct_head_2.log" 2>&1
python3 bench/generate_e2e.py --steps 60 --kinds head --gpus 1,1,2 --compile --encoder > "$BENCH_OUT/e2e_compile.log" 2>&1
python3 bench/reconstruct.py --kind body --steps 750 --no-ablation --gpus 1 > "$BENCH_OUT/reconstruct_body_1.log" 2>&1
python3 bench/reconstruct.py --kind body --steps 750 --no-ablation --gpus 2 > "$BENCH_OUT/reconstruct_body_2.log" 2>&1
echo done > "$BENCH_OUT/all.done"
