"""Shared fixtures. Randomness is seeded, and the seed is printed so a failure can be replayed."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("CONDUCTOR_TEST_SEED", "12345"))
    print(f"test seed: {value} (set CONDUCTOR_TEST_SEED to change)")
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
