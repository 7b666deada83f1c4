"""Prompt features: deterministic, about words, and cheap."""

from __future__ import annotations

import numpy as np
import pytest

from conductor.bandit.features import Featurizer


@pytest.fixture(scope="module")
def featurize() -> Featurizer:
    return Featurizer(dim=32, seed=0)


def test_features_are_deterministic_unit_vectors_plus_length(featurize: Featurizer) -> None:
    a = featurize("Where is my order? It has not arrived.")
    b = Featurizer(dim=32, seed=0)("Where is my order? It has not arrived.")
    assert a.shape == (33,) and np.array_equal(a, b)  # another instance, same vector
    assert np.linalg.norm(a[:32]) == pytest.approx(1.0)
    assert a[32] == pytest.approx(np.log1p(len("Where is my order? It has not arrived.")) / 10)
    assert not np.array_equal(a, Featurizer(dim=32, seed=1)("Where is my order?"))


def test_case_and_punctuation_do_not_matter_words_do(featurize: Featurizer) -> None:
    plain = featurize("refund my order please")
    noisy = featurize("  REFUND,   my order... please!")
    assert np.allclose(plain[:32], noisy[:32])
    # Shared words bring vectors together (at a dimension where the projection keeps
    # distances well; at 32 a few words are too noisy to compare one pair).
    wide = Featurizer(dim=512, seed=0)
    base = wide("refund my order please")
    assert float(base[:512] @ wide("please refund the order")[:512]) > float(
        base[:512] @ wide("prove the eigenvalue theorem")[:512]) + 0.2


def test_word_pairs_count(featurize: Featurizer) -> None:
    u1, c1 = featurize.buckets("new york")
    u2, _ = featurize.buckets("york new")
    assert len(u1) == 3 and set(u1) != set(u2)  # two words and one pair; order matters
    assert c1.tolist() == [1.0, 1.0, 1.0]
    assert featurize.buckets("")[0].size == 0
    assert np.array_equal(featurize("")[:32], np.zeros(32))
