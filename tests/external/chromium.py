"""Headless Chromium for the checks of exported web pages, and the check of the player page.

The DevTools protocol is spoken over a pipe (``--remote-debugging-pipe``: JSON messages ended
by a NUL byte, commands on the browser's fd 3, replies on its fd 4), so Python needs neither
node, a websocket library nor a free port; this small client is written here for that
reason. WebGL runs on SwiftShader (no GPU needed).

    python tests/external/chromium.py shot PAGE.html OUT.png [--hash t=1&ui=0] [--size 512]
    python tests/external/chromium.py eval PAGE.html EXPRESSION     (awaited, printed as JSON)
    python tests/external/chromium.py player AVATAR MOTION [--times 1 2] [--size 192] [--out DIR]

``player`` exports AVATAR driven by MOTION as a page, screenshots it paused at two times,
renders ``avatar animate``'s frames at the same times and prints how they compare; it exits
with 1 when the comparison is outside the tolerances below.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import binary_dilation

# how closely the page must match `avatar animate` (8-bit RGB, white background)
MAX_MEAN_DIFF = 3.0  # mean absolute difference over the image, 0-255
MIN_SILHOUETTE_IOU = 0.93  # pixels that are not background (any channel below 225), page vs animate
MIN_MOTION_AGREEMENT = 0.8  # share of the pixels changing between the two times in one that change in the other
MOTION_SLACK = 2  # pixels: a change counts as matched within this distance
MIN_MOVED_SHARE = 0.002  # the two screenshots differ in at least this share of the image
BACKGROUND_LEVEL = 225
CHANGE_LEVEL = 40


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable: $CHROMIUM, or the usual names on the PATH."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if name and (path := shutil.which(name)):
            return path
    return None


@dataclass
class Chromium:
    """A headless Chromium; use as a context manager. ``requests`` collects every URL pages
    asked for that is not on disk or inline (file:, data:, blob:)."""

    size: tuple[int, int] = (512, 512)
    executable: str | None = None
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def __enter__(self) -> Chromium:
        exe = self.executable or find_chromium()
        if exe is None:
            raise RuntimeError("no Chromium found (set $CHROMIUM)")
        self._profile = tempfile.mkdtemp(prefix="avatarcli-chromium-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # above 9, so that placing them at 3 and 4 in the child cannot overwrite each other
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)

        def child_fds() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [
            exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", f"--user-data-dir={self._profile}",
            f"--window-size={self.size[0]},{self.size[1]}", "about:blank",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, preexec_fn=child_fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(high_r)
        os.close(high_w)
        self._out = os.fdopen(to_browser_w, "wb", buffering=0)
        self._in = os.fdopen(from_browser_r, "rb", buffering=0)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.session: str | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._out.close()
        self._in.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol ------------------------------------------------------------------------------
    def _read_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            import select

            ready, _, _ = select.select([self._in], [], [], 0.5)
            if ready:
                chunk = self._in.read(1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False, timeout: float = 60) -> dict[str, Any]:
        """Send one command (to the page's session unless ``browser``) and return its result."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        self._out.write(json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self._event(reply)

    def _event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "blob:", "about:")):
                self.requests.append(url)
        elif method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.console.append("exception: " + params["exceptionDetails"].get("exception", {}).get("description", "?"))
        self._events.append(msg)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev.get("method") == method:
                    return self._events.pop(i)
            self._event(self._read_message(max(0.1, deadline - time.monotonic())))

    # -- pages ---------------------------------------------------------------------------------
    def open(self, page: str | Path, hash_: str = "") -> None:
        """Open a page from disk in a fresh tab of ``size`` and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")
        w, h = self.size
        self.send("Emulation.setDeviceMetricsOverride", {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})
        self._events.clear()
        self.send("Page.navigate", {"url": Path(page).resolve().as_uri() + (f"#{hash_}" if hash_ else "")})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"].get("exception", {}).get("description", str(r["exceptionDetails"])))
        return r.get("result", {}).get("value")

    def screenshot(self) -> np.ndarray:
        """The page as (H, W, 3) uint8."""
        import imageio.v3 as iio

        png = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        return np.asarray(iio.imread(io.BytesIO(png)))[..., :3]

    def settled_screenshot(self, timeout: float = 60, interval: float = 0.5) -> np.ndarray:
        """A screenshot once two taken ``interval`` apart agree (the splats are sorted and drawn)."""
        deadline = time.monotonic() + timeout
        last = self.screenshot()
        while time.monotonic() < deadline:
            time.sleep(interval)
            shot = self.screenshot()
            if np.array_equal(shot, last) and (shot < BACKGROUND_LEVEL).any():
                return shot
            last = shot
        raise TimeoutError("the page did not settle")


# -- the player page -------------------------------------------------------------------------------
def player_shots(page: str | Path, times: list[float], size: tuple[int, int]) -> tuple[list[np.ndarray], Chromium]:
    """Screenshots of a player page paused at each of ``times`` (controls hidden)."""
    with Chromium(size=size) as browser:
        browser.open(page, f"t={times[0]}&ui=0")
        browser.evaluate("window.avatarPlayer.ready.then(() => true)")
        shots = []
        for t in times:
            browser.evaluate(f"window.avatarPlayer.setTime({float(t)})")
            shots.append(browser.settled_screenshot())
    return shots, browser


def animate_frames(avatar: Any, motion: Any, times: list[float], size: tuple[int, int]) -> list[np.ndarray]:
    """``avatar animate``'s frames (H, W, 3) uint8 at ``times`` (seconds), default camera, white background."""
    import torch

    from avatarcli import api
    from avatarcli.render.clip import AnimateOptions, FramePlan, plan_frames, render_frames
    from avatarcli.templates.loading import load_template

    av = api.load_avatar(avatar)
    mot = api.load_motion(motion, av.kind)
    tpl = load_template(av.kind)
    plan = plan_frames(av, tpl, mot, AnimateOptions(size=size))
    out = []
    for t in times:
        f = [round(t * plan.fps)]
        sub = FramePlan(plan.poses.index(f), plan.cameras.index(f), plan.fps, plan.retarget, plan.camera)
        out.append(next(iter(render_frames(av, tpl, sub, torch.ones(3), 1)))[0])
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def compare(page: list[np.ndarray], animate: list[np.ndarray]) -> dict[str, Any]:
    """How the page's screenshots agree with ``avatar animate``'s frames at the same times,
    and whether what moves between the first two times moves in both."""

    def figure(img: np.ndarray) -> np.ndarray:
        return (img < BACKGROUND_LEVEL).any(-1)

    def change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (np.abs(a.astype(int) - b.astype(int)) > CHANGE_LEVEL).any(-1)

    out: dict[str, Any] = {
        "mean_abs_diff": [float(np.abs(p.astype(float) - a.astype(float)).mean()) for p, a in zip(page, animate, strict=True)],
        "silhouette_iou": [_iou(figure(p), figure(a)) for p, a in zip(page, animate, strict=True)],
    }
    page_moved, anim_moved = change(page[0], page[1]), change(animate[0], animate[1])
    near_page, near_anim = binary_dilation(page_moved, iterations=MOTION_SLACK), binary_dilation(anim_moved, iterations=MOTION_SLACK)
    out["moved_pixels_page"] = int(page_moved.sum())
    out["moved_pixels_animate"] = int(anim_moved.sum())
    # of the pixels that change in one, the share that change (within a pixel or two) in the other
    out["motion_agreement"] = min(float((page_moved & near_anim).sum() / max(page_moved.sum(), 1)),
                                  float((anim_moved & near_page).sum() / max(anim_moved.sum(), 1)))  # fmt: skip
    out["ok"] = bool(
        max(out["mean_abs_diff"]) <= MAX_MEAN_DIFF
        and min(out["silhouette_iou"]) >= MIN_SILHOUETTE_IOU
        and out["motion_agreement"] >= MIN_MOTION_AGREEMENT
        and out["moved_pixels_page"] >= MIN_MOVED_SHARE * page[0].shape[0] * page[0].shape[1]
    )
    out["tolerances"] = {"mean_abs_diff_max": MAX_MEAN_DIFF, "silhouette_iou_min": MIN_SILHOUETTE_IOU,
                         "motion_agreement_min": MIN_MOTION_AGREEMENT, "moved_share_min": MIN_MOVED_SHARE}  # fmt: skip
    return out


