"""What every child process of the supervisor does first."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


def become_child(name: str, parent_pid: int) -> None:
    """Name this process (`ps -o comm`, top: jepa-core, jepa-front-0) and ask the kernel for SIGKILL when the
    supervisor dies (kill -9 included), so no child outlives it holding the port, the data directory or a GPU.
    If the supervisor is already gone, go now."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def use_uvloop() -> None:
    """uvloop's event loop when installed (uvicorn[standard] brings it): cheaper per message than asyncio's."""
    try:
        import uvloop
    except ImportError:
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
