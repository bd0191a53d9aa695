"""Write-ahead log: one checksummed JSON line per write, fsynced before the write is acknowledged.

A torn last line (a crash mid-append) was never acknowledged, so recovery
drops it; a bad checksum anywhere else is corruption and stops recovery.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class WalCorrupted(RuntimeError):
    pass


def encode_vectors(vectors: np.ndarray) -> dict[str, Any]:
    return {"shape": list(vectors.shape), "data": base64.b64encode(np.ascontiguousarray(vectors, np.float32).tobytes()).decode()}


def decode_vectors(blob: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob["data"]), dtype=np.float32).reshape(blob["shape"])


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = path
        self._fsync = fsync
        # Unbuffered: a record that failed to write (disk full) must not wait in a buffer, to be written
        # ahead of the next record once space returns and so make a refused write durable after all.
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (held open for the collection's lifetime)

    @property
    def size_bytes(self) -> int:
        return self._file.tell()

    def append(self, record: dict[str, Any]) -> None:
        """Durable when this returns (with fsync on); raises OSError (e.g. disk full) otherwise."""
        body = json.dumps(record, separators=(",", ":")).encode()
        line = b"%08x %s\n" % (zlib.crc32(body), body)
        start = self._file.tell()
        try:
            view = memoryview(line)
            while view:  # a raw write may take part of the line
                view = view[self._file.write(view):]
            if self._fsync:
                os.fsync(self._file.fileno())
        except OSError:
            # Leave no partial record behind for a later append to follow (the caller answers "nothing applied").
            os.ftruncate(self._file.fileno(), start)
            self._file.seek(start)
            raise

    def reset(self) -> None:
        """Empty the log (after a snapshot made its records redundant)."""
        self._file.truncate(0)
        self._file.seek(0)
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def replay(path: Path) -> Iterator[dict[str, Any]]:
        if not path.exists():
            return
        data = path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for number, line in enumerate(complete, start=1):
            crc, _, body = line.partition(b" ")
            try:
                ok = int(crc, 16) == zlib.crc32(body)
            except ValueError:
                ok = False
            if not ok:
                if number == len(complete) and not tail:
                    break  # torn final line: never acknowledged
                raise WalCorrupted(f"{path}: record {number} fails its checksum")
            yield json.loads(body)
        if tail:
            # Unterminated final record: the crash came before its fsync returned.
            with open(path, "r+b") as handle:
                handle.truncate(len(data) - len(tail))
