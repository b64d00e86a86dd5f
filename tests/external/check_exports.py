"""Open every kind of export with the tools users have and print a table; run by
check_exports.sh, which installs the tools (package.json here) into a cache folder.

    python tests/external/check_exports.py --tools CACHE_DIR [--work DIR]

* the Khronos glTF validator on every .glb (the skinned mesh and the KHR_gaussian_splatting
  splats; for those, also a renamed copy and the specification's own rules: validate_gltf.mjs);
* splat-transform (PlayCanvas) reads the .ply, .compressed.ply and .splat, writes them as
  INRIA .ply, and the Gaussians are compared with the project's .ply as sets (exporters
  reorder them). splat-transform has no glTF reader, so for .splat.glb it is tried and its
  refusal noted; the PlayCanvas engine's glTF loader reads those in Chromium instead, and its
  splat loader the .compressed.ply (on which it used to hang);
* the .html player in headless Chromium against `avatar animate` (chromium.py);
* Blender's glTF importer on the skinned .glb (blender_glb.py), where $BLENDER or
  ``blender`` is installed: the expression shape keys and the blink's animation.

splat-transform and PlayCanvas take a .ply to be y-down (the INRIA / COLMAP convention) and
show the project's y-up files upside down; the values are the same, and the .glb files are
y-up as glTF says.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from plyfile import PlyData
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chromium import Chromium, check_player

HERE = Path(__file__).resolve().parent
C0 = 0.28209479177387814
# how far a file read back may be from the project's .ply (per Gaussian, worst case)
TOLERANCES = {
    ".ply": {"centre": 1e-6, "log_scale": 1e-6, "opacity": 1e-6, "colour": 1e-6, "rotation_dot": 1 - 1e-6},
    ".compressed.ply": {"centre": 2e-3, "log_scale": 0.02, "opacity": 1 / 255 + 1e-6, "colour": 1 / 255 + 1e-6, "rotation_dot": 0.999},
    ".splat": {"centre": 1e-6, "log_scale": 1e-5, "opacity": 1 / 255 + 1e-6, "colour": 1 / 255 + 1e-6, "rotation_dot": 0.99},
}

# the same for the PlayCanvas engine's column sums: the largest mean difference per Gaussian
PLAYCANVAS_TOLERANCES = {
    "float": {"x": 1e-6, "y": 1e-6, "z": 1e-6, "scale": 1e-6, "opacity": 1e-6, "rot": 1e-6, "f_dc": 1e-6},
    ".compressed.ply": {"x": 1e-3, "y": 1e-3, "z": 1e-3, "scale": 0.02, "opacity": 0.05, "rot": 2e-3, "f_dc": 0.02},
}


def run(cmd: list[str], cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def avatar_cli(*args: str) -> None:
    run([sys.executable, "-m", "avatarcli", *args])


def read_inria(path: Path) -> dict[str, np.ndarray]:
    """Activated values of an INRIA-layout .ply: centres, log-scales, unit w-x-y-z rotations
    (w >= 0), opacities and diffuse colours."""
    v = PlyData.read(str(path))["vertex"].data

    def col(*names: str) -> np.ndarray:
        return np.stack([np.asarray(v[n], np.float64) for n in names], 1)

    q = col("rot_0", "rot_1", "rot_2", "rot_3")
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1, 1)
    return {
        "centre": col("x", "y", "z"),
        "log_scale": col("scale_0", "scale_1", "scale_2"),
        "rotation": q,
        "opacity": 1 / (1 + np.exp(-col("opacity"))),
        "colour": 0.5 + C0 * col("f_dc_0", "f_dc_1", "f_dc_2"),
    }


def _features(g: dict[str, np.ndarray]) -> np.ndarray:
    # centres in metres, colours and log-scales weighted so that a neighbour 0.2 mm away but of
    # another colour or size is farther than the same Gaussian moved by quantisation
    return np.concatenate([g["centre"], 0.05 * g["colour"], 0.02 * g["log_scale"]], 1)


def compare_sets(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, Any]:
    """Worst differences after matching each Gaussian of ``other`` to the nearest of ``reference``
    (exporters reorder them)."""
    _, idx = cKDTree(_features(reference)).query(_features(other))
    out: dict[str, Any] = {"count": len(other["centre"]), "reference_count": len(reference["centre"]), "unique": len(np.unique(idx))}
    for key in ("centre", "log_scale", "opacity", "colour"):
        out[key] = float(np.abs(other[key] - reference[key][idx]).max())
    out["rotation_dot"] = float(np.abs((other["rotation"] * reference["rotation"][idx]).sum(1)).min())
    return out


def within(diff: dict[str, Any], tol: dict[str, float]) -> bool:
    same_count = diff["count"] == diff["reference_count"] == diff["unique"]
    return same_count and diff["rotation_dot"] >= tol["rotation_dot"] and all(diff[k] <= tol[k] for k in tol if k != "rotation_dot")


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.failed = 0

    def add(self, export: str, tool: str, ok: bool | None, details: str) -> None:
        """``ok`` None: the tool does not apply (noted, not a failure)."""
        self.rows.append((export, tool, "ok" if ok else ("n/a" if ok is None else "FAIL"), details))
        self.failed += ok is False

    def print(self) -> None:
        head = ("export", "tool", "result", "details")
        widths = [max(len(r[i]) for r in [*self.rows, head]) for i in range(3)]
        line = "| " + " | ".join(h.ljust(w) for h, w in zip(head[:3], widths, strict=True)) + " | details |"
        print(line)
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|---------|")
        for r in self.rows:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + f" | {r[3]} |")


def make_exports(work: Path, points_per_triangle: int) -> dict[str, list[Path]]:
    """A head and a body, and every export kind of each, through the command line."""
    files: dict[str, list[Path]] = {}
    for kind, motion in (("head", "talk"), ("body", "walk")):
        av = work / f"{kind}.avatar"
        avatar_cli("init", "-m", kind, "-k", str(points_per_triangle), "-o", str(av))
        out = [work / f"{kind}{s}" for s in (".ply", ".compressed.ply", ".splat", ".splat.glb")]
        for path in out:
            avatar_cli("export", str(av), "-o", str(path))
        frame = [work / f"{kind}-{motion}-f60.ply", work / f"{kind}-{motion}-f60.splat.glb"]
        for path in frame:
            avatar_cli("export", str(av), "--motion", motion, "--frame", "60", "-o", str(path))
        glb = work / f"{kind}-{motion}.glb"
        avatar_cli("export", str(av), "--motion", motion, "-o", str(glb))
        files[kind] = [*out, *frame, glb]
    return files


def check_validator(table: Table, tools: Path, glbs: list[Path]) -> None:
    out = run(["node", str(HERE / "validate_gltf.mjs"), *map(str, glbs)], cwd=tools).stdout
    for line in out.splitlines():
        r = json.loads(line)
        name, tool = Path(r["file"]).name, f"glTF validator {r['validator']}"
        if "khr" not in r:
            extra = ""
            js = json.loads(_glb_json(Path(r["file"])))
            mesh = js["meshes"][0]
            targets = len(mesh["primitives"][0].get("targets", []))
            extra = f"; {targets} morph targets ({', '.join(mesh.get('extras', {}).get('targetNames', [])[:3])}, ...)"
            paths = sorted({c["target"]["path"] for a in js.get("animations", []) for c in a["channels"]})
            extra += f"; animated: {', '.join(paths)}" if paths else ""
            table.add(name, tool, r["errors"] == 0 and r["warnings"] == 0, f"{r['errors']} errors, {r['warnings']} warnings, "
                      f"{r['infos']} infos{extra}")  # fmt: skip
        else:
            k = r["khr"]
            c = k["renamedCopy"]
            table.add(name, tool, k["ok"], f"stock: {r['errors']} errors, {r['warnings']} warnings, all {k['expectedIssues']} the unknown "
                      f"extension's (attribute names, UNSUPPORTED_EXTENSION), {k['unexpectedIssues']} other; renamed copy: {c['errors']} "
                      f"errors, {c['warnings']} warnings; spec rules: {'; '.join(k['specProblems']) or 'all met'}")  # fmt: skip


def _glb_json(path: Path) -> bytes:
    data = path.read_bytes()
    n = int.from_bytes(data[12:16], "little")
    return data[20 : 20 + n]


def check_splat_transform(table: Table, tools: Path, work: Path, files: list[Path]) -> None:
    exe = tools / "node_modules" / ".bin" / "splat-transform"
    r = run([str(exe), "--version"])
    version = (r.stdout + r.stderr).split()[1].lstrip("v")
    tool = f"splat-transform {version}"
    for path in files:
        name = path.name
        if name.endswith(".splat.glb"):
            r = run([str(exe), "--no-tty", "-w", str(path), str(work / "st-from-glb.ply")], check=False)
            reason = next((ln.strip() for ln in (r.stdout + r.stderr).splitlines() if "rror" in ln), "no error given")
            table.add(name, tool, None if r.returncode else True, f"cannot read glTF (no .glb reader): {reason[:90]}")
            continue
        suffix = next(s for s in (".compressed.ply", ".ply", ".splat") if name.endswith(s))
        reference = path if suffix == ".ply" else path.with_name(name.removesuffix(suffix) + ".ply")
        back = work / f"st-{name}.ply"
        r = run([str(exe), "--no-tty", "-w", str(path), str(back)], check=False)
        if r.returncode:
            table.add(name, tool, False, (r.stdout + r.stderr).strip().splitlines()[-1][:120])
            continue
        diff = compare_sets(read_inria(reference), read_inria(back))
        table.add(name, tool, within(diff, TOLERANCES[suffix]), f"{diff['count']} Gaussians (.ply: {diff['reference_count']}); worst: "
                  f"centre {diff['centre']:.2g} m, log-scale {diff['log_scale']:.2g}, opacity {diff['opacity']:.2g}, colour "
                  f"{diff['colour']:.2g}, rotation |dot| {diff['rotation_dot']:.6f}")  # fmt: skip


def check_playcanvas(table: Table, tools: Path, work: Path, files: list[Path]) -> None:
    """The PlayCanvas engine reads each file in Chromium; its count and column sums are held
    to the project's .ply (linear scales and sigmoid opacities for glTF, as the extension stores
    them; the .ply's own values for .ply files)."""
    reader = tools / "playcanvas_reader.js"
    reader.write_text((HERE / "playcanvas_reader.js").read_text())
    bundle = tools / "playcanvas_reader.bundle.js"
    run([str(tools / "node_modules" / ".bin" / "esbuild"), str(reader), "--bundle", "--format=esm", "--minify", f"--outfile={bundle}",
         "--log-level=warning"], cwd=tools)  # fmt: skip
    js = bundle.read_text().replace("</script", "<\\/script")
    version = json.loads((tools / "node_modules" / "playcanvas" / "package.json").read_text())["version"]
    tool = f"PlayCanvas engine {version} (Chromium)"
    for path in files:
        page = work / f"pc-{path.name}.html"
        data = base64.b64encode(path.read_bytes()).decode()
        page.write_text(f'<!doctype html><html><body><script type="application/octet-stream" id="file" data-name="{path.name}">{data}'
                        f'</script><script type="module">{js}</script></body></html>')  # fmt: skip
        try:
            with Chromium() as browser:
                browser.open(page)
                got = browser.evaluate("window.readResult", timeout=120)
        except TimeoutError:
            table.add(path.name, tool, False, "the page hung (no result in 120 s)")
            continue
        if not got.get("ok"):
            table.add(path.name, tool, False, got.get("error", "?"))
            continue
        stem = next(path.name.removesuffix(s) for s in (".splat.glb", ".compressed.ply", ".ply") if path.name.endswith(s))
        ref = read_inria(path.with_name(stem + ".ply"))
        glb = path.name.endswith(".glb")
        want = {"x": ref["centre"][:, 0], "y": ref["centre"][:, 1], "z": ref["centre"][:, 2]}
        opacity = ref["opacity"][:, 0]
        want["opacity"] = opacity if glb else np.log(opacity / (1 - opacity))
        for i in range(3):
            want[f"scale_{i}"] = np.exp(ref["log_scale"][:, i]) if glb else ref["log_scale"][:, i]
            want[f"f_dc_{i}"] = (ref["colour"][:, i] - 0.5) / C0
        for i in range(4):
            want[f"rot_{i}"] = ref["rotation"][:, i]
        compared = [k for k in want if k in got["sums"]]
        # mean difference per Gaussian of each column, against what the format keeps of it
        tol = PLAYCANVAS_TOLERANCES[".compressed.ply" if path.name.endswith(".compressed.ply") else "float"]
        ratio = {k: abs(got["sums"][k] - want[k].sum()) / len(want[k]) / tol[k.rstrip("_0123")] for k in compared}
        worst = max(ratio, key=lambda k: ratio[k])
        ok = got["count"] == len(ref["centre"]) and len(compared) == len(want) and ratio[worst] <= 1
        what = "linear scales, opacities" if glb else "log-scales, opacity logits"
        table.add(path.name, tool, ok, f"read {got['count']} Gaussians (.ply: {len(ref['centre'])}); sums of {len(compared)} columns "
                  f"(centres, {what}, rotations, SH0) agree with the .ply: worst mean difference per Gaussian "
                  f"{ratio[worst] * tol[worst.rstrip('_0123')]:.1e} ({worst})")  # fmt: skip


