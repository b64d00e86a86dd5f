#!/usr/bin/env bash
# Run benchmark commands on a GPU machine whose python3 has CUDA PyTorch but not the packages
# avatarcli adds: they are taken from .whl/ (wheels, or .whl*/NAME.tar.xz: site-packages folders
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
mkdir -p "$SITE"
# every .whl*/*.tar.xz (site-packages folders packed whole; several calls may each carry one
# when one carry is limited in size) is unpacked once into $SITE, which outlives the call
for pack in .whl*/*.tar.xz; do
    [ -f "$pack" ] || continue
    mark="$SITE/.unpacked-$(basename "$pack")"
    [ -f "$mark" ] || { tar -xJf "$pack" -C "$SITE" && touch "$mark"; }
done
if [ ! -d "$SITE/gsplat" ] && compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
fi
# a wheel unpacked by a zip tool loses the exec bit of imageio-ffmpeg's own ffmpeg
chmod +x "$SITE"/imageio_ffmpeg/binaries/ffmpeg-* 2>/dev/null
export PYTHONPATH=$SITE:$PWD TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
start=$(date +%s)
"$PY" -c "from gsplat.cuda._backend import _C" || exit 1
echo "### numba: $("$PY" -c "import numba; print(numba.__version__)" 2>&1 | tail -1)" | tee -a "$OUT/log.txt"
echo "### ffmpeg: $("$PY" -c "from avatarcli.ffmpeg import ffmpeg_exe; print(ffmpeg_exe())" 2>&1 | tail -1)" | tee -a "$OUT/log.txt"
echo "### gsplat ready in $(($(date +%s) - start)) s; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader)" | tee -a "$OUT/log.txt"
status=0
for cmd in "$@"; do
    echo "### $(date -u +%FT%TZ) $cmd" | tee -a "$OUT/log.txt"
    start=$(date +%s)
    bash -c "$cmd" 2>&1 | tee -a "$OUT/log.txt"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || status=1
    echo "### exit $rc after $(($(date +%s) - start)) s" | tee -a "$OUT/log.txt"
done
exit $status
