"""Approximate kinds against exact search; tombstones, rebuilds and deferred IVF training."""

import numpy as np
import pytest

from service.index import Collection, CollectionConfig
from service.index.kinds import gpu_available


def clustered(n: int, dim: int, seed: int, centers: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Points and fresh queries from the same mixture (queries are never copies of stored points)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, dim)).astype(np.float32)
    def draw(m: int) -> np.ndarray:
        return means[rng.integers(0, centers, m)] + 0.6 * rng.standard_normal((m, dim)).astype(np.float32)
    return draw(n), draw(50)


def exact_top(stored: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    s = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q @ s.T), axis=1)[:, :k]


def recall_at_10(collection: Collection, stored: np.ndarray, queries: np.ndarray, **search) -> float:
    truth = exact_top(stored, queries, 10)
    found = collection.search(collection.prepare_vectors(queries), 10, **search)
    hits = [len({int(h.id) for h in found[q]} & set(truth[q].tolist())) for q in range(len(queries))]
    return sum(hits) / (10 * len(queries))


def filled(kind: str, stored: np.ndarray, **params) -> Collection:
    collection = Collection(CollectionConfig(name="c", dim=stored.shape[1], index=kind, params=params), background=False)
    ids = [str(i) for i in range(len(stored))]
    collection.upsert(ids, collection.prepare_vectors(stored), [{"i": i} for i in range(len(stored))])
    return collection


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat", "ivf_pq"])
def test_approximate_kinds_reach_recall_095_on_a_clustered_set(kind):
    stored, queries = clustered(8000, 48, seed=1)
    extra = {"pq_m": 8, "rerank": 8} if kind == "ivf_pq" else {}  # fewer sub-quantisers: quick to train
    collection = filled(kind, stored, min_train_points=2000, **extra)
    assert collection.index_in_use == kind
    assert recall_at_10(collection, stored, queries) >= 0.95
    # The per-request knob matters: a tiny nprobe / ef must not do better than the default.
    knob = {"ef": 10} if kind == "hnsw" else {"nprobe": 1}
    assert recall_at_10(collection, stored, queries, params=knob) <= recall_at_10(collection, stored, queries)


def test_ivf_searches_exactly_until_it_can_train():
    stored, queries = clustered(3000, 16, seed=2)
    collection = filled("ivf_flat", stored[:1000], min_train_points=2000)
    assert collection.index_in_use == "flat"
    assert recall_at_10(collection, stored[:1000], queries) == 1.0
    collection.upsert([str(i) for i in range(1000, 3000)], collection.prepare_vectors(stored[1000:]), [{}] * 2000)
    assert collection.index_in_use == "ivf_flat"
    assert collection.count == 3000


def test_auto_switches_from_flat_to_hnsw_by_size():
    stored, _ = clustered(1500, 16, seed=3)
    collection = filled("auto", stored[:500], auto_hnsw_from=1000)
    assert collection.index_in_use == "flat"
    collection.upsert([str(i) for i in range(500, 1500)], collection.prepare_vectors(stored[500:]), [{}] * 1000)
    assert collection.index_in_use == "hnsw"


def test_hnsw_deletes_and_updates_are_tombstoned_then_rebuilt_away():
    stored, queries = clustered(2000, 16, seed=4)
    collection = filled("hnsw", stored, rebuild_dead_ratio=0.5)
    prepared = collection.prepare_vectors(queries)
    nearest = [hits[0].id for hits in collection.search(prepared, 1)]
    collection.delete(nearest)
    assert collection.tombstones == len(set(nearest))
    after = collection.search(prepared, 10)
    assert not {h.id for hits in after for h in hits} & set(nearest)
    # An update moves a point: searching at its new place finds it, its old place does not.
    far = np.full((1, 16), 50.0, np.float32)
    collection.upsert(["1"], collection.prepare_vectors(far), [{"moved": True}])
    assert collection.search(collection.prepare_vectors(far), 1)[0][0].id == "1"
    rebuilds = collection.rebuilds
    collection.delete([str(i) for i in range(100, 1200)])  # past the dead ratio: rebuilt
    assert collection.rebuilds > rebuilds
    assert collection.tombstones == 0
    assert collection.count == 2000 - len(set(nearest) | set(map(str, range(100, 1200))))
    found = {h.id for hits in collection.search(prepared, 10) for h in hits}
    assert not found & set(map(str, range(100, 1200)))


