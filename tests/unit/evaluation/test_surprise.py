"""The surprise evaluation's AUROC and step alignment."""

import numpy as np

from evaluation.surprise import auroc


def test_auroc_is_the_share_of_ordered_pairs_with_ties_counting_half():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 60).astype(float)
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    assert auroc(pos, neg) == sum(pairs) / len(pairs)
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([0.0]), np.array([1.0])) == 0.0
