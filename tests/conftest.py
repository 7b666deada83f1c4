"""Shared fixtures. Randomness is seeded, and the seed is printed so a failure can be replayed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from tests.postgres import Cluster, start_cluster


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("CONDUCTOR_TEST_SEED", "12345"))
    print(f"test seed: {value} (set CONDUCTOR_TEST_SEED to change)")
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster for the session (skips without a server binary)."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """An empty database of its own for this test."""
    return pg_cluster.new_database()