def check_blender(table: Table, files: list[Path]) -> None:
    exe = shutil.which(os.environ.get("BLENDER", "blender"))
    for path in files:
        if exe is None:
            table.add(path.name, "Blender", None, "not installed (set $BLENDER)")
            continue
        r = run([exe, "-b", "--factory-startup", "--python", str(HERE / "blender_glb.py"), "--", str(path), "blink"], check=False)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BLENDER_GLB ")), None)
        if line is None:
            table.add(path.name, "Blender", False, (r.stdout + r.stderr).strip().splitlines()[-1][:120])
            continue
        b = json.loads(line.split(" ", 1)[1])
        keys = [k for k in b["shape_keys"] if k != "Basis"]
        ok = bool(keys) and b.get("key_max", 0) > 0.5 and b.get("key_min", 1) < 0.05
        table.add(path.name, f"Blender {b['blender']}", ok, f"{b['bones']} bones, {len(keys)} shape keys ({', '.join(keys[:4])}, ...); "
                  f"blink animated from {b.get('key_min', 0):.2f} to {b.get('key_max', 0):.2f} over frames "
                  f"{b.get('frames', ['-', '-'])[0]}-{b.get('frames', ['-', '-'])[1]}")  # fmt: skip


def check_html(table: Table, work: Path) -> None:
    for kind, motion, times in (("head", "talk", [1.0, 1.55]), ("body", "walk", [1.0, 1.55])):
        r = check_player(str(work / f"{kind}.avatar"), motion, times, 192, work / "player")
        d, iou = r["mean_abs_diff"], r["silhouette_iou"]
        table.add(Path(r["page"]).name, "Chromium (Spark player, SwiftShader)", r["ok"],
                  f"{r['page_bytes'] / 1e6:.1f} MB, requests outside the file: {len(r['requests'])}, errors: {len(r['errors'])}; "
                  f"vs animate at t={times[0]:g}/{times[1]:g} s, {r['size']} px: mean |diff| {d[0]:.2f}/{d[1]:.2f} (of 255), "
                  f"silhouette IoU {iou[0]:.3f}/{iou[1]:.3f}, moved pixels page {r['moved_pixels_page']} animate "
                  f"{r['moved_pixels_animate']}, agreement {r['motion_agreement']:.2f}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", type=Path, required=True, help="folder with node_modules (package.json here, installed)")
    ap.add_argument("--work", type=Path, default=None, help="where the exports go (default: a temporary folder)")
    ap.add_argument("--points-per-triangle", type=int, default=1)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="avatarcli-checks-"))
    work.mkdir(parents=True, exist_ok=True)
    files = make_exports(work, a.points_per_triangle)
    every = [p for group in files.values() for p in group]
    table = Table()
    check_validator(table, a.tools, [p for p in every if p.suffix == ".glb"])
    check_splat_transform(table, a.tools, work, [p for p in every if p.suffix != ".glb" or p.name.endswith(".splat.glb")])
    check_playcanvas(table, a.tools, work, [p for p in every if p.name.endswith((".splat.glb", ".compressed.ply"))])
    check_blender(table, [p for p in every if p.suffix == ".glb" and not p.name.endswith(".splat.glb")])
    check_html(table, work)
    table.rows.sort(key=lambda r: r[0])
    table.print()
    print(f"\nexports in {work}; {table.failed} failed")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
