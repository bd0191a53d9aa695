import os

import numpy as np
import pytest

from service.errors import Conflict, InvalidInput, NotFound, StorageError
from service.index import CollectionConfig, CollectionStore
from service.index.dirlock import DataDirLock, DataDirLocked

CONFIG = CollectionConfig(name="things", dim=4, metric="l2")


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


def open_store(tmp_path, **kwargs) -> CollectionStore:
    store = CollectionStore(tmp_path, **kwargs)
    store.recover()
    return store


def test_writes_survive_a_crash_without_close(tmp_path):
    store = open_store(tmp_path)
    store.create(CONFIG)
    store.upsert("things", ["a", "b", "c"], vectors(3), [{"n": 1}, {"n": 2}, {"n": 3}])
    store.delete("things", ["b"])
    store.upsert("things", ["a"], vectors(1, seed=9), [{"n": 10}])
    # no close(): the process "died" here; a new store recovers from the log alone
    again = open_store(tmp_path)
    collection = again.get("things")
    assert collection.count == 2
    np.testing.assert_array_equal(collection.get("a")[0], vectors(1, seed=9)[0])
    assert collection.get("c")[1] == {"n": 3}
    with pytest.raises(NotFound):
        collection.get("b")


def test_snapshot_then_log_recovers_the_same_state(tmp_path):
    store = open_store(tmp_path, snapshot_every_bytes=1, snapshot_log_ratio=0)  # snapshot after every write
    store.create(CONFIG)
    store.upsert("things", [f"p{i}" for i in range(10)], vectors(10), [{"i": i} for i in range(10)])
    store.delete("things", ["p3"])
    assert (tmp_path / "collections" / "things" / "snapshot.npz").exists()
    assert (tmp_path / "collections" / "things" / "wal.log").stat().st_size == 0
    again = open_store(tmp_path)
    assert again.get("things").count == 9
    assert again.get("things").get("p7")[1] == {"i": 7}


def test_torn_final_record_is_dropped_and_earlier_ones_kept(tmp_path):
    store = open_store(tmp_path)
    store.create(CONFIG)
    store.upsert("things", ["a"], vectors(1), [{}])
    wal = tmp_path / "collections" / "things" / "wal.log"
    with open(wal, "ab") as handle:
        handle.write(b"0badc0de {\"op\": \"upsert\", \"ids\": [\"half")
    again = open_store(tmp_path)
    assert again.get("things").count == 1
    assert wal.read_bytes().endswith(b"\n")


def test_corruption_in_the_middle_is_reported_not_ignored(tmp_path):
    store = open_store(tmp_path)
    store.create(CONFIG)
    store.upsert("things", ["a"], vectors(1), [{}])
    store.upsert("things", ["b"], vectors(1), [{}])
    wal = tmp_path / "collections" / "things" / "wal.log"
    lines = wal.read_bytes().split(b"\n")
    lines[0] = lines[0][:20] + b"X" + lines[0][21:]
    wal.write_bytes(b"\n".join(lines))
    again = open_store(tmp_path)
    assert "things" in again.failures
    assert "things" not in again.names()


def test_failed_log_write_applies_nothing(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    store.create(CONFIG)
    durable = store._collections["things"]

    def disk_full(record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable.wal, "append", disk_full)
    with pytest.raises(StorageError, match="No space left"):
        store.upsert("things", ["a"], vectors(1), [{}])
    assert store.get("things").count == 0


def test_create_is_idempotent_and_conflicts_on_change(tmp_path):
    store = open_store(tmp_path)
    assert store.create(CONFIG)[1] is True
    assert store.create(CONFIG)[1] is False
    with pytest.raises(Conflict):
        store.create(CollectionConfig(name="things", dim=8))


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 65, "con sole"])
def test_names_cannot_escape_the_data_folder(tmp_path, name):
    store = open_store(tmp_path)
    with pytest.raises(InvalidInput):
        store.create(CollectionConfig(name=name, dim=2))


