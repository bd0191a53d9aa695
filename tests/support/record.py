"""Figures a test saw, for docs/reliability.md: appended as JSON lines when JEPA_RELIABILITY_RECORD names a file.

`python -m loadtests.reliability` sets it, runs the fault and hostile-input tests, and turns the lines
into the table; in a plain `make test` run nothing is written.
"""

from __future__ import annotations

import json
import os
from typing import Any


def record(scenario: str, **figures: Any) -> None:
    path = os.environ.get("JEPA_RELIABILITY_RECORD")
    if not path:
        return
    with open(path, "a") as handle:
        handle.write(json.dumps({"scenario": scenario, **figures}) + "\n")
