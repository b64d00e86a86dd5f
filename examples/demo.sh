#!/usr/bin/env bash
# The main job on the built-in defaults: no licensed files, no downloads.
# Usage: AVATAR=avatar OUT=demo-output bash examples/demo.sh
set -euo pipefail
AVATAR=${AVATAR:-avatar}
OUT=${OUT:-demo-output}
mkdir -p "$OUT"

echo "== built-in head and body mannequins, sampled with rigged Gaussians"
"$AVATAR" init --model head -o "$OUT/head.avatar"
"$AVATAR" init --model body -k 4 -o "$OUT/body.avatar"
"$AVATAR" info "$OUT/head.avatar"

echo "== turntable views"
"$AVATAR" render "$OUT/head.avatar" --views 4 --size 384 -o "$OUT/head_views.png"
"$AVATAR" render "$OUT/body.avatar" --views 4 --size 384 -o "$OUT/body_views.png"

echo
echo "Wrote:"
ls -1 "$OUT"
