"""The layering ARCHITECTURE.md describes: every import points down the layers, and no
library module imports the command layer (api, cli)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "avatarcli"
LAYERS = [
    {"errors", "fileio", "devices", "console", "signals", "rotations", "geometry", "ffmpeg", "__init__"},
    {"templates"},
    {"model"},
    {"motion"},
    {"render"},
    {"formats"},
    {"generate"},
    {"capture"},
    {"evaluation"},
    {"api"},
    {"cli", "__main__"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    top = top.removesuffix(".py")
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("avatarcli"):
            names = [node.module] if node.module.count(".") else [f"avatarcli.{a.name}" for a in node.names if a.name != "__version__"]
            out += names
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("avatarcli")]
    return out


def test_every_import_points_down_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "avatarcli." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for imported in _imports(path):
            if imported == "avatarcli":
                continue
            if _layer(imported) > _layer(module):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "imports that point up the layers:\n" + "\n".join(wrong)


def test_no_module_is_long():
    long = [f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 700]
    assert not long, long


def test_test_modules_have_one_basename_each():
    """Tests mirror the package, but pytest imports test modules by their basename (rootdir
    mode): two ``test_frames.py`` in different folders stop the whole suite from collecting."""
    names = sorted(p.name for p in (PACKAGE.parent / "tests").rglob("test_*.py"))
    assert not [n for n in set(names) if names.count(n) > 1]
