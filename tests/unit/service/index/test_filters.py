"""Filtered search equals a brute-force filter, at every selectivity and on every search path."""

import numpy as np
import pytest

from service.errors import UnprocessableInput
from service.index import Collection, CollectionConfig
from service.index.filters import compile_filter

N = 20_000


def brute_force(stored, queries, mask, k):
    s = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = q @ s.T
    scores[:, ~mask] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[str(i) for i in row if mask[i]] for row in order]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    stored = rng.standard_normal((N, 32)).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    bucket = rng.integers(0, 1000, N)  # uniform 0..999: selectivity = share of the range
    meta = [{"bucket": int(b), "half": bool(b % 2), "tag": f"t{b % 20}"} for b in bucket]
    return stored, queries, bucket, meta


def make(kind, data, **params):
    stored, _, _, meta = data
    collection = Collection(CollectionConfig(name="c", dim=32, index=kind, params=params), background=False)
    collection.upsert([str(i) for i in range(N)], collection.prepare_vectors(stored), meta)
    return collection


SELECTIVITIES = {
    "50%": ({"half": True}, lambda b: b % 2 == 1),
    "5%": ({"bucket": {"gte": 100, "lt": 150}}, lambda b: (b >= 100) & (b < 150)),
    "0.1%": ({"bucket": 123}, lambda b: b == 123),
    "in": ({"tag": {"in": ["t1", "t2"]}, "bucket": {"lte": 500}}, lambda b: np.isin(b % 20, [1, 2]) & (b <= 500)),
}


@pytest.mark.parametrize("name", list(SELECTIVITIES))
@pytest.mark.parametrize("exact_max", [20_000, 0], ids=["exact-subset", "over-fetch"])
def test_flat_filtered_search_equals_brute_force(data, name, exact_max):
    stored, queries, bucket, _ = data
    spec, rule = SELECTIVITIES[name]
    collection = make("flat", data, filter_exact_max_points=exact_max, filter_exact_max_fraction=0.0)
    found = collection.search(collection.prepare_vectors(queries), 10, filter=spec)
    assert [[h.id for h in hits] for hits in found] == brute_force(stored, queries, rule(bucket), 10)
    assert all(spec_ok(h.metadata, rule) for hits in found for h in hits)


def spec_ok(meta, rule):
    return bool(rule(np.array([meta["bucket"]]))[0])


@pytest.fixture(scope="module")
def hnsw(data):
    return make("hnsw", data, filter_exact_max_points=500, filter_exact_max_fraction=0.0, M=16, ef_construction=80)


@pytest.mark.parametrize("name", ["50%", "5%", "0.1%"])
def test_hnsw_filtered_search_is_correct_at_any_selectivity(data, hnsw, name):
    """Over-fetch through the graph when the subset is large; exact when small; recall stays high either way."""
    stored, queries, bucket, _ = data
    spec, rule = SELECTIVITIES[name]
    collection = hnsw
    found = collection.search(collection.prepare_vectors(queries), 10, filter=spec)
    truth = brute_force(stored, queries, rule(bucket), 10)
    assert all(len(hits) == 10 for hits in found)
    assert all(spec_ok(h.metadata, rule) for hits in found for h in hits)
    recall = np.mean([len({h.id for h in f} & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95


def test_fewer_matches_than_k_returns_them_all(data):
    collection = make("flat", data)
    stored, queries, bucket, _ = data
    found = collection.search(collection.prepare_vectors(queries[:1]), 50, filter={"bucket": 7})
    assert sorted(h.id for h in found[0]) == sorted(str(i) for i in np.flatnonzero(bucket == 7))
    assert collection.search(collection.prepare_vectors(queries[:1]), 5, filter={"bucket": -1}) == [[]]


def test_filter_semantics():
    match = compile_filter({"a": 1, "b": {"in": ["x", 2]}, "c": {"gt": 0, "lte": 5}})
    assert match({"a": 1, "b": "x", "c": 5})
    assert match({"a": 1.0, "b": 2.0, "c": 0.5})
    assert not match({"a": True, "b": "x", "c": 1})  # a boolean is not the number 1
    assert not match({"a": 1, "b": "y", "c": 1})
    assert not match({"a": 1, "b": "x", "c": 0})
    assert not match({"a": 1, "b": "x", "c": "3"})  # ranges only match numbers
    assert not match({"b": "x", "c": 1})  # missing field


@pytest.mark.parametrize("spec", [{"a": {}}, {"a": {"near": 1}}, {"a": {"in": []}}, {"a": {"gt": "x"}}, {"a": [1]}])
def test_malformed_filters_are_422(spec):
    with pytest.raises(UnprocessableInput):
        compile_filter(spec)
