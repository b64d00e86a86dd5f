"""Which pixels a captured head answers for: the head, its hair and the background near it, not the body under it."""

from __future__ import annotations

import torch

from avatarcli.capture.frames import video_cameras
from avatarcli.capture.regions import CLEAR, COUNT, IGNORE, dilate, head_weights, template_silhouettes
from avatarcli.motion.fitting import Camera


def test_the_body_under_a_head_and_a_raised_hand_do_not_count(head_template):
    tpl = head_template
    cams = video_cameras(Camera(96, 96, fov=30.0), 96, 96)
    pose = tpl.zero_pose(2)
    pose.translation[:] = torch.tensor([0.0, 0.0, -0.75])
    pose.rotations[1, 1, 1] = 0.4  # the second frame's head turned
    head = template_silhouettes(tpl, pose, None, cams) > 0.5
    assert head.shape == (2, 96, 96) and 0.05 < float(head.float().mean()) < 0.6
    rows = head.any(dim=2)[0].nonzero()[:, 0]
    bottom = int(rows.max())
    person = head.clone()
    person[:, bottom - 2 :, 20:76] = True  # shoulders and chest below the neck
    person[:, 2:12, 2:10] = True  # a hand raised beside the head, far from it
    weights = head_weights(tpl, pose, None, cams, (person.to(torch.uint8) * 255))
    counts = weights == COUNT
    assert bool(counts[head & (torch.arange(96)[None, :, None] < bottom - 12)].all())  # the head counts, down to the neck
    body = torch.zeros_like(person)
    body[:, bottom - 2 :, 20:76] = True
    chest = weights[body & ~dilate(head, 1)]
    assert chest.numel() > 0 and not bool((chest == COUNT).any())  # the chest does not count as it is:
    assert bool((chest == IGNORE).any()) and bool((chest == CLEAR).any())  # ignored under the neck, clear away from it
    assert bool((weights[:, 2:12, 2:10] == CLEAR).all())  # the hand far from the head must stay clear of Gaussians
    assert bool(counts[~person].all())  # the background counts everywhere
    assert bool(dilate(head, 2).sum() > head.sum())
