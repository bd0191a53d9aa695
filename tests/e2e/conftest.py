"""A real `jepa-serve` process per test module, started the way `make serve` starts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import running_server


@pytest.fixture(scope="module")
def server(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(demo_repository, tmp_path_factory.mktemp("serve")) as running:
        yield running.url
