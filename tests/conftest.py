"""Shared fixtures: templates are generated once per machine into a cache the tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("AVATARCLI_CACHE", str(ROOT / ".cache" / "test-cache"))
os.environ.pop("AVATARCLI_HEAD_TEMPLATE", None)
os.environ.pop("AVATARCLI_BODY_TEMPLATE", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped where no CUDA device is (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run `make gpu-test` on a GPU machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def head_template():
    from avatarcli.templates.loading import load_template

    return load_template("head")


@pytest.fixture(scope="session")
def body_template():
    from avatarcli.templates.loading import load_template

    return load_template("body")


@pytest.fixture(scope="session")
def head_avatar(head_template):
    from avatarcli.model.initialize import init_avatar

    return init_avatar(head_template, points_per_triangle=1, seed=0)


@pytest.fixture(scope="session")
def body_avatar(body_template):
    from avatarcli.model.initialize import init_avatar

    return init_avatar(body_template, points_per_triangle=1, seed=0)
