"""Fixtures of the CUDA suite (the pieces live in gpu_helpers)."""

from __future__ import annotations

import pytest
from gpu_helpers import Models, random_weight_models


@pytest.fixture(scope="session")
def models() -> Models:
    return random_weight_models()