def check_player(avatar: str, motion: str, times: list[float], size: int, out: Path) -> dict[str, Any]:
    """Export the page, screenshot it, render animate's frames, compare; images go to ``out``."""
    import imageio.v3 as iio

    from avatarcli import api

    out.mkdir(parents=True, exist_ok=True)
    page = out / f"{Path(avatar).stem}-{Path(motion).stem}.html"
    api.export(avatar, page, motion=motion)
    shots, browser = player_shots(page, times, (size, size))
    frames = animate_frames(avatar, motion, times, (size, size))
    for t, shot, frame in zip(times, shots, frames, strict=True):
        iio.imwrite(out / f"{page.stem}-page-{t:g}s.png", shot)
        iio.imwrite(out / f"{page.stem}-animate-{t:g}s.png", frame)
    report = compare(shots, frames)
    report.update(page=str(page), page_bytes=page.stat().st_size, times=times, size=size, requests=browser.requests,
                  errors=[c for c in browser.console if c.startswith("exception")])  # fmt: skip
    report["ok"] = report["ok"] and not report["requests"] and not report["errors"]
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p_shot = sub.add_parser("shot", help="screenshot a page once it has settled")
    p_shot.add_argument("page")
    p_shot.add_argument("output")
    p_shot.add_argument("--hash", default="")
    p_shot.add_argument("--size", type=int, default=512)
    p_eval = sub.add_parser("eval", help="print the awaited value of a JavaScript expression as JSON")
    p_eval.add_argument("page")
    p_eval.add_argument("expression")
    p_eval.add_argument("--timeout", type=float, default=120)
    p_player = sub.add_parser("player", help="export a player page and compare it with avatar animate")
    p_player.add_argument("avatar")
    p_player.add_argument("motion")
    p_player.add_argument("--times", type=float, nargs=2, default=[1.0, 1.55])
    p_player.add_argument("--size", type=int, default=192)
    p_player.add_argument("--out", type=Path, default=Path("player-check"))
    a = ap.parse_args(argv)
    if a.command == "shot":
        import imageio.v3 as iio

        with Chromium(size=(a.size, a.size)) as browser:
            browser.open(a.page, a.hash)
            iio.imwrite(a.output, browser.settled_screenshot())
        print(json.dumps({"output": a.output, "requests": browser.requests, "console": browser.console[:20]}))
        return 0
    if a.command == "eval":
        with Chromium() as browser:
            browser.open(a.page)
            value = browser.evaluate(a.expression, timeout=a.timeout)
        print(json.dumps({"value": value, "requests": browser.requests, "console": browser.console[:20]}))
        return 0
    report = check_player(a.avatar, a.motion, a.times, a.size, a.out)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
