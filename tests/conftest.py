"""Shared fixtures: model repositories (the torch-free fake, the exported demo), real photographs as PNG bytes.

HTTP tests serve `model_repository`: the demo export unless a module overrides the fixture with
`fake_repository` (no PyTorch), as the edge tests do.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`jepa-export demo` into a fresh repository (in process; a few seconds)."""
    from export.demo import export_demo
    from export.pipeline import ExportOptions

    root = tmp_path_factory.mktemp("model_repository")
    export_demo(ExportOptions(name="demo", out=root), log=lambda _: None)
    return root


@pytest.fixture(scope="session")
def fake_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with one tiny linear encoder written without PyTorch (tests/support/fake_repository.py)."""
    from tests.support.fake_repository import write_fake_entry

    root = tmp_path_factory.mktemp("fake_repository")
    write_fake_entry(root)
    return root


@pytest.fixture
def model_repository(demo_repository: Path) -> Path:
    """What `client` and `settings_factory` serve; override per module with `fake_repository`."""
    return demo_repository


def photo(name: str) -> np.ndarray:
    """A real photograph shipped inside scikit-image's wheel (RGB uint8)."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


def png_bytes(image: np.ndarray | Image.Image, size: tuple[int, int] | None = None) -> bytes:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if size is not None:
        pil = pil.resize(size)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Four real photos as PNG files, thumbnailed so requests stay small."""
    return {name: png_bytes(photo(name), (160, 120)) for name in ("astronaut", "coffee", "chelsea", "rocket")}


@pytest.fixture
def settings_factory(model_repository: Path, tmp_path: Path):
    from service.settings import Settings

    def make(**overrides) -> Settings:
        values = {"model_repository": model_repository, "data_dir": tmp_path / "data", "max_queue_delay_ms": 1.0}
        values.update(overrides)
        return Settings(**values)

    return make


@contextmanager
def serving(settings) -> Iterator:
    """An in-process app (real lifespan) once its background start-up has finished."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(settings.config)
    with TestClient(app) as test_client:
        # Read the phase directly: /readyz may need a key when auth is on.
        deadline = time.monotonic() + 60
        while app.state.services.phase not in ("ready", "failed"):
            assert time.monotonic() < deadline, "app did not finish starting in 60 s"
            time.sleep(0.01)
        yield test_client


@pytest.fixture
def client(settings_factory) -> Iterator:
    with serving(settings_factory()) as test_client:
        yield test_client
