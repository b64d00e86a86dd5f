"""The web player page: one file holding the player and the avatar's data, data that reproduces
avatarcli's posing, and (where Chromium is installed) the page itself against `avatar animate`."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from importlib import resources

import numpy as np
import pytest
import torch

from avatarcli import api
from avatarcli.formats.web_player import forward_kinematics, player_data, player_pose, sparse_weights
from avatarcli.model import avatar_file
from avatarcli.model.binding import ResidualWeights
from avatarcli.motion.builtin import builtin_motion
from avatarcli.render.clip import AnimateOptions, plan_frames
from avatarcli.rotations import axis_angle_to_quat

from external.chromium import check_player, find_chromium
from helpers import run_cli

BUNDLE = resources.files("avatarcli.formats").joinpath("web/player.js").read_text(encoding="utf-8")


class _Page(HTMLParser):
    """The tags of a page with their attributes, and the text of each script."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_data(self, data):
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def _read_page(path):
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return text, page


def _decode(meta, blob, name):
    a = meta["arrays"][name]
    count = int(np.prod(a["shape"]))
    return np.frombuffer(blob, dtype=np.dtype(a["dtype"]).newbyteorder("<"), count=count, offset=a["offset"]).reshape(a["shape"])


def test_page_is_one_file_with_the_player_and_the_data(head_avatar, head_template, tmp_path):
    out = tmp_path / "h.html"
    motion = builtin_motion("talk", "head", fps=10)
    assert api.export(head_avatar, out, motion=motion) == [out]
    text, page = _read_page(out)
    # nothing outside the file: no script, style, image or link by address, no URL but a namespace
    assert not [(t, a) for t, a in page.tags if {"src", "href"} & set(a)]
    assert "<link" not in text and "@import" not in text
    assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) <= {"http://www.w3.org/1999/xhtml"}
    (meta_attrs, meta_text), (data_attrs, data_text), (_, js) = page.scripts
    assert meta_attrs["id"] == "avatar-meta" and data_attrs["id"] == "avatar-data"
    assert js.strip() == BUNDLE.strip()  # the bundled player, as shipped
    meta = json.loads(meta_text)
    blob = base64.b64decode(data_text)
    assert meta["numSplats"] == len(head_avatar) and meta["numFrames"] == len(motion) and meta["fps"] == 10
    assert meta["numJoints"] == 5 and meta["kind"] == "head"
    for name, a in meta["arrays"].items():  # every array inside the blob, aligned for typed arrays
        assert a["offset"] % 4 == 0 and a["offset"] + np.dtype(a["dtype"]).itemsize * int(np.prod(a["shape"])) <= len(blob), name
    centers = _decode(meta, blob, "centers")
    rest = head_avatar.posed(head_template).means[0].numpy()
    assert np.allclose(np.sort(centers, axis=0), np.sort(rest, axis=0))  # the same Gaussians, reordered
    # the expression coefficients the motion uses, per frame
    used = torch.nonzero(motion.expression.abs().amax(0) > 0).flatten()
    assert meta["numExpr"] == len(used) and np.allclose(_decode(meta, blob, "expression"), motion.expression[:, used].numpy())
    assert _decode(meta, blob, "expr").shape == (meta["numExprSplats"], len(used), 3)
    assert 0 < meta["numExprSplats"] < meta["numSplats"]  # the face moves, the back of the head does not


def test_bundle_carries_the_licence_notices():
    head = BUNDLE[:4000]
    assert head.startswith("/*!") and "MIT" in head
    for name in ("three", "@sparkjsdev/spark"):
        assert re.search(rf"\* {re.escape(name)} \d+\.\d+\.\d+ \(MIT\)", head), name
    assert "</script" not in BUNDLE.lower()


def _errors(avatar, template, motion_name, step=5):
    motion = builtin_motion(motion_name, avatar.kind)
    data = player_data(avatar, template, motion)
    frames = list(range(0, data.meta["numFrames"], step))
    centres, quats = player_pose(data, frames)
    plan = plan_frames(avatar, template, motion, AnimateOptions())
    with torch.no_grad():
        want = avatar.posed(template, plan.poses.index(frames))
    dist = (centres - want.means.double()[:, data.order]).norm(dim=-1)
    angle = torch.rad2deg(2 * torch.arccos((quats * want.quats.double()[:, data.order]).sum(-1).abs().clamp(max=1)))
    moved = (want.means.double() - want.means.double()[:1]).norm(dim=-1).max()
    return data, dist, angle, moved


def test_player_formula_reproduces_body_posing(body_avatar, body_template):
    _, dist, angle, moved = _errors(body_avatar, body_template, "walk")
    assert moved > 1.0  # metres walked within the frames compared
    # exact but for pose correctives and the smallest weights
    assert dist.quantile(0.99) < 1e-4 and dist.max() < 2e-3
    assert angle.quantile(0.99) < 0.5 and angle.max() < 3.0


