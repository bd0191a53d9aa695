"""An exclusive lock on a local data directory, held for the life of the process that serves it.

Two servers on one directory would each keep only their own writes in memory while both append to
the same write-ahead logs, and the first snapshot (at 64 MiB of log, or at a graceful stop) truncates
the other's acknowledged writes away. So the local backend takes `flock(LOCK_EX | LOCK_NB)` on
`<data_dir>/jepa-serve.lock` before it reads anything, and a second server refuses to start.

flock belongs to the open file, so the kernel releases it when the holder dies, kill -9 included: a
crashed server never leaves a stale lock behind. The holder writes its pid into the file only so that
the refusal can name it; the pid is not what is locked.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_FILE = "jepa-serve.lock"
ORPHAN_WAIT_S = 10.0


class DataDirLocked(RuntimeError):
    """Another process holds the data directory."""

    def __init__(self, data_dir: Path, holder_pid: str) -> None:
        self.data_dir = data_dir
        self.holder_pid = holder_pid
        super().__init__(
            f"data directory {data_dir} is in use by another jepa-serve process (pid {holder_pid}); "
            "two servers on one directory lose each other's writes: stop that one, or give this one "
            "its own JEPA_DATA_DIR (or use JEPA_STORAGE=redis to share collections between replicas)"
        )


class DataDirLock:
    """`DataDirLock.acquire(path)` or raise `DataDirLocked`; `release()` (or process exit) frees it."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path, orphan_wait_s: float = ORPHAN_WAIT_S) -> DataDirLock:
        """The lock, or DataDirLocked at once when the server that took it is alive. When that server is gone
        (kill -9) its core process, which holds a duplicate, is being killed with it and lets go within moments:
        wait for that, up to `orphan_wait_s`, so that an immediate restart is not refused."""
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a child process (a spawned tool) must not inherit, and so prolong, the lock.
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + orphan_wait_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    if _alive(holder) or time.monotonic() > deadline:
                        raise DataDirLocked(data_dir, holder) from None
                    time.sleep(0.05)  # a retry interval while a dead server's last child exits
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(data_dir, fd)

    def __reduce__(self):
        """Sent to a child process (the core) as a duplicate of the descriptor: the same open file, so the same
        lock, held for as long as any holder lives."""
        from multiprocessing.reduction import DupFd

        if self._fd is None:
            raise ValueError("a released lock cannot be handed on")
        return (_inherited, (self.data_dir, DupFd(self._fd)))

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)  # closing the only descriptor of the open file drops the flock


def _inherited(data_dir: Path, duplicate) -> DataDirLock:
    return DataDirLock(data_dir, duplicate.detach())


def _alive(pid: str) -> bool:
    """Whether the process named in the lock file still exists (an unreadable name counts as alive)."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
