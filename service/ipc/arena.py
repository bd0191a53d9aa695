"""Shared memory for item arrays: the front writes each decoded item once, the core reads it where it lies.

A front's `Arena` is one file in /dev/shm (tmpfs), mapped by the front (read-write) and by the core (read-only,
`ArenaView`). Its space is reserved when it is made (posix_fallocate), so a full /dev/shm fails at start-up with
a message instead of killing the process with SIGBUS on a later write; the file is unlinked as soon as the core
has mapped it, so nothing is left behind however the processes end. A block is handed out on the front's event
loop and given back when the core has answered the request that read it. A full arena is not an error: the
caller sends that item inside the message instead.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import secrets
import tempfile
from pathlib import Path

import numpy as np

from service.ipc.wire import ArrayRef

ALIGN = 64  # cache-line aligned blocks: a row copy starts on a line


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def shm_directory() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class Arena:
    """Front side: allocate, write, free. First fit over a sorted free list; neighbours merge when freed."""

    def __init__(self, size: int, directory: Path | None = None) -> None:
        self.size = _aligned(size)
        self.path = (directory or shm_directory()) / f"jepa-serve-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.size)  # reserve now: ENOSPC here, never SIGBUS later
            self._map = mmap.mmap(fd, self.size)
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)
        self._starts: list[int] = [0]  # free blocks, sorted by offset
        self._sizes: dict[int, int] = {0: self.size}
        self.used = 0

    def put(self, array: np.ndarray) -> ArrayRef | None:
        """Copy `array` into a free block; None when no block is large enough."""
        offset = self._allocate(_aligned(max(array.nbytes, 1)))
        if offset is None:
            return None
        view = np.ndarray(array.shape, array.dtype, buffer=self._map, offset=offset)
        view[...] = array
        return ArrayRef(offset, tuple(array.shape), array.dtype.str)

    def free(self, ref: ArrayRef) -> None:
        self._release(ref.offset, _aligned(max(ref.nbytes, 1)))

    def _allocate(self, n: int) -> int | None:
        for i, start in enumerate(self._starts):
            size = self._sizes[start]
            if size < n:
                continue
            del self._sizes[start]
            if size == n:
                del self._starts[i]
            else:
                self._starts[i] = start + n
                self._sizes[start + n] = size - n
            self.used += n
            return start
        return None

    def _release(self, offset: int, n: int) -> None:
        self.used -= n
        i = bisect.bisect_left(self._starts, offset)
        if i < len(self._starts) and self._starts[i] == offset + n:  # merge with the block after
            n += self._sizes.pop(self._starts.pop(i))
        if i > 0 and (before := self._starts[i - 1]) + self._sizes[before] == offset:  # and the one before
            self._sizes[before] += n
            return
        self._starts.insert(i, offset)
        self._sizes[offset] = n

    def unlink(self) -> None:
        """Remove the file's name (both mappings stay valid): called once the core has mapped it."""
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self.unlink()
        with contextlib.suppress(BufferError):  # arrays still viewing it keep the mapping alive
            self._map.close()


class ArenaView:
    """Core side: a front's arena, mapped read-only; `array(ref)` is a view, no copy."""

    def __init__(self, path: str | Path, size: int) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.size = size

    def array(self, ref: ArrayRef) -> np.ndarray:
        if ref.offset < 0 or ref.offset + ref.nbytes > self.size:
            raise ValueError(f"array reference {ref} lies outside the arena of {self.size} bytes")
        return np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=self._map, offset=ref.offset)

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self._map.close()
