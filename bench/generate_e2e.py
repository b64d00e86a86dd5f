"""`avatar generate` end to end: the real CLI on full-size SD 1.5 networks at random weights.

    python bench/generate_e2e.py [--steps 60] [--kinds head,body] [--gpus 1,2] [--compile] [--encoder] [--models DIR]

For each kind and GPU count, runs the default recipe (1024x1024 renders, batch 8) for
``--steps`` steps as a user would (`python -m avatarcli generate ... --gpus N`) and reads the
run's own record from the written avatar (``meta["run"]``): time to the first step (from
process start, loading and compilation included), steady ms per step, peak GPU memory (of
the first process), and the projected wall time of the full recipe (10 000 steps). The
random-weight folders are written once into ``--models``. Speed does not depend on the
weights, so these are the real networks' timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from avatarcli.generate.guidance.random_weights import write_sd15_folders
from avatarcli.model import avatar_file

from common import write_result

PROMPTS = {"head": "Kratos", "body": "a chef dressed in white"}
RECIPE_STEPS = 10_000


def run(kind: str, gpus: int, steps: int, models: dict[str, Path], compile_: bool, encoder: bool, folder: Path) -> dict:
    out = folder / f"{kind}-{gpus}gpu{'-compile' if compile_ else ''}{'-taesd' if encoder else ''}.avatar"
    cmd = [sys.executable, "-m", "avatarcli", "generate", PROMPTS[kind], "--model", kind, "--diffusion", str(models["base"]),
           "--controlnet", str(models["controlnet"]), "--steps", str(steps), "--checkpoint-every", "0", "--gpus", str(gpus),
           "-o", str(out)]  # fmt: skip
    if compile_:
        cmd.append("--compile")
    if encoder:
        cmd += ["--encoder", str(models["taesd"])]
    launched = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - launched
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    record = avatar_file.load(out).meta["run"]
    first = record["first_step_at"] - launched
    return {
        "kind": kind, "gpus": gpus, "compile": compile_, "encoder": encoder, "steps": steps, "wall_s": round(wall, 1),
        "time_to_first_step_s": round(first, 1), "ms_per_step": record["ms_per_step"], "peak_gib": record.get("peak_gib"),
        "recipe_minutes": round((first + RECIPE_STEPS * record["ms_per_step"] / 1000) / 60, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--kinds", default="head,body")
    ap.add_argument("--gpus", default="1,2")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--encoder", action="store_true")
    ap.add_argument("--models", default=os.environ.get("AVATARCLI_GPU_MODELS", "/tmp/avatarcli-gpu-models"))
    args = ap.parse_args()
    models = write_sd15_folders(Path(args.models), torch.device("cuda"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            for gpus in (int(g) for g in args.gpus.split(",")):
                r = run(kind, gpus, args.steps, models, args.compile, args.encoder, Path(tmp))
                rows.append(r)
                print(json.dumps(r), flush=True)
    tag = "generate_e2e" + ("_compile" if args.compile else "") + ("_taesd" if args.encoder else "")
    write_result(tag, {"rows": rows})
    print("| kind | GPUs | compile | encoder | first step (s) | ms/step | peak GiB | 10 000 steps (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['gpus']} | {r['compile']} | {r['encoder']} | {r['time_to_first_step_s']} | {r['ms_per_step']} | "
              f"{r['peak_gib']} | {r['recipe_minutes']} |")  # fmt: skip


if __name__ == "__main__":
    main()
