"""A small capture-gauge video the evaluation tests share: the head reference (one Gaussian per
triangle) talking and looking round for 8 s, filmed at 1 fps and 128x128 (9 frames: the CPU
renderer makes it in about a minute; MediaPipe finds faces at this size)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def head_gauge(tmp_path_factory, head_template):
    from avatarcli.evaluation.capture_video import make_capture_video

    folder = tmp_path_factory.mktemp("gauge") / "head"
    return make_capture_video("head", folder, size=128, fps=1.0, seconds=8.0, template=head_template, points_per_triangle=1)
