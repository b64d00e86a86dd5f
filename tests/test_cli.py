"""The command line: outputs, pipes, and one clear line for every bad input."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import pytest

from avatarcli.model import avatar_file

from helpers import run_cli


def test_init_info_render(tmp_path: Path):
    out = tmp_path / "h.avatar"
    r = run_cli("init", "--model", "head", "-k", "1", "--seed", "3", "-o", str(out))
    assert r.code == 0, r.stderr
    assert r.stdout == b""  # nothing but data ever goes to stdout
    av = avatar_file.load(out)
    assert av.kind == "head" and av.meta["seed"] == 3 and "init" in av.meta["history"][0]["command"]
    r = run_cli("info", str(out), "--json")
    assert r.code == 0
    import json

    facts = json.loads(r.stdout)
    assert facts["gaussians"] == len(av) and facts["kind"] == "head" and facts["bounds"] is not None
    png = tmp_path / "views.png"
    r = run_cli("render", str(out), "-o", str(png), "--views", "2", "--size", "48x32")
    assert r.code == 0, r.stderr
    img = iio.imread(png)
    assert img.shape == (32, 96, 3)
    assert img.min() < 200  # the head is drawn over the white background
    folder = tmp_path / "views"
    assert run_cli("render", str(out), "-o", str(folder), "--views", "3", "--size", "24").code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["view_0000.png", "view_0001.png", "view_0002.png"]


def test_stdout_and_stdin_pipe(tmp_path: Path):
    r = run_cli("init", "--model", "body", "-k", "1", "-o", "-")
    assert r.code == 0 and r.stdout[:8] != b""
    av = avatar_file.from_bytes(r.stdout)
    assert av.kind == "body"
    r2 = run_cli("info", "-", "--json", stdin=r.stdout)
    assert r2.code == 0 and b'"kind": "body"' in r2.stdout


def _one_line_error(r):
    assert r.code == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("init", "--model", "tail", "-o", "{out}"),
        ("init", "--model", "head", "-k", "0", "-o", "{out}"),
        ("init", "--model", "head", "-k", "-3", "-o", "{out}"),
        ("init", "--model", "head", "--template", "{tmp}/missing", "-o", "{out}"),
        ("init", "--model", "body", "--template", "{tmp}", "-o", "{out}"),
        ("init", "--model", "head", "-o", "{tmp}/no/such/folder/x.avatar"),
        ("init", "--modle", "head", "-o", "{out}"),
        ("render", "{tmp}/missing.avatar", "-o", "{out}"),
    ],
)
def test_bad_input_is_one_line_and_no_output(tmp_path: Path, args):
    out = tmp_path / "out.avatar"
    r = run_cli(*(a.format(out=out, tmp=tmp_path) for a in args))
    _one_line_error(r)
    assert not out.exists()


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, None])
def test_corrupt_avatar_files(tmp_path: Path, head_avatar, content):
    bad = tmp_path / "bad.avatar"
    data = avatar_file.to_bytes(head_avatar)
    bad.write_bytes(content if content is not None else data[: len(data) - 100])
    out = tmp_path / "views.png"
    for args in (("info", str(bad)), ("render", str(bad), "-o", str(out))):
        _one_line_error(run_cli(*args))
    assert not out.exists()


def test_help_explains_itself():
    r = run_cli("init", "--help")
    assert r.code == 0
    text = r.stdout.decode() + r.stderr
    assert "--points-per-triangle" in text and "--template" in text


def test_data_goes_to_stdout():
    """``avatar motions | grep walk`` and ``avatar --version`` printed to stderr: a listing and
    a version are data."""
    r = run_cli("motions")
    assert r.code == 0, r.stderr
    listing = r.stdout.decode()
    assert "walk" in listing and "talk" in listing and "walk" not in r.stderr
    r = run_cli("--version")
    assert r.code == 0 and r.stdout.decode().startswith("avatarcli ") and r.stderr == ""


def test_help_shows_the_defaults_as_typer_does(monkeypatch):
    """``generate --help`` stated its defaults in prose, "(default 10000)"; they are shown as
    typer shows any default, from the recipes themselves."""
    from avatarcli.generate.config import recipe

    monkeypatch.setenv("COLUMNS", "300")
    for command in ("generate", "animate", "export", "rig", "motions", "init"):
        r = run_cli(command, "--help")
        text = r.stdout.decode() + r.stderr
        assert r.code == 0 and "(default" not in text and "Default:" not in text, text
    r = run_cli("generate", "--help")
    text = " ".join((r.stdout.decode() + r.stderr).split())
    head, body = recipe("head", "x"), recipe("body", "x")
    assert f"Training steps in all. [default: ({head.steps})]" in text
    assert f"[default: (head {head.lr.position:g}, body {body.lr.position:g})]" in text
    assert "[default: (head nfsd, body asd)]" in text and "[default: (head animate, body canonical,animate)]" in text
