#!/usr/bin/env bash
# The main job on the built-in defaults: no licensed files, no downloads, runs on a CPU.
# Generation uses `--guidance tiny` (small random networks): it exercises the whole pipeline
# offline, and the avatars it makes are noise. With Stable Diffusion weights, drop
# `--guidance tiny` and the small settings (see README.md).
# Usage: AVATAR=avatar OUT=demo-output bash examples/demo.sh
set -euo pipefail
AVATAR=${AVATAR:-avatar}
OUT=${OUT:-demo-output}
mkdir -p "$OUT"

echo "== a head: init, generate (offline smoke run), animate, export"
"$AVATAR" init --model head -o "$OUT/knight.init.avatar"
"$AVATAR" render "$OUT/knight.init.avatar" --views 4 --size 384 -o "$OUT/knight_init_views.png"
"$AVATAR" generate "a bronze statue of a knight" --model head --from "$OUT/knight.init.avatar" \
    --guidance tiny --steps 20 --batch 2 --resolution 64 --preview-every 10 -o "$OUT/knight.avatar"
"$AVATAR" info "$OUT/knight.avatar"
"$AVATAR" animate "$OUT/knight.avatar" talk --size 256 --end 2 -o "$OUT/knight_talk.mp4"
"$AVATAR" export "$OUT/knight.avatar" -o "$OUT/knight.ply"
"$AVATAR" export "$OUT/knight.avatar" --motion talk -o "$OUT/knight.glb"
"$AVATAR" export "$OUT/knight.avatar" -o "$OUT/knight.splat.glb"
"$AVATAR" export "$OUT/knight.avatar" --motion talk -o "$OUT/knight_talk.html"   # open it in a browser

echo "== a splat from anywhere, rigged onto the template"
"$AVATAR" rig "$OUT/knight.ply" --model head -o "$OUT/knight.rigged.avatar"
"$AVATAR" info "$OUT/knight.rigged.avatar"

echo "== a body: init, generate (offline smoke run), animate"
"$AVATAR" init --model body -k 2 -o "$OUT/chef.init.avatar"
"$AVATAR" generate "a chef dressed in white" --model body --from "$OUT/chef.init.avatar" \
    --guidance tiny --steps 10 --batch 2 --resolution 64 -o "$OUT/chef.avatar"
"$AVATAR" animate "$OUT/chef.avatar" walk --size 160 --fps 10 -o "$OUT/chef_walk.gif"   # the camera follows a walk
"$AVATAR" motions wave -o "$OUT/wave.npz"                                                # a built-in motion, to edit
"$AVATAR" export "$OUT/chef.avatar" --motion "$OUT/wave.npz" -o "$OUT/chef_wave.glb"     # a skinned mesh that plays it

echo
echo "Wrote:"
ls -1 "$OUT"