def test_drop_removes_from_disk(tmp_path):
    store = open_store(tmp_path)
    store.create(CONFIG)
    store.upsert("things", ["a"], vectors(1), [{}])
    store.drop("things")
    assert store.names() == []
    assert open_store(tmp_path).names() == []
    assert [p for p in (tmp_path / "collections").iterdir()] == []


def test_close_snapshots_and_reopens(tmp_path):
    store = open_store(tmp_path)
    store.create(CONFIG)
    store.upsert("things", ["a", "b"], vectors(2), [{}, {}])
    store.close()
    assert (tmp_path / "collections" / "things" / "wal.log").stat().st_size == 0
    assert open_store(tmp_path).get("things").count == 2



def test_create_over_a_folder_that_failed_recovery_is_409_not_507(tmp_path):
    store = open_store(tmp_path)
    store.create(CONFIG)
    store.upsert("things", ["a"], vectors(1), [{}])
    store.close()
    (tmp_path / "collections" / "things" / "wal.log").write_bytes(b"0badc0de not a record\nanother\n")
    again = open_store(tmp_path)
    assert "things" in again.failures
    with pytest.raises(Conflict) as refused:
        again.create(CONFIG)
    assert refused.value.code == "collection_exists"
    assert "recovery failed" in refused.value.message
    assert (tmp_path / "collections" / "things" / "config.json").exists()  # nothing overwritten


def test_data_directory_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    first = DataDirLock.acquire(tmp_path / "data")
    with pytest.raises(DataDirLocked) as refused:
        DataDirLock.acquire(tmp_path / "data")
    assert refused.value.holder_pid == str(os.getpid())
    assert str((tmp_path / "data").resolve()) in str(refused.value)
    store = CollectionStore(tmp_path / "data", lock=first)
    store.recover()
    store.close()  # releases: the next server may start
    assert not first.held
    DataDirLock.acquire(tmp_path / "data").release()


def test_an_in_process_app_on_a_held_data_directory_fails_to_start(settings_factory):
    from fastapi.testclient import TestClient

    from service.app import create_app

    settings = settings_factory()
    holder = DataDirLock.acquire(settings.data_dir)
    try:
        with pytest.raises(DataDirLocked), TestClient(create_app(settings.config)):
            pass
    finally:
        holder.release()


def low_rank_points(n: int, seed: int = 0) -> np.ndarray:
    """One fixed low-rank distribution (the projection is trained on it); `seed` draws other points."""
    mix = np.random.default_rng(0).standard_normal((4, 16))
    return np.tanh(np.random.default_rng(seed).standard_normal((n, 4)) @ mix).astype(np.float32)


HNSW = CollectionConfig(
    name="graph", dim=16, index="hnsw", params={"pca": 8, "min_train_points": 500, "rebuild_dead_ratio": 0.9}
)


def test_snapshot_keeps_the_faiss_index_so_recovery_does_not_rebuild(tmp_path):
    store = open_store(tmp_path)
    store.create(HNSW)
    points = low_rank_points(2000)
    store.upsert("graph", [str(i) for i in range(2000)], points, [{"i": i} for i in range(2000)])
    store.get("graph").wait_for_rebuild(60)
    store.delete("graph", [str(i) for i in range(0, 2000, 7)])  # tombstones inside the graph
    before = store.get("graph")
    assert before.index_in_use == "hnsw"
    assert before.tombstones > 0
    queries = before.prepare_vectors(low_rank_points(20, seed=1))
    expected = [[(h.id, h.score) for h in hits] for hits in before.search(queries, 10)]
    tombstones = before.tombstones
    store.close()

    again = open_store(tmp_path).get("graph")
    # Loaded, not rebuilt: a rebuild would start from an untrained (flat) index in the background.
    assert again.index_in_use == "hnsw"
    assert again.rebuilds == 0
    assert again._rebuild_thread is None
    assert again.tombstones == tombstones
    assert again.count == before.count
    assert [[(h.id, h.score) for h in hits] for hits in again.search(queries, 10)] == expected
    assert again.get("1")[1] == {"i": 1}


