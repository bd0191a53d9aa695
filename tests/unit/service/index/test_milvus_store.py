"""The milvus backend on the real embedded engine (milvus-lite): exact flat search, HNSW recall, names, configs."""

from __future__ import annotations

import numpy as np
import pytest

from loadtests.milvus_lite_probe import indexed_rows
from service.errors import Conflict, NotFound, UnprocessableInput
from service.index.collection import CollectionConfig
from service.index.milvus_filters import ids_expression, match_keys, to_expression
from service.index.milvus_store import MilvusCollectionStore, milvus_name


@pytest.fixture
def store(tmp_path):
    opened = MilvusCollectionStore(str(tmp_path / "milvus.db"))
    opened.recover()
    yield opened
    opened.close()


def brute_force(stored: np.ndarray, queries: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    if metric == "l2":
        scores = ((queries[:, None, :] - stored[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    else:
        scores = queries @ stored.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_flat_search_equals_numpy_brute_force(store, metric):
    rng = np.random.default_rng(4)
    stored = rng.standard_normal((3000, 24)).astype(np.float32)
    store.create(CollectionConfig(name="flat", dim=24, metric=metric, index="flat"))
    ids = [f"p{i}" for i in range(3000)]
    store.upsert("flat", ids[:2000], stored[:2000], [{"i": i} for i in range(2000)])
    store.flush("flat")  # sealed and indexed; the last 1000 stay in the engine's buffer
    assert indexed_rows(store.uri, milvus_name(store.prefix, "flat")) == {"BruteForceIndex": 2000}
    store.upsert("flat", ids[2000:], stored[2000:], [{"i": i} for i in range(2000, 3000)])
    queries = rng.standard_normal((8, 24)).astype(np.float32)
    collection = store.get("flat")
    reference = stored / np.linalg.norm(stored, axis=1, keepdims=True) if metric == "cosine" else stored
    order, scores = brute_force(reference, collection.prepare_vectors(queries), metric, 10)
    for row, hits in enumerate(collection.search(collection.prepare_vectors(queries), 10)):
        assert [h.id for h in hits] == [f"p{i}" for i in order[row]]
        np.testing.assert_allclose([h.score for h in hits], scores[row], rtol=1e-4, atol=1e-4)
        assert [h.metadata["i"] for h in hits] == list(order[row])


def test_hnsw_recall_at_10_on_a_clustered_set(store):
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((40, 32)).astype(np.float32) * 4
    stored = (centres[rng.integers(0, 40, 20_000)] + rng.standard_normal((20_000, 32))).astype(np.float32)
    store.create(
        CollectionConfig(name="hnsw", dim=32, metric="cosine", index="hnsw", params={"M": 16, "ef_construction": 100})
    )
    store.upsert("hnsw", [str(i) for i in range(20_000)], stored, [{} for _ in range(20_000)])
    store.flush("hnsw")
    # every point under the HNSW graph (not scanned): the search below walks it
    assert indexed_rows(store.uri, milvus_name(store.prefix, "hnsw")) == {"FaissHnswIndex": 20_000}
    collection = store.get("hnsw")
    queries = collection.prepare_vectors(
        stored[rng.choice(20_000, 200, replace=False)] + 0.5 * rng.standard_normal((200, 32))
    )
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    truth, _ = brute_force(unit, queries, "cosine", 10)
    found = collection.search(queries, 10, params={"ef": 64})
    recall = np.mean([len({int(h.id) for h in hits} & set(truth[q].tolist())) / 10 for q, hits in enumerate(found)])
    assert recall >= 0.95, recall


def test_configs_names_conflicts_and_refusals(store, tmp_path):
    config = CollectionConfig(name="a-b.c_d", dim=4, metric="l2", index="hnsw", space_id="s1", params={"M": 8})
    assert store.create(config)[1] is True
    assert store.create(config)[1] is False
    with pytest.raises(Conflict):
        store.create(CollectionConfig(name="a-b.c_d", dim=5))
    # the escaping is one-to-one: names that differ only in '-', '.', '_' stay different collections
    assert len({milvus_name("jepa", n) for n in ("a-b", "a.b", "a_b", "a_hb", "a_pb")}) == 5
    store.create(CollectionConfig(name="a_hb", dim=4))
    assert store.names() == ["a-b.c_d", "a_hb"]
    for bad in (CollectionConfig(name="pq", dim=8, index="ivf_pq", params={"pq_m": 2}),  # milvus-lite builds no IVF_PQ
                CollectionConfig(name="pca", dim=8, index="hnsw", params={"pca": 4}),
                CollectionConfig(name="big", dim=40_000)):
        with pytest.raises(UnprocessableInput):
            store.create(bad)
    assert "pq" not in store.names()
    store.upsert("a-b.c_d", ["x", "x"], np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32), [{"n": 1}, {"n": 2}])
    assert store.get("a-b.c_d").get("x")[1] == {"n": 2}  # a repeated id: the last one wins
    assert store.delete("a-b.c_d", ["x", "ghost"]) == 1
    store.close()
    again = MilvusCollectionStore(str(tmp_path / "milvus.db"))
    again.recover()  # the service's config lives in Milvus: a new process finds the same collections
    try:
        assert again.get("a-b.c_d").config == config
        assert again.names() == ["a-b.c_d", "a_hb"]
        again.drop("a_hb")
        with pytest.raises(NotFound):
            again.get("a_hb")
    finally:
        again.close()


def test_filter_expressions_carry_no_client_text():
    spec = {'x") or (1 == 1': 'v" or id != "', "y": {"in": ["a", 2, True, None]}, "z": {"gte": 1, "lt": float("inf")}}
    expression = to_expression(spec)
    assert '"' + 'x")' not in expression
    assert "or id !=" not in expression
    assert expression.count(" or ") == 3  # the four options of `in`, nothing else
    assert match_keys({"s": "text", "n": 2, "b": False, "z": None, "l": [1]}).__len__() == 4


def test_an_id_expression_reads_back_exactly_the_ids_it_was_given():
    """Every id, whatever characters it holds, is one string literal of the `in` list (milvus-lite's own parser)."""
    from milvus_lite.search.filter import parse_expr
    from milvus_lite.search.filter.ast import InOp, StringLit

    rng = np.random.default_rng(8)
    alphabet = list("'\"\\\n\r\t []()/,%=!aé猫🐱") + [chr(c) for c in range(32)]
    ids = ["x'] or id != 'zz' or id in ['", "\\", "a\\b", '"', "'"]
    ids += ["".join(rng.choice(alphabet, size=int(rng.integers(1, 40)))) for _ in range(200)]
    parsed = parse_expr(ids_expression(ids))
    assert isinstance(parsed, InOp)
    assert parsed.field.name == "id"
    assert not parsed.negate
    assert all(isinstance(e, StringLit) for e in parsed.values.elements)
    assert [e.value for e in parsed.values.elements] == ids


def test_pymilvus_is_imported_only_when_selected(tmp_path):
    """The milvus extra is optional: a local or redis service never loads it."""
    import subprocess
    import sys

    code = (
        "import sys; from service.index.backend import open_store; from service.settings import Settings; "
        f"open_store(Settings(data_dir={str(tmp_path)!r}).config.collections); "
        "print('pymilvus' in sys.modules, 'milvus_lite' in sys.modules); "
        f"open_store(Settings(storage='milvus', data_dir={str(tmp_path)!r}).config.collections); "
        "print('pymilvus' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


@pytest.mark.parametrize("uri", ["milvus", "data/milvus.sqlite", "localhost:19530"])
def test_a_milvus_uri_is_a_db_file_or_an_address(uri):
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="JEPA_MILVUS_URI"):
        Settings(storage="milvus", milvus_uri=uri)
    assert Settings(storage="milvus", milvus_uri="http://milvus:19530").milvus_uri == "http://milvus:19530"


def test_a_grpc_failure_that_pymilvus_lets_through_is_503(store):
    """pymilvus re-raises some gRPC failures as they are (a deadline during an engine's inline flush, seen in the
    benchmark): they mean 'retry later', not a 500."""
    import grpc

    from service.errors import StorageUnavailable

    class Deadline(grpc.RpcError, grpc.Call):  # what grpc raises: an RpcError that is also a Call
        def code(self):
            return grpc.StatusCode.DEADLINE_EXCEEDED

        def details(self):
            return "Deadline Exceeded"

        initial_metadata = trailing_metadata = time_remaining = is_active = cancel = add_callback = lambda self, *a: (
            None
        )

    def stalled(client):
        raise Deadline()

    with pytest.raises(StorageUnavailable, match="DEADLINE_EXCEEDED") as caught:
        store.call("any", stalled)
    assert caught.value.status == 503
    assert caught.value.retry_after_s >= 1


def test_the_embedded_engine_is_one_process_only(store):
    """Why two API replicas need a Milvus server (or a `milvus-lite server`): a second process cannot open the file."""
    import subprocess
    import sys

    code = (f"from pymilvus import MilvusClient\nMilvusClient({store.uri!r}).list_collections()\n")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert other.returncode != 0
    assert "DataDirLockedError" in other.stderr, other.stderr[-2000:]
