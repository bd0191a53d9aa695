import numpy as np
import pytest

from service.errors import Conflict, InvalidInput, NotFound, StorageError
from service.index import CollectionConfig, CollectionStore

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
    store = open_store(tmp_path, snapshot_every_bytes=1)  # snapshot after every write
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

