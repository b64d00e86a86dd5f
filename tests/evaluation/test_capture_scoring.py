"""Scoring against the capture gauge's truth: right on known inputs, restricted by the masks,
and the novel-pose set's cameras and poses where they should be."""

from __future__ import annotations

import math

import pytest
import torch

from avatarcli.evaluation.capture_scoring import (
    VIEWS,
    ImageScores,
    grimace,
    novel_pose_set,
    over,
    replace_background,
    score_heldout,
    score_novel,
    stretch,
)
from avatarcli.evaluation.capture_video import GaugeCamera
from avatarcli.evaluation.metrics import IDENTICAL_DB
from avatarcli.model.initialize import init_avatar


def _scene(n: int = 3, size: int = 40):
    """A premultiplied foreground with a soft-edged disc of alpha, a textured background, and
    the frame they make."""
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((xs - size / 2) ** 2 + (ys - size / 2) ** 2).float().sqrt()
    alpha = (1.0 - (r - size / 4).clamp(0, 2) / 2).expand(n, size, size).clone()  # 1 inside, a 2-pixel soft edge
    colour = 0.2 + 0.6 * torch.rand(n, size, size, 3, generator=g)
    fg = colour * alpha[..., None]
    bg = torch.rand(n, size, size, 3, generator=g)
    frames = fg + (1 - alpha[..., None]) * bg
    return fg, alpha, bg, frames


def test_the_truth_scores_the_top():
    fg, alpha, bg, frames = _scene()
    s = score_heldout(fg, alpha, frames, alpha, bg)
    assert s["psnr"] > 90 and s["psnr_mask"] > 90 and s["ssim"] > 0.9999 and s["ssim_mask"] > 0.9999
    assert s["frames"] == 3 and 0.1 < s["mask_share"] < 0.3
    # without the true backgrounds a soft edge keeps a little of the room: close, not exact
    approx = score_heldout(fg, alpha, frames, alpha)
    assert 25 < approx["psnr"] < 90 and 25 < approx["psnr_mask"] < 90


def test_a_known_error_gives_its_psnr():
    fg, alpha, bg, frames = _scene()
    binary = (alpha > 0.5).float()
    fg = fg * binary[..., None] / alpha.clamp_min(1e-6)[..., None]  # a hard edge
    frames = fg + (1 - binary[..., None]) * bg
    s = score_heldout(fg + 0.1 * binary[..., None], binary, frames, binary, bg)
    share = float(binary.mean())
    assert s["psnr_mask"] == pytest.approx(20.0, abs=1e-3)
    assert s["psnr"] == pytest.approx(20.0 + 10 * math.log10(1 / share), abs=1e-3)
    assert s["frame_psnr"] == pytest.approx([s["psnr"]] * 3, abs=1e-3)


def test_errors_outside_the_mask_count_only_on_the_whole_frame():
    fg, alpha, bg, frames = _scene()
    haze = torch.zeros_like(alpha)
    haze[:, :4] = 0.5  # a capture that leaves a grey veil at the top of the frame
    pred_alpha = alpha + haze
    pred = fg + haze[..., None] * 0.5
    s = score_heldout(pred, pred_alpha, frames, alpha, bg)
    assert s["psnr_mask"] > 90 and s["ssim_mask"] > 0.9999
    assert s["psnr"] < 40 and s["ssim"] < 0.99
    # and the background of the video does not count: a render that copies it scores worse
    copied = score_heldout(frames, torch.ones_like(alpha), frames, alpha, bg)
    assert copied["psnr"] < 20 and copied["psnr_mask"] > copied["psnr"] + 10


def test_compositing_helpers():
    fg, alpha, bg, frames = _scene(1)
    white = over(fg, alpha)
    assert torch.allclose(white, fg + (1 - alpha[..., None]))
    assert torch.allclose(replace_background(frames, alpha, bg), white, atol=1e-6)
    black = replace_background(frames, alpha, bg, (0.0, 0.0, 0.0))
    assert torch.allclose(black, fg, atol=1e-6)


def test_the_encoders_noise_on_the_room_does_not_count():
    fg, alpha, bg, frames = _scene()
    noisy = frames + 0.05 * torch.randn(frames.shape, generator=torch.Generator().manual_seed(4)) * (alpha[..., None] == 0)
    s = score_heldout(fg, alpha, noisy, alpha, bg)
    assert s["psnr"] > 90 and s["psnr_mask"] > 90


