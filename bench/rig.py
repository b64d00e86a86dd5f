"""Rigging speed on the CPU: one million Gaussians bound to each template.

    python bench/rig.py [--count 1000000]

The Gaussians are sampled on the template (as `avatar init` does) and then pushed off the
skin by up to 10 cm so the body's weight smoothing has loose parts to work on. Target:
under 30 s for a million.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from avatarcli.model.initialize import init_avatar
from avatarcli.model.rigging import rest_world_gaussians, rig_gaussians
from avatarcli.templates.loading import load_template

from common import write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    results = {}
    for kind in ("head", "body"):
        tpl = load_template(kind)
        k = math.ceil(args.count / tpl.faces.shape[0])
        world = rest_world_gaussians(init_avatar(tpl, k, seed=0), tpl).select(torch.arange(args.count))
        g = torch.Generator().manual_seed(1)
        push = torch.nn.functional.normalize(torch.randn(args.count, 3, generator=g), dim=-1)
        world.means = world.means + push * (0.1 * torch.rand(args.count, 1, generator=g) ** 3)
        t0 = time.perf_counter()
        av, report = rig_gaussians(world, tpl)
        seconds = time.perf_counter() - t0
        results[kind] = {"gaussians": len(av), "seconds": seconds, "far": report.far, "threads": torch.get_num_threads()}
        print(f"{kind}: rigged {len(av):,} Gaussians in {seconds:.1f} s ({report.far:,} far)")
    write_result("rig", results)


if __name__ == "__main__":
    main()
