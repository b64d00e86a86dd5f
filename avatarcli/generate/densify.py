"""Growing and pruning Gaussians during generation, with gsplat's parameter operations.

Gaussians whose projected means get large gradients are cloned (small ones) or split (large
ones); nearly transparent or oversized ones are removed. The binding tensors (triangle per
Gaussian, or skinning weights and surface point) live in the same parameter dict, so a clone
or a split inherits its parent's binding and a removal drops it.

The shape is gsplat's strategy pattern: a state dict, a hook before the backward pass and
one after it. gsplat's own ``DefaultStrategy`` is not used as it is: its thresholds are
absolute scene units and its schedule resets opacities, where avatars need thresholds
relative to the subject and bindings carried through every operation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from gsplat.strategy.ops import duplicate, remove, split
from torch import Tensor

from avatarcli.generate.config import DensifyConfig


class Densifier:
    """Accumulates screen-space gradients between refinements.

    Args:
        config: thresholds and schedule.
        radius: the subject's radius in metres (scale thresholds are relative to it).
    """

    def __init__(self, config: DensifyConfig, radius: float) -> None:
        self.config = config
        self.radius = radius
        self.state: dict[str, Tensor | None] = {"grad2d": None, "count": None}

    def step_pre_backward(self, meta: dict) -> None:
        """Keep the gradient of the projected means, which the statistics are made of."""
        meta["means2d"].retain_grad()

    def step_post_backward(
        self,
        params: dict[str, torch.nn.Parameter],
        optimizers: dict[str, torch.optim.Optimizer],
        statistics: tuple[Tensor, Tensor],
        step: int,
        world_scale: Callable[[], Tensor],
    ) -> tuple[int, int, int] | None:
        """Add this step's statistics (from :meth:`statistics`, summed over processes when
        there are several); at a refinement step, clone, split and prune.

        Args:
            step: steps done in the current stage, this one included.
            world_scale: gives (N,) the largest world-space standard deviation of each Gaussian.

        Returns:
            (cloned, split, pruned) at a refinement step, else None.
        """
        self.add(*statistics)
        if not self.due(step):
            return None
        return self.refine(params, optimizers, world_scale())

    def due(self, step: int) -> bool:
        c = self.config
        return c.start <= step <= c.stop and step % c.every == 0 and step > 0

    @torch.no_grad()
    def statistics(self, meta: dict, n: int, views: int, elements: int = 1) -> tuple[Tensor, Tensor]:
        """This step's screen-space gradient norms and view counts, each (N,); ``meta`` from
        the rasterizer after backward.

        Args:
            n: Gaussians.
            views: the step's views in all (this process may hold a share of them).
            elements: how many terms per view the loss sums (latent or pixel values).
                Distillation losses are sums, 3DGS photometric losses means; dividing by the
                count puts the gradients on the scale gsplat's thresholds were tuned for.
        """
        means2d = meta["means2d"]
        device = means2d.device
        if means2d.grad is None:
            return torch.zeros(n, device=device), torch.zeros(n, device=device)
        grads = means2d.grad.reshape(-1, n, 2) / float(elements)
        # the same normalisation as gsplat's strategies, so their thresholds carry over
        grads[..., 0] *= meta["width"] / 2.0 * views
        grads[..., 1] *= meta["height"] / 2.0 * views
        seen = (meta["radii"].reshape(-1, n, 2) > 0).all(dim=-1)
        return (grads.norm(dim=-1) * seen).sum(0), seen.sum(0).float()

    @torch.no_grad()
    def add(self, norms: Tensor, counts: Tensor) -> None:
        """Accumulate a step's statistics (N,) each."""
        n = norms.shape[0]
        if self.state["grad2d"] is None or self.state["grad2d"].shape[0] != n:
            self.state = {"grad2d": torch.zeros(n, device=norms.device), "count": torch.zeros(n, device=norms.device)}
        self.state["grad2d"] += norms  # type: ignore[operator]
        self.state["count"] += counts  # type: ignore[operator]

    @torch.no_grad()
    def refine(
        self, params: dict[str, torch.nn.Parameter], optimizers: dict[str, torch.optim.Optimizer], world_scale: Tensor
    ) -> tuple[int, int, int]:
        """Clone, split and prune in place.

        Args:
            params: gsplat-style parameter dict (means, scales, quats, opacities, ... and the
                binding tensors as non-trainable parameters).
            optimizers: one Adam per trainable parameter, keyed like ``params``.
            world_scale: (N,) largest world-space standard deviation of each Gaussian at rest.

        Returns:
            (cloned, split, pruned) counts.
        """
        c = self.config
        n = params["means"].shape[0]
        grad2d, count = self.state["grad2d"], self.state["count"]
        cloned = splitted = 0
        if grad2d is not None and count is not None and grad2d.shape[0] == n and n < c.max_gaussians:
            hot = grad2d / count.clamp_min(1.0) > c.grad_threshold
            small = world_scale <= c.clone_scale * self.radius
            budget = c.max_gaussians - n
            clone_mask = _limit(hot & small, budget)
            split_mask = _limit(hot & ~small & ~clone_mask, max(0, budget - int(clone_mask.sum())))
            cloned, splitted = int(clone_mask.sum()), int(split_mask.sum())
            if cloned:
                duplicate(params=params, optimizers=optimizers, state=self.state, mask=clone_mask)
                world_scale = torch.cat([world_scale, world_scale[clone_mask]])
                split_mask = torch.cat([split_mask, torch.zeros(cloned, dtype=torch.bool, device=split_mask.device)])
            if splitted:
                split(params=params, optimizers=optimizers, state=self.state, mask=split_mask)
                world_scale = torch.cat([world_scale[~split_mask], (world_scale[split_mask] / 1.6).repeat(2)])
        opacity = torch.sigmoid(params["opacities"].flatten())
        prune = (opacity < c.prune_opacity) | (world_scale > c.prune_scale * self.radius)
        if int(prune.sum()) >= params["means"].shape[0]:
            prune[:] = False  # never remove everything
        pruned = int(prune.sum())
        if pruned:
            remove(params=params, optimizers=optimizers, state=self.state, mask=prune)
        self.state = {"grad2d": None, "count": None}
        return cloned, splitted, pruned


def _limit(mask: Tensor, budget: int) -> Tensor:
    """Keep at most ``budget`` of the set entries of ``mask`` (the first ones)."""
    if int(mask.sum()) <= budget:
        return mask
    idx = torch.nonzero(mask)[:, 0][budget:]
    out = mask.clone()
    out[idx] = False
    return out
