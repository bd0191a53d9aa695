"""What milvus-lite cannot say over its API: whether a collection's rows are really under its index.

milvus-lite answers `describe_index` with every row "indexed" at once, while it builds the index of sealed
segments in a background thread and scans the rest exactly. A recall test or a benchmark that searched
before that build would measure a brute-force scan. This reads the embedded engine's own state (its
internals, so pinned to milvus-lite 3.x; for tests and benchmarks only, never the service).
"""

from __future__ import annotations

import os


def indexed_rows(uri: str, milvus_collection: str, timeout: float = 600) -> dict[str, int]:
    """Wait for the embedded engine's background index builds; rows per index class attached to sealed segments
    (e.g. {"FaissHnswIndex": 20000}; FLAT is milvus-lite's BruteForceIndex). Buffered rows are in none."""
    from milvus_lite.server_manager import server_manager_instance

    _, db, _ = server_manager_instance._servers[os.path.abspath(uri)]
    collection = db._collections[("default", milvus_collection)]
    collection._wait_for_bg(timeout)
    rows: dict[str, int] = {}
    for segment in collection._segments_snapshot():
        index = segment.indexes.get("vector")
        if index is not None:
            rows[type(index).__name__] = rows.get(type(index).__name__, 0) + segment.num_rows
    return rows
