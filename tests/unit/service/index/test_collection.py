import numpy as np
import pytest

from service.errors import NotFound, UnprocessableInput
from service.index import Collection, CollectionConfig


def brute_force(stored: np.ndarray, queries: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    if metric == "cosine":
        stored = stored / np.linalg.norm(stored, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if metric == "l2":
        scores = ((queries[:, None, :] - stored[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    else:
        scores = queries @ stored.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_flat_search_equals_numpy_brute_force(metric):
    rng = np.random.default_rng(3)
    stored = rng.standard_normal((500, 32)).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    collection = Collection(CollectionConfig(name="c", dim=32, metric=metric))
    ids = [f"p{i}" for i in range(500)]
    collection.upsert(ids, collection.prepare_vectors(stored), [{"i": i} for i in range(500)])
    hits = collection.search(collection.prepare_vectors(queries), k=10)
    order, scores = brute_force(stored.astype(np.float64), queries.astype(np.float64), metric, 10)
    for q in range(20):
        assert [h.id for h in hits[q]] == [f"p{i}" for i in order[q]]
        np.testing.assert_allclose([h.score for h in hits[q]], scores[q], rtol=1e-4, atol=1e-4)
        assert hits[q][0].metadata == {"i": int(order[q][0])}


def test_upsert_replaces_and_delete_removes():
    collection = Collection(CollectionConfig(name="c", dim=2, metric="l2"))
    prep = collection.prepare_vectors
    collection.upsert(["a", "b"], prep(np.array([[0, 0], [5, 5]])), [{"v": 1}, {"v": 2}])
    collection.upsert(["a"], prep(np.array([[10, 10]])), [{"v": 3}])
    assert collection.count == 2
    vector, meta = collection.get("a")
    np.testing.assert_array_equal(vector, [10, 10])
    assert meta == {"v": 3}
    hits = collection.search(prep(np.array([[0.0, 0.0]])), k=5)[0]
    assert [h.id for h in hits] == ["b", "a"]
    assert collection.delete(["a", "missing", "a"]) == 1
    assert collection.count == 1
    with pytest.raises(NotFound):
        collection.get("a")


def test_duplicate_ids_in_one_upsert_keep_the_last():
    collection = Collection(CollectionConfig(name="c", dim=2, metric="ip"))
    collection.upsert(["a", "a"], collection.prepare_vectors(np.array([[1, 0], [0, 1]])), [{"n": 1}, {"n": 2}])
    assert collection.count == 1
    assert collection.get("a")[1] == {"n": 2}


def test_search_by_stored_id_leaves_the_point_out():
    collection = Collection(CollectionConfig(name="c", dim=2, metric="cosine"))
    collection.upsert(["a", "b", "c"], collection.prepare_vectors(np.array([[1, 0], [1, 0.1], [0, 1]])), [{}, {}, {}])
    vector, _ = collection.get("a")
    hits = collection.search(vector[None, :], k=2, exclude=["a"])[0]
    assert [h.id for h in hits] == ["b", "c"]


def test_invalid_vectors_are_422_and_store_nothing():
    collection = Collection(CollectionConfig(name="c", dim=3))
    with pytest.raises(UnprocessableInput, match="dimension 3"):
        collection.prepare_vectors(np.ones((1, 4)))
    with pytest.raises(UnprocessableInput, match="NaN"):
        collection.prepare_vectors(np.array([[1.0, np.nan, 0.0]]))
    with pytest.raises(UnprocessableInput, match="zero vector"):
        collection.prepare_vectors(np.zeros((1, 3)))
    assert collection.count == 0


def test_empty_collection_search_returns_no_hits():
    collection = Collection(CollectionConfig(name="c", dim=2))
    assert collection.search(collection.prepare_vectors(np.ones((2, 2))), k=3) == [[], []]
