"""The project as a wheel, the way a non-editable install (`pip install .`, the Docker image) gets it: the wheel
carries the demo weights, and `jepa-export demo` then `jepa-serve` run from the installed wheel alone.

The wheel is built without build isolation or network (setuptools of the test environment) and installed with
--no-deps into a fresh virtualenv; the dependencies (torch, onnxruntime, ...) are borrowed from the test
environment through a path entry after the new venv's own site-packages, so no code of the source tree (or of its
editable install, whose finder is never loaded) is importable: only what the wheel installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from loadtests.server import wait_ready
from tests.deploy.tools import ROOT
from tests.support.toolkit import free_port, stop

pytestmark = pytest.mark.slow

# what the wheel is built from: the metadata files and every package pyproject.toml includes
PACKAGES = [
    p.rstrip("*")
    for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
]
SOURCES = ["pyproject.toml", "README.md", *PACKAGES]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the jepa-serve wheel (deps borrowed, see the module docstring); returns its bin/."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in SOURCES:  # a copy: building in the tree would leave build/ and *.egg-info in it
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            str(work / "dist"),
            str(source),
        ],
        work,
    )
    wheel = next((work / "dist").glob("jepa_serve-*.whl"))
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work)
    python = venv / "bin" / "python"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        work,
    )
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "zz_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def test_wheel_ships_the_demo_weights(installed: Path):
    wheel = next((installed.parent.parent / "dist").glob("jepa_serve-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "models/demo/weights/demo.safetensors" in names, [n for n in names if n.startswith("models/")]
    ui = {f"service/api/ui_assets/{name}" for name in ("index.html", "ui.js", "ui.css")}  # the /ui page
    assert ui <= set(names), [n for n in names if n.startswith("service/api/")]


def test_export_and_serve_from_the_installed_wheel(installed: Path, tmp_path: Path):
    venv = installed.parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = run(
        [
            str(installed / "python"),
            "-c",
            "import export, models.demo.model as m, service; "
            "print(export.__file__, m.DEFAULT_WEIGHTS, service.__file__)",
        ],
        tmp_path,
        env,
    )
    assert all(path.startswith(str(venv)) for path in where.split()), f"imported from outside the wheel's venv: {where}"

    run([str(installed / "jepa-export"), "demo", "--name", "demo", "--out", str(tmp_path / "repo")], tmp_path, env)
    assert (tmp_path / "repo" / "demo" / "manifest.json").is_file()

    port = free_port()
    log = tmp_path / "serve.log"
    env |= {
        "JEPA_MODEL_REPOSITORY": str(tmp_path / "repo"),
        "JEPA_DATA_DIR": str(tmp_path / "data"),
        "JEPA_INTRA_OP_THREADS": "1",
        "JEPA_DECODE_THREADS": "1",
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(installed / "jepa-serve"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log, 90)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["models"] == {"demo": "ready"}, ready.text
        for page in ("/ui", "/ui/assets/ui.js"):  # read from the installed package's data
            assert httpx.get(f"http://127.0.0.1:{port}{page}", timeout=5).status_code == 200, page
    finally:
        stop(process)