def test_scores_add_up_over_chunks():
    fg, alpha, bg, frames = _scene(5)
    pred = (fg + 0.05 * torch.randn(fg.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    one = score_heldout(pred, alpha, frames, alpha, bg, chunk=16)
    many = score_heldout(pred, alpha, frames, alpha, bg, chunk=2)
    for key in ("psnr", "ssim", "psnr_mask", "ssim_mask"):
        assert one[key] == pytest.approx(many[key], rel=1e-5), key
    with pytest.raises(ValueError):
        ImageScores().result()
    with pytest.raises(ValueError):
        score_heldout(pred[:2], alpha, frames, alpha)


def _camera(size: int = 48) -> GaugeCamera:
    return GaugeCamera(size, size, 40.0, 0.55, (0.0, -0.03, -0.01))


def test_the_novel_cameras_circle_the_subject():
    cam = _camera()
    from avatarcli.evaluation.capture_scoring import view_cameras

    views = view_cameras(cam, list(VIEWS.values()))
    video = cam.cameras(1)
    assert torch.allclose(views.viewmats[0], video.viewmats[0], atol=1e-6) and torch.allclose(views.Ks[0], video.Ks[0])
    target = cam.target.expand(1, 3)
    for k in range(3):
        c = views.index([k])
        assert float((c.centers[0] - target[0]).norm()) == pytest.approx(cam.distance, abs=1e-5)
        px, depth = c.project(target[None])
        assert torch.allclose(px[0, 0], torch.tensor([24.0, 24.0]), atol=1e-4) and float(depth) > 0
    side = views.index([2]).centers[0]
    assert side[0] > 0.5 and abs(float(side[2]) + cam.distance) < 1e-5  # on the subject's left


def test_the_novel_motions_are_new_and_placed_in_front(head_template, body_template):
    from avatarcli.evaluation.capture_video import talking_head

    g, s = grimace(), stretch()
    assert g.kind == "head" and s.kind == "body" and len(g) == 91 and len(s) == 121
    talk = talking_head(3.0, 30.0)
    used = talk.expression.abs().amax(0) > 0.05
    new = (g.expression.abs().amax(0) > 0.3) & ~used
    assert int(new.sum()) >= 4  # expressions the video never shows
    cam = _camera()
    novel = novel_pose_set(head_template, cam, frames_per_motion=2)
    assert len(novel) == 3 * 2 * 3 and novel.views[:2] == ["front", "front"] and set(novel.motions) == {"nod", "turn", "grimace"}
    assert torch.allclose(novel.poses.translation[0].cpu(), cam.placement)
    body = novel_pose_set(body_template, cam, frames_per_motion=3, views={"front": 0.0})
    assert len(body) == 6 and set(body.motions) == {"dance", "stretch"}


def test_score_novel_tells_the_reference_from_a_wrong_avatar(head_template):
    ref = init_avatar(head_template, 1, 0)
    ref = ref.select(torch.arange(0, len(ref), 3))
    wrong = ref.select(torch.arange(len(ref)))
    wrong.gaussians.sh = wrong.gaussians.sh.flip(0)  # the right shape, the colours shuffled
    novel = novel_pose_set(head_template, _camera(32), frames_per_motion=1, motions=("nod",))
    same = score_novel(ref, ref, head_template, novel)
    assert set(same) == {"all", *VIEWS} and same["all"]["psnr"] == IDENTICAL_DB and same["side"]["frames"] == 1
    assert same["all"]["ssim_mask"] == pytest.approx(1.0, abs=1e-6)
    off = score_novel(wrong, ref, head_template, novel)
    assert off["all"]["psnr_mask"] < 30 and off["all"]["psnr"] < IDENTICAL_DB


def test_the_gauge_tells_the_truth_from_a_blank_avatar(head_gauge, head_template):
    """The reference at the true motion (the upper bound) against its own video, and a plain
    `avatar init` avatar at the same motion: the gauge must set them far apart. Measured
    (128 px, the last 2 of 9 frames; whole frame / inside the mask): the reference 62.7 / 58.4
    dB against the clean frames, 41.3 / 37.9 dB against the encoded video (SSIM 0.993 / 0.984);
    init 15.6 / 10.6 dB (SSIM 0.74 / 0.40)."""
    from avatarcli.evaluation.capture_video import render_layers, truth_frames
    from avatarcli.motion.video import probe_video, read_frames

    v = head_gauge
    held = [7, 8]
    poses, cams = v.poses(head_template, held), v.camera.cameras(len(held))
    clean, masks, bgs = truth_frames(v, held)
    video = torch.stack([torch.from_numpy(f.copy()) for f in read_frames(probe_video(v.video))][7:]).float() / 255
    ref = score_heldout(*render_layers(v.reference, head_template, poses, cams), clean, masks, bgs)
    ref_video = score_heldout(*render_layers(v.reference, head_template, poses, cams), video, masks, bgs)
    blank = score_heldout(*render_layers(init_avatar(head_template, 1, 0), head_template, poses, cams), clean, masks, bgs)
    assert ref["psnr"] > 50 and ref["psnr_mask"] > 45 and ref["ssim_mask"] > 0.99, ref
    assert ref_video["psnr"] > 36 and ref_video["psnr_mask"] > 34 and ref_video["ssim_mask"] > 0.97, ref_video
    assert blank["psnr"] < 20 and blank["psnr_mask"] < 14 and blank["ssim_mask"] < 0.6, blank
    assert ref_video["psnr_mask"] > blank["psnr_mask"] + 10
