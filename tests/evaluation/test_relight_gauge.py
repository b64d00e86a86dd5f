"""The relighting gauge: its reference and video, and the whole gauge run tiny on the CPU (the
512 px numbers come from bench/relight.py on a GPU)."""

from __future__ import annotations

import pytest
import torch

from avatarcli.evaluation.relight_gauge import GaugeSettings, front_camera, head_motion, reference_head, render_lit, run_gauge
from avatarcli.model.binding import rest_posed, triangle_frames
from avatarcli.model.normals import gaussian_normals
from avatarcli.render.lights import preset_light
from avatarcli.render.shading import normal_signs


def test_the_reference_has_surface_normals_varied_materials_and_looks_different_under_other_lights(head_template):
    ref = reference_head(head_template, 1)
    pg = ref.posed(head_template)
    normals = gaussian_normals(pg.quats, pg.scales, normal_signs(ref.gaussians, ref.binding, head_template))[0]
    _, frames, _ = triangle_frames(rest_posed(head_template).vertices, head_template.faces)
    assert float((normals * frames[0, ref.binding.face_idx, :, 1]).sum(-1).min()) > 0.999
    m = ref.material
    assert float(m.albedo.std(0).min()) > 0.05 and float(m.roughness.std()) > 0.05
    poses = head_motion(head_template, 6, 10.0)
    assert poses.rotations[:, 1, 1].abs().max() > 0.3  # the head turns in the light
    cams = front_camera(head_template, ref, 24, 6)
    a, alpha = render_lit(ref, head_template, poses, cams, preset_light("studio"))
    b, _ = render_lit(ref, head_template, poses, cams, preset_light("sunset"))
    inside = alpha > 0.5
    assert bool(inside.any()) and float((a - b).abs()[inside].mean()) > 0.05


@pytest.mark.slow
def test_a_relightable_capture_relights_and_one_of_colours_does_not(head_template):
    result = run_gauge(head_template, GaugeSettings(size=32, frames=16, steps=40, batch=2, reference_points=1, capture_points=1))
    s = result.summary()
    print("relighting gauge, 32 px, 40 steps:", {k: round(v, 2) for k, v in s.items()}, "light error", round(result.light_error, 3))
    # measured at these sizes: relit 18.4 dB, 5.7 dB above the capture of colours (12.7) and 1.5 dB above
    # the same light (16.9: a fit this young is far from converged, and the darker relights hide more of it)
    assert s["relit_above_colours"] > 2.0, s
    assert s["relit_below_same"] < 2.5, s
    assert result.avatars["relightable"].material.light is not None and result.avatars["colours"].material is None
    assert torch.isfinite(torch.tensor(list(s.values()))).all()
