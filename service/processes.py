"""What every child process of the supervisor does first."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
M_MMAP_THRESHOLD = -3  # glibc mallopt parameters
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


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


def process_alive(pid: int) -> bool:
    """Whether `pid` runs: not gone, and not a zombie (a child that exited and its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def use_uvloop() -> None:
    """uvloop's event loop when installed (uvicorn[standard] brings it): cheaper per message than asyncio's."""
    try:
        import uvloop
    except ImportError:
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def return_large_blocks() -> None:
    """Serve every allocation of 4 MiB or more from its own mapping, returned to the system when freed (glibc's
    mallopt). By default glibc raises that threshold after the first large free, and later image buffers come
    from the heap, which keeps them: each front would hold on to the memory of the largest image it ever
    decoded (measured: four 6000 x 6000 WebPs over two fronts left 1.4 GB resident). No effect elsewhere."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        ctypes.CDLL(libc_name).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