def test_background_rebuild_swaps_in_while_writes_continue():
    stored, queries = clustered(6000, 16, seed=5)
    collection = Collection(CollectionConfig(name="c", dim=16, index="ivf_flat", params={"min_train_points": 2000}))
    for lo in range(0, 6000, 500):
        ids = [str(i) for i in range(lo, lo + 500)]
        collection.upsert(ids, collection.prepare_vectors(stored[lo : lo + 500]), [{}] * 500)
        collection.delete([str(lo)])
    collection.wait_for_rebuild(60)
    while collection.needs_rebuild():  # a write may have landed after the last rebuild started
        collection.rebuild()
    assert collection.index_in_use == "ivf_flat"
    assert collection.count == 6000 - 12
    keep = np.array([i for i in range(6000) if i % 500], dtype=int)
    found = collection.search(collection.prepare_vectors(queries), 10, params={"nprobe": 10_000})
    truth = exact_top(stored[keep], queries, 10)
    assert [[h.id for h in hits] for hits in found] == [[str(keep[j]) for j in row] for row in truth]


@pytest.mark.skipif(not gpu_available(), reason="faiss here has no GPU support or sees no GPU (faiss-cpu build)")
def test_gpu_index_matches_cpu():
    stored, queries = clustered(5000, 32, seed=6)
    collection = filled("ivf_flat", stored, min_train_points=2000)
    assert collection._built.on_gpu
    assert recall_at_10(collection, stored, queries, params={"nprobe": 64}) >= 0.95


def low_rank(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """tanh of a low-dimensional Gaussian through a fixed matrix: most variance in few directions."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, dim)).astype(np.float32)
    def draw(m: int) -> np.ndarray:
        return np.tanh(rng.standard_normal((m, 8)).astype(np.float32) @ w) + 0.05 * rng.standard_normal((m, dim)).astype(np.float32)
    return draw(n), draw(50)


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat"])
def test_projected_index_with_exact_rerank_reaches_recall_095(kind):
    stored, queries = low_rank(6000, 48, seed=7)
    collection = filled(kind, stored, min_train_points=2000, pca=16)
    assert collection.index_in_use == kind and collection.params["pca"] == 16
    assert recall_at_10(collection, stored, queries) >= 0.95
    # Scores are exact after re-ranking, not the projected approximations.
    top = collection.search(collection.prepare_vectors(queries[:1]), 1)[0][0]
    unit = stored[int(top.id)] / np.linalg.norm(stored[int(top.id)])
    assert top.score == pytest.approx(float(unit @ (queries[0] / np.linalg.norm(queries[0]))), abs=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_flat", "ivf_pq"])
@pytest.mark.parametrize("pca", [None, 8])
def test_flags_of_a_loaded_index_match_a_fresh_build(kind, pca):
    from service.index import kinds

    params = kinds.resolve_params({"pca": pca, "nlist": 4, "pq_m": 4})
    sample = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    built = kinds.build_index(kind, 16, "cosine", params, sample)
    assert kinds.flags(kind, params) == (built.removes_in_place, built.exact_scores)


def clustered_low_rank(n: int, dim: int, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """40 overlapping clusters inside a `rank`-dimensional subspace, plus a little full-rank noise: the shape of
    real embeddings, where a projection keeps the neighbours (isotropic noise in every dimension would not)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dim)).astype(np.float32)
    means = rng.standard_normal((40, rank)).astype(np.float32)
    def draw(m: int) -> np.ndarray:
        inner = means[rng.integers(0, 40, m)] + 0.6 * rng.standard_normal((m, rank)).astype(np.float32)
        return inner @ basis + 0.05 * rng.standard_normal((m, dim)).astype(np.float32)
    return draw(n), draw(50)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_projected_hnsw_on_a_clustered_set_reaches_recall_095_with_exact_scores(metric):
    stored, queries = clustered_low_rank(8000, 64, rank=12, seed=8)
    params = {"M": 16, "ef_construction": 100, "pca": 16, "min_train_points": 2000}
    collection = Collection(CollectionConfig(name="c", dim=64, metric=metric, index="hnsw", params=params), background=False)
    collection.upsert([str(i) for i in range(len(stored))], collection.prepare_vectors(stored), [{}] * len(stored))
    assert collection.index_in_use == "hnsw"
    prepared = collection.prepare_vectors(queries)
    found = collection.search(prepared, 10, params={"ef": 64, "rerank": 2})
    # Exact answers in the collection's own convention (unit vectors + inner product, or squared L2).
    vectors = collection.prepare_vectors(stored)
    exact = prepared @ vectors.T if metric == "cosine" else ((prepared[:, None, :] - vectors[None]) ** 2).sum(-1)
    order = np.argsort(-exact if metric == "cosine" else exact, axis=1)[:, :10]
    hits = sum(len({int(h.id) for h in found[q]} & set(order[q].tolist())) for q in range(len(queries)))
    assert hits / (10 * len(queries)) >= 0.95
    for q, row in enumerate(found):
        # Every returned score is the exact one (re-ranked against the full vectors), best first.
        np.testing.assert_allclose([h.score for h in row], exact[q, [int(h.id) for h in row]], rtol=1e-4, atol=1e-4)
        scores = [h.score for h in row]
        assert scores == sorted(scores, reverse=metric == "cosine")
