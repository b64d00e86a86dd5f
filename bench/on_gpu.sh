#!/usr/bin/env bash
# Run benchmark commands on a GPU machine whose python3 has CUDA PyTorch but not the packages
# avatarcli adds: they are taken from .whl/ (wheels, or site.tar.xz: a site-packages folder
# packed whole), installed once into $AVATARCLI_SITE, and gsplat's kernels are built before the
# first command so no timing includes the build.
#
#     bash bench/on_gpu.sh "python3 bench/capture.py --kind head" "python3 bench/reconstruct.py --kind body"
#
# $PYTHON names the interpreter (default python3). Each command's output goes to the
# terminal and to $OUT/log.txt (OUT defaults to bench/out).
set -uo pipefail
SITE=${AVATARCLI_SITE:-/tmp/avatarcli-site}
PY=${PYTHON:-python3}
export OUT=${OUT:-bench/out}
mkdir -p "$OUT"
if [ ! -d "$SITE/gsplat" ]; then
    mkdir -p "$SITE"
    if [ -f .whl/site.tar.xz ]; then
        tar -xJf .whl/site.tar.xz -C "$SITE"
    else
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
    fi
fi
export PYTHONPATH=$SITE:$PWD TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
start=$(date +%s)
"$PY" -c "from gsplat.cuda._backend import _C" || exit 1
echo "### gsplat ready in $(($(date +%s) - start)) s; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader)" | tee -a "$OUT/log.txt"
status=0
for cmd in "$@"; do
    echo "### $(date -u +%FT%TZ) $cmd" | tee -a "$OUT/log.txt"
    start=$(date +%s)
    bash -c "$cmd" 2>&1 | tee -a "$OUT/log.txt" || status=1
    echo "### exit ${PIPESTATUS[0]} after $(($(date +%s) - start)) s" | tee -a "$OUT/log.txt"
done
exit $status
