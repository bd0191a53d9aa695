"""At first start the server turns ready once every front holds its models (a readiness probe that reaches the first
front up must not call ready a server whose other fronts are still importing), and a front restarted later does not
take the server out of readiness; a front whose core exited before it could connect gives up at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from service.core import CoreRequests
from service.front import CoreView
from service.ipc.link import CoreGone, CoreLink
from service.ipc.remote import RemoteStore
from service.processes import process_alive


def front(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, announced={})


def test_the_core_says_the_fronts_are_up_once_every_front_has_built_and_stays_so():
    changes: list[int] = []
    requests = CoreRequests(SimpleNamespace(on_change=lambda: changes.append(1)), None, fronts_wanted=2)
    first, second = front("0"), front("1")
    requests.built(first)
    requests.built(first)  # the same front twice (restarted) is still one front
    assert (requests.fronts_up, changes) == (False, [])
    requests.built(second)
    assert (requests.fronts_up, changes) == (True, [1])  # the change is broadcast once
    requests.disconnected(first)
    requests.built(first)
    assert (requests.fronts_up, changes) == (True, [1])


def view_state(phase: str, fronts_up: bool) -> dict:
    return {"phase": phase, "retrying": None, "models": {}, "failures": {}, "recovered": True,
            "collections_failed": {}, "fronts_up": fronts_up}


@pytest.mark.parametrize(("built", "fronts_up", "shown"), [
    (False, True, "warming"), (True, False, "warming"), (True, True, "ready")])
def test_a_front_shows_ready_only_when_it_and_every_other_front_are_up(built, fronts_up, shown):
    phases: list[str] = []
    services = SimpleNamespace(store=RemoteStore(None), models=SimpleNamespace(failures={}),
                               set_phase=lambda phase, retrying=None: phases.append(phase))
    view = CoreView(services, None, None)
    view._built = built
    view.apply(view_state("ready", fronts_up))
    assert phases == [shown]


def test_process_alive_tells_a_running_process_from_an_exited_one():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    assert process_alive(child.pid)
    child.stdin.close()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet: a zombie
    assert not process_alive(child.pid)
    child.wait()
    assert not process_alive(child.pid)


async def test_a_front_stops_waiting_for_a_core_that_exited(tmp_path):
    link = CoreLink(tmp_path / "core.sock", on_state=lambda state: None)
    with pytest.raises(CoreGone, match="exited"):
        await asyncio.wait_for(link.connect({"front": 0}, timeout_s=60, core_alive=lambda: False), 5)
