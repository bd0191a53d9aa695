"""Turns for milvus-lite (service/index/engine_turns.py): reads together, one write beside them, schema changes
alone; a turn not given in time is a 503; a Milvus server gets no turns at all."""

from __future__ import annotations

import threading
import time

import pytest

from service.errors import StorageUnavailable
from service.index.engine_turns import Turns


def test_reads_share_a_write_runs_beside_them_and_writes_take_turns():
    turns = Turns(True, timeout_s=0.2)
    with turns.read(), turns.read(), turns.write():  # two reads and a write at once
        with pytest.raises(StorageUnavailable, match="before this write"), turns.write():
            pass
        with pytest.raises(StorageUnavailable, match="before this schema change"), turns.alone():
            pass
    with turns.alone():
        pass  # everything above was given back


def test_a_schema_change_runs_alone_and_holds_back_new_reads_while_it_waits():
    turns = Turns(True, timeout_s=5)
    order: list[str] = []

    def change() -> None:
        with turns.alone():
            order.append("schema change")

    def late_read() -> None:
        with turns.read():
            order.append("late read")

    with turns.read():
        changer = threading.Thread(target=change)
        changer.start()
        deadline = time.monotonic() + 5
        while turns._alone_waiting == 0:  # the change is queued behind this read
            assert time.monotonic() < deadline
            time.sleep(0.001)
        reader = threading.Thread(target=late_read)  # arrives after the change: waits for it
        reader.start()
        reader.join(0.2)
        order.append("first read")
    changer.join(5)
    reader.join(5)
    assert order == ["first read", "schema change", "late read"]


def test_a_server_gets_no_turns():
    turns = Turns(False, timeout_s=0.01)
    with turns.alone(), turns.alone(), turns.write(), turns.write(), turns.read():
        pass
