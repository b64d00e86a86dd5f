"""The examples: examples/demo.sh, what `make demo` runs, shows each step on what the step
before made."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.sh"


def _commands() -> list[list[str]]:
    """The demo's ``avatar`` commands, as words (continued lines joined, comments dropped)."""
    text = DEMO.read_text().replace("\\\n", " ")
    lines = [ln.split(" #")[0] for ln in text.splitlines() if ln.strip().startswith('"$AVATAR"')]
    return [shlex.split(ln.replace("$OUT/", "OUT/"))[1:] for ln in lines]


def test_the_demo_animates_what_it_generated_and_uses_what_it_writes():
    """It animated chef.init.avatar rather than the generated chef.avatar, and wrote a
    wave.npz nothing read."""
    written: dict[str, str] = {}  # file -> the command that wrote it
    read: set[str] = set()
    for words in _commands():
        outputs = {words[i + 1] for i, w in enumerate(words[:-1]) if w == "-o"}
        files = {w for w in words if w.startswith("OUT/")}
        read |= files - outputs
        if words[0] == "animate":
            assert written.get(words[1]) == "generate", f"animate {words[1]}: not an avatar the demo generated"
        written.update(dict.fromkeys(outputs, words[0]))
    unread = sorted(f for f in written if re.search(r"\.(avatar|npz)$", f) and f not in read)
    assert not unread, f"written and never used: {unread}"