def test_log_after_a_snapshot_with_an_index_replays_over_it(tmp_path):
    store = open_store(tmp_path)
    store.create(HNSW)
    points = low_rank_points(1000)
    store.upsert("graph", [str(i) for i in range(1000)], points, [{}] * 1000)
    store.get("graph").wait_for_rebuild(60)
    store.close()
    store = open_store(tmp_path)
    store.upsert("graph", ["0"], low_rank_points(1, seed=5), [{"moved": True}])
    store.delete("graph", ["1"])
    # no close: the log holds the last two writes
    again = open_store(tmp_path).get("graph")
    assert again.count == 999
    assert again.get("0")[1] == {"moved": True}
    np.testing.assert_allclose(again.get("0")[0], again.prepare_vectors(low_rank_points(1, seed=5))[0])
    found = again.search(again.get("0")[0][None], 1)[0]
    assert found[0].id == "0"
    assert found[0].score == pytest.approx(1.0, abs=1e-5)


def test_unreadable_stored_index_is_rebuilt_from_the_points(tmp_path):
    store = open_store(tmp_path)
    store.create(HNSW)
    store.upsert("graph", [str(i) for i in range(1000)], low_rank_points(1000), [{}] * 1000)
    store.get("graph").wait_for_rebuild(60)
    store.close()
    path = tmp_path / "collections" / "graph" / "snapshot.npz"
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["index"] = arrays["index"][: len(arrays["index"]) // 2]  # truncated
    np.savez(path, **arrays)
    again = open_store(tmp_path).get("graph")
    assert again.count == 1000
    again.wait_for_rebuild(60)
    assert again.index_in_use == "hnsw"
    assert again.rebuilds >= 1
    assert again.search(again.get("5")[0][None], 1)[0][0].id == "5"


def test_a_log_write_refused_for_a_full_disk_never_reaches_the_log(tmp_path, monkeypatch):
    """The refused record must not linger (in a write buffer) and be written ahead of the next one when space
    returns: that made a write answered 507 'nothing was applied' durable after a restart."""
    from service.index.wal import WriteAheadLog

    wal = WriteAheadLog(tmp_path / "wal.log")
    wal.append({"op": "delete", "ids": ["kept"]})
    real_write = wal._file.write
    calls = []

    def full_after_some_bytes(data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(bytes(data[:10]))  # part of the record fits, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wal, "_file", _WriteThrough(wal._file, full_after_some_bytes))
    with pytest.raises(OSError, match="No space left"):
        wal.append({"op": "delete", "ids": ["refused"]})
    monkeypatch.undo()
    wal.append({"op": "delete", "ids": ["after"]})
    wal.close()
    assert [r["ids"] for r in WriteAheadLog.replay(tmp_path / "wal.log")] == [["kept"], ["after"]]


class _WriteThrough:
    """A file whose write is replaced; everything else goes to the real one."""

    def __init__(self, real, write):
        self._real, self.write = real, write

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_bulk_loading_snapshots_in_proportion_to_what_is_logged(tmp_path, monkeypatch):
    """A snapshot rewrites the whole collection: taken every fixed number of logged bytes, loading N points would
    write O(N^2) bytes. The log may grow as large as the last snapshot first, so snapshots stay few."""
    taken = []
    real = CollectionStore._snapshot
    monkeypatch.setattr(CollectionStore, "_snapshot", lambda self, durable: (taken.append(1), real(self, durable)))

    def load(folder, **kwargs) -> int:
        taken.clear()
        store = open_store(folder, snapshot_every_bytes=1024, **kwargs)
        store.create(CONFIG)
        for batch in range(60):
            store.upsert("things", [f"p{batch}-{i}" for i in range(20)], vectors(20, seed=batch), [{}] * 20)
        assert open_store(folder).get("things").count == 1200
        return len(taken)

    fixed = load(tmp_path / "fixed", snapshot_log_ratio=0)
    proportional = load(tmp_path / "proportional")
    assert fixed >= 30, (fixed, proportional)
    assert 2 <= proportional <= 8, (fixed, proportional)
