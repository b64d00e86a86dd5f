"""Frame writers: failures surface (never hang) and leave nothing behind; names sort."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from avatarcli.formats import frames
from avatarcli.formats.frames import FrameWriter, frame_name, write_png_folder


def _finishes(fn, seconds=30.0):
    """Run ``fn`` on a thread; return what it raised, failing the test if it does not finish."""
    outcome: list[BaseException | None] = []

    def target():
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the writer hung"
    return outcome[0]


@pytest.mark.parametrize("name", ["clip.gif", "clip"])
def test_a_failing_write_after_the_last_frame_is_raised_not_hung(tmp_path, monkeypatch, name):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(frames.iio, "imwrite", broken)

    def write():
        with FrameWriter(tmp_path / name, fps=10.0, size=(8, 8)) as w:
            for _ in range(3):
                w.add(np.zeros((8, 8, 3), np.uint8))

    error = _finishes(write)
    assert isinstance(error, OSError)
    assert list(tmp_path.iterdir()) == []  # no partial output


@pytest.mark.parametrize("name", ["clip.gif", "clip"])
def test_an_interruption_while_closing_discards_the_output(tmp_path, monkeypatch, name):
    """Ctrl-C that arrives while the end of the frames is queued (held until the put is done)
    still ends with the encoder joined and the partial output removed."""
    import contextlib

    closing = threading.Event()

    @contextlib.contextmanager
    def held():
        yield
        if closing.is_set():
            raise KeyboardInterrupt

    monkeypatch.setattr(frames, "interruptions_held", held)

    def write():
        with FrameWriter(tmp_path / name, fps=10.0, size=(8, 8)) as w:
            for _ in range(3):
                w.add(np.zeros((8, 8, 3), np.uint8))
            closing.set()

    error = _finishes(write)
    assert isinstance(error, KeyboardInterrupt)
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even a hidden partial file


def test_png_names_sort_in_frame_order(tmp_path):
    assert frame_name("frame", 7, 12_000) == "frame_00007.png" and frame_name("frame", 7, None) == "frame_0007.png"
    with FrameWriter(tmp_path / "long", fps=10.0, size=(4, 4), frames=12_000) as w:
        for _ in range(3):
            w.add(np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in (tmp_path / "long").iterdir()) == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]


def test_png_folder_may_have_a_dot_in_its_name(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (3, 6, 5, 3), dtype=np.uint8)
    paths = write_png_folder(images, tmp_path / "renders.v2", stem="view")
    assert [p.name for p in paths] == ["view_0000.png", "view_0001.png", "view_0002.png"]
    assert all(np.array_equal(frames.iio.imread(p), img) for p, img in zip(paths, images, strict=True))
