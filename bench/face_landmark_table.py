"""Where MediaPipe's face-mesh landmarks lie on the built-in head: the table in
``avatarcli/templates/mannequin/head_shape.py`` (MEDIAPIPE_TARGETS) comes from this script.

The mannequin (``avatar init`` colours, K = 4) is rendered from 9 views around the front (yaw
-25..25, pitch -10..10 degrees, 384 px), once with the mouth closed and once open (jaw 0.2
rad); MediaPipe's face mesh runs on each; every landmark's pixel is cast back as a ray onto
the posed mesh, the hit carried to the rest pose by its triangle and barycentric coordinates,
and the median of the hits over the views is its place on the head, in head-local
millimetres. The inner lips count only where the mouth is open (closed, their rays fall into
the line between the lips). Points whose hits scatter more than ``--spread`` mm are left out
(silhouette points slide with the view).

    python bench/face_landmark_table.py            # prints the table, and the spread per point

Rendering the views is slow on a CPU: ``--save-views views.npz`` renders
them (on a GPU machine, say) and stops; ``--views views.npz`` starts from such a file.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import trimesh

from avatarcli.geometry import ray_first_hit
from avatarcli.model.binding import rest_posed
from avatarcli.model.initialize import init_avatar
from avatarcli.motion.landmarks import FACE_CONTOURS, IBUG68, detect_faces
from avatarcli.render.cameras import orbit
from avatarcli.render.rasterize import render_gaussians, to_uint8
from avatarcli.templates.loading import load_template

EXTRA = (78, 308, 1, 6, 19, 94, 195, 129, 358, 64, 294, 48, 278, 50, 280, 205, 425, 117, 346, 187, 411, 199, 175)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--spread", type=float, default=5.0, help="largest median distance of a point's hits from their median, mm")
    ap.add_argument("--save-views", help="render the views into this .npz and stop")
    ap.add_argument("--views", help="the views from a --save-views run")
    a = ap.parse_args()
    indices = sorted({*[i for g in FACE_CONTOURS.values() for i in g], *IBUG68, *EXTRA})
    tpl = load_template("head")
    if a.views:
        saved = np.load(a.views)
        images, viewmats, ks, jaws = saved["images"], saved["viewmats"], saved["Ks"], saved["jaws"]
    else:
        av = init_avatar(tpl, 4, seed=0)
        target = torch.tensor([0.0, -0.02, 0.05])
        yaw, pitch, jaw = (g.flatten() for g in torch.meshgrid(torch.tensor([-25.0, 0.0, 25.0]), torch.tensor([-10.0, 0.0, 10.0]),
                                                               torch.tensor([0.0, 0.2]), indexing="ij"))  # fmt: skip
        cams = orbit(target, 0.55, yaw, pitch, 30.0, a.size, a.size)
        poses = tpl.zero_pose(len(jaw))
        poses.rotations[:, 2, 0] = jaw
        out = []
        for v in range(len(cams)):
            with torch.no_grad():
                out.append(to_uint8(render_gaussians(av.posed(tpl, poses.index([v])), cams.index([v]), torch.ones(3))[0]))
        images, viewmats, ks, jaws = np.concatenate(out), cams.viewmats.numpy(), cams.Ks.numpy(), jaw.numpy()
        if a.save_views:
            np.savez_compressed(a.save_views, images=images, viewmats=viewmats, Ks=ks, jaws=jaws)
            return
    rest = rest_posed(tpl).vertices[0].double().numpy()
    faces = tpl.faces.numpy()
    skin = np.flatnonzero((tpl.weights[tpl.faces].sum(1)[:, 3:] < 0.5).all(1).numpy())  # not the eyeballs
    inner = {*FACE_CONTOURS["lips_inner"], *IBUG68[60:], 78, 308}
    closed_mouth_ok = np.array([i not in inner for i in indices])
    hits = np.full((len(images), len(indices), 3), np.nan)
    for v, image in enumerate(images):
        face = detect_faces([image], image.shape[1], image.shape[0])
        if not face.found[0]:
            print(f"# view {v}: no face")
            continue
        pose = tpl.zero_pose(1)
        pose.rotations[0, 2, 0] = float(jaws[v])
        verts = tpl.pose(pose).vertices[0].double().numpy()
        px = face.points[0, indices, :2].astype(np.float64)
        k = ks[v].astype(np.float64)
        view = viewmats[v].astype(np.float64)
        rays_cam = np.c_[(px[:, 0] - k[0, 2]) / k[0, 0], (px[:, 1] - k[1, 2]) / k[1, 1], np.ones(len(px))]
        dirs = rays_cam @ view[:3, :3]  # camera to world
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        origin = -view[:3, :3].T @ view[:3, 3]
        t, f = ray_first_hit(np.tile(origin, (len(px), 1)), dirs, verts, faces[skin])
        ok = (f >= 0) & (closed_mouth_ok | (jaws[v] > 0))
        tri = verts[faces[skin[f[ok]]]]
        bary = trimesh.triangles.points_to_barycentric(tri, origin + t[ok, None] * dirs[ok])
        hits[v, ok] = (rest[faces[skin[f[ok]]]] * bary[..., None]).sum(1)
    median = np.nanmedian(hits, axis=0)
    spread = np.nanmedian(np.linalg.norm(hits - median[None], axis=-1), axis=0) * 1000
    keep = spread <= a.spread
    print("# MediaPipe landmark: head-local position, millimetres (bench/face_landmark_table.py)")
    print("MEDIAPIPE_TARGETS: tuple[tuple[int, float, float, float], ...] = (")
    rows = [f"({i}, {x * 1000:.1f}, {y * 1000:.1f}, {z * 1000:.1f})" for i, (x, y, z), k in zip(indices, median, keep, strict=True) if k]
    for s in range(0, len(rows), 4):
        print("    " + ", ".join(rows[s : s + 4]) + ",")
    print(")  # fmt: skip")
    left = [f"{i} ({s:.1f} mm)" for i, s, k in zip(indices, spread, keep, strict=True) if not k]
    print(f"# {int(keep.sum())} of {len(indices)} kept; left out: {', '.join(left) if left else 'none'}")
    print(f"# median spread {np.nanmedian(spread):.2f} mm, {math.fsum(keep)} points")


if __name__ == "__main__":
    main()
