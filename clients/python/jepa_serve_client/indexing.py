"""index_folder: a folder of images and videos into a collection, in batches, resumable.

- Files are found by suffix (images: .png .jpg .jpeg .webp .bmp .gif .tif .tiff; videos: .mp4 .m4v .mov .webm
  .mkv .avi); hidden files and folders (a name starting with ".") are left out, anything else is skipped and
  reported.
- A point's id is the file's path relative to the folder, with "/" between folders (the SHA-256 of it when longer
  than the server's 256 characters), so the same file always lands on the same point.
- Its metadata: `path` (that relative path), `size` (bytes), `mtime` (seconds since the epoch), `kind` ("image" or
  "video"), plus what `extra_metadata(path)` returns.
- Resumable: a file whose point is already stored with the same size and mtime is skipped; a changed one is
  embedded again. Run it again after an interruption and only what is missing is sent.
- A file the server refuses (an unreadable image, a video too long) is reported with the server's reason and the
  rest of its batch is sent again without it; nothing else is lost. A server that cannot be reached stops the run
  (`interrupted`), every batch not sent left for the next run.

Each batch is one `Operation` (the client's generator of HTTP calls, see client.py), so `Client` and
`AsyncClient` run the same code, with at most `concurrency` batches in flight.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jepa_serve_client.arrays import VIDEO_SUFFIXES
from jepa_serve_client.errors import JepaServeError, PointNotFound, TransportError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_ID_CHARS = 256  # the server's limit on a point id
ALREADY_INDEXED = "already indexed (same size and mtime)"
UNSUPPORTED = "not an image or video (by its suffix)"


@dataclass(frozen=True)
class FileEntry:
    path: Path
    relative: str  # posix, relative to the indexed folder
    kind: str  # "image" | "video"
    size: int
    mtime: float  # seconds since the epoch, to the millisecond

    @property
    def id(self) -> str:
        return point_id(self.relative)

    def metadata(self) -> dict[str, Any]:
        return {"path": self.relative, "size": self.size, "mtime": self.mtime, "kind": self.kind}


def point_id(relative: str) -> str:
    """The point id of a file: its relative path, or "sha256:<hex>" of it when too long for an id."""
    if len(relative) <= MAX_ID_CHARS:
        return relative
    return "sha256:" + hashlib.sha256(relative.encode()).hexdigest()


def kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def scan(root: str | os.PathLike, recursive: bool = True) -> tuple[list[FileEntry], list[tuple[str, str]]]:
    """The media files under root, sorted by relative path, and the other files as (relative path, reason)."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    entries, skipped = [], []
    for path in sorted(_files(root, recursive)):
        relative = path.relative_to(root).as_posix()
        kind = kind_of(path)
        if kind is None:
            skipped.append((relative, UNSUPPORTED))
            continue
        stat = path.stat()
        entries.append(FileEntry(path, relative, kind, stat.st_size, round(stat.st_mtime, 3)))
    return entries, skipped


def _files(root: Path, recursive: bool) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        yield from (Path(folder) / name for name in files if not name.startswith("."))


@dataclass
class BatchOutcome:
    indexed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: str | None = None  # the server could not be reached: stop sending

    @property
    def done(self) -> int:
        return len(self.indexed) + len(self.skipped) + len(self.failed)


@dataclass
class IndexReport:
    """What index_folder did: relative paths indexed, skipped and failed (with reasons); `interrupted` says why
    the run stopped early, `not_attempted` how many files it left for the next run."""

    collection: str
    root: str
    indexed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: str | None = None
    not_attempted: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and self.interrupted is None

    def add(self, outcome: BatchOutcome) -> None:
        self.indexed += outcome.indexed
        self.skipped += outcome.skipped
        self.failed += outcome.failed
        self.interrupted = self.interrupted or outcome.interrupted


def reason(error: JepaServeError) -> str:
    return f"{error.code}: {error.message}" if error.status else str(error)


def too_large(entry: FileEntry, limits: dict[str, int]) -> str | None:
    """Refused before sending: the server's byte limit for the file's kind."""
    limit = limits.get("max_video_bytes" if entry.kind == "video" else "max_image_bytes")
    if limit is not None and entry.size > limit:
        return f"payload_too_large: {entry.size} bytes; the server takes {entry.kind}s up to {limit}"
    return None


def index_batch(ops: Any, collection: str, batch: Sequence[FileEntry],
                extra_metadata: Callable[[Path], dict[str, Any]] | None):
    """One batch as an Operation: skip what is stored unchanged, upsert the rest, dropping refused files."""
    outcome = BatchOutcome()
    try:
        limits = yield from ops.server_limits()
        todo = []
        for entry in batch:
            if (yield from _stored_unchanged(ops, collection, entry)):
                outcome.skipped.append((entry.relative, ALREADY_INDEXED))
            elif (refused := too_large(entry, limits)) is not None:
                outcome.failed.append((entry.relative, refused))
            else:
                todo.append(entry)
        while todo:
            todo = yield from _upsert(ops, collection, todo, extra_metadata, outcome)
    except TransportError as exc:
        outcome.interrupted = reason(exc)
    return outcome


def _stored_unchanged(ops: Any, collection: str, entry: FileEntry):
    try:
        point = yield from ops.get_point(collection, entry.id)
    except PointNotFound:
        return False
    stored = point.metadata
    return stored.get("size") == entry.size and stored.get("mtime") == entry.mtime


def _upsert(ops: Any, collection: str, todo: list[FileEntry], extra_metadata: Any, outcome: BatchOutcome):
    """One try at storing `todo`; returns what is left to try (all but a refused file), [] when done."""
    metadata = [{**(extra_metadata(e.path) if extra_metadata else {}), **e.metadata()} for e in todo]
    try:
        yield from ops.upsert(collection, [e.id for e in todo], vectors=None, inputs=[e.path for e in todo],
                              metadata=metadata, space_id=None)
    except TransportError:
        raise
    except JepaServeError as error:
        if error.index is None or not 0 <= error.index < len(todo):  # about the whole batch: all of it failed
            outcome.failed += [(e.relative, reason(error)) for e in todo]
            return []
        outcome.failed.append((todo[error.index].relative, reason(error)))
        return todo[:error.index] + todo[error.index + 1:]
    outcome.indexed += [e.relative for e in todo]
    return []


def batches(entries: Sequence[FileEntry], size: int) -> list[list[FileEntry]]:
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    return [list(entries[i:i + size]) for i in range(0, len(entries), size)]


def progress_bar(total: int, collection: str, enabled: bool | None) -> tqdm:
    """Files done of total, with the rate and the time left; `enabled` None = when stderr is a terminal."""
    return tqdm(total=total, unit="file", desc=f"indexing into {collection}",
                disable=None if enabled is None else not enabled, dynamic_ncols=True)


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 3)
