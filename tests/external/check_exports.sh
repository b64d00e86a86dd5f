#!/usr/bin/env bash
# Open every kind of export with the tools users have, and print a table:
#   tests/external/check_exports.sh [WORK_DIR]
# Installs the npm tools pinned in tests/external/package-lock.json (Khronos glTF validator,
# splat-transform, the PlayCanvas engine, esbuild) into $AVATARCLI_CHECKS_CACHE (default
# ~/.cache/avatarcli-checks), makes a head and a body and every export of each with the CLI,
# and runs tests/external/check_exports.py. Needs node and npm, and Chromium for the glTF
# splats read by PlayCanvas and for the .html player ($CHROMIUM names it if it is not on the
# PATH); Blender, where installed ($BLENDER), imports the skinned .glb. $PYTHON is the Python
# with avatarcli (default: python3). Exit status 1 if a check fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${AVATARCLI_CHECKS_CACHE:-$HOME/.cache/avatarcli-checks}"
python="${PYTHON:-python3}"

mkdir -p "$cache"
if ! cmp -s "$here/package-lock.json" "$cache/package-lock.json" || [ ! -d "$cache/node_modules" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$cache/"
  (cd "$cache" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
cd "$root"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$python" "$here/check_exports.py" --tools "$cache" ${1:+--work "$1"}