def test_player_follows_weights_spread_over_many_joints(body_avatar, body_template):
    # a learnt weight correction can give a Gaussian a little of every joint: four (or eight)
    # joints a Gaussian would leave centimetres out
    spread = body_avatar.to("cpu")
    residual = ResidualWeights(body_template.num_joints, 1.0)
    torch.nn.init.constant_(residual.net[-1].bias, 0.01)
    torch.nn.init.normal_(residual.net[-1].weight, std=0.005, generator=torch.Generator().manual_seed(0))
    spread.binding.residual = residual
    w = spread.binding.effective_weights(spread.gaussians.means).detach()
    assert (1 - w.topk(8, dim=1).values.sum(1)).mean() > 0.2
    data, dist, angle, _ = _errors(spread, body_template, "dance", step=20)
    assert data.arrays["influences"].mean() > 20
    assert dist.quantile(0.99) < 2e-3 and dist.max() < 5e-3  # the 0.1 % of weight left out, over a metre or two
    assert angle.quantile(0.99) < 0.5


def test_sparse_weights_keep_the_mass():
    w = np.array([[0.0, 0.6, 0.0, 0.4], [0.25, 0.25, 0.25, 0.25], [0.9995, 0.0005, 0.0, 0.0]])
    counts, joints, weights = sparse_weights(w)
    assert counts.tolist() == [2, 4, 1]
    assert joints.tolist() == [1, 3, 0, 1, 2, 3, 0]
    assert np.allclose(weights, [0.6, 0.4, 0.25, 0.25, 0.25, 0.25, 1.0])


def test_player_formula_approximates_head_posing(head_avatar, head_template):
    data, dist, _, _ = _errors(head_avatar, head_template, "talk")
    assert data.meta["numExpr"] > 0
    assert dist.quantile(0.99) < 2e-4 and dist.max() < 1e-3  # triangles followed by skinning: a fraction of a millimetre
    # and the expression offsets matter: without them the lips and lids would be millimetres off
    data.arrays["expression"] = np.zeros_like(data.arrays["expression"])
    frames = list(range(0, data.meta["numFrames"], 5))
    without, _ = player_pose(data, frames)
    with_expr, _ = player_pose(player_data(head_avatar, head_template, builtin_motion("talk", "head")), frames)
    assert (without - with_expr).norm(dim=-1).max() > 2e-3


def test_forward_kinematics_matches_the_template(body_template, body_avatar):
    poses = plan_frames(body_avatar, body_template, builtin_motion("dance", "body", fps=5), AnimateOptions()).poses
    want = body_template.pose(poses).transforms.double()
    local = axis_angle_to_quat(poses.rotations.double())
    rest = body_template.pose(body_template.zero_pose(1)).joints[0].double()
    got, quats = forward_kinematics(local, rest, [int(p) for p in body_template.parents], poses.translation.double())
    assert torch.allclose(got, want, atol=1e-5)
    # each joint's rotation on its parent's side, as the blend of rotations needs
    parents = body_template.parents[1:]
    assert ((quats[:, 1:] * quats[:, parents]).sum(-1) >= 0).all()


def test_rest_page_without_a_motion(head_avatar, head_template):
    data = player_data(head_avatar, head_template, None)
    assert data.meta["numExpr"] == 0 and data.meta["numExprSplats"] == 0
    rot = data.arrays["rotations"]
    assert not rot[..., :3].any() and (rot[..., 3] == 1).all() and not data.arrays["translation"].any()


def test_html_refusals(head_avatar, tmp_path):
    path = tmp_path / "h.avatar"
    avatar_file.save(head_avatar, path)
    r = run_cli("export", str(path), "--motion", "talk", "--frame", "3", "-o", str(tmp_path / "h.html"))
    assert r.code == 2 and "frame does not apply" in r.stderr
    assert not (tmp_path / "h.html").exists()


@pytest.mark.skipif(find_chromium() is None, reason="needs Chromium (set $CHROMIUM): tests/external/check_exports.sh runs it too")
def test_page_in_chromium_moves_like_animate(body_avatar, tmp_path):
    path = tmp_path / "b.avatar"
    avatar_file.save(body_avatar, path)
    # the right hand waves at 1.8 Hz: half a wave apart
    report = check_player(str(path), "wave", [1.0, 1.28], 160, tmp_path / "shots")
    assert not report["requests"] and not report["errors"]  # offline, no script errors
    assert report["moved_pixels_page"] > 0.002 * 160 * 160  # the two times differ
    assert report["motion_agreement"] >= 0.8  # where the body moves, in the page and in animate's frames
    assert max(report["mean_abs_diff"]) <= 3.0 and min(report["silhouette_iou"]) >= 0.93  # the tolerances of check_player
    assert report["ok"], report
