"""`jepa-serve` with nothing to serve stops (issue 23 item 12): JEPA_MODEL_REPOSITORY=/nonexistent used to leave
a server up with /readyz 503 `phase: failed` forever, said at info level, which no orchestrator restarts and no
operator notices. Now the process logs one error line that names the folder and why, and exits with status 1
(EXIT_STARTUP_FAILED); in process (tests, other ASGI servers) the app stays up, "failed"."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from service.app import EXIT_STARTUP_FAILED
from tests.conftest import serving
from tests.e2e.processes import BIN, free_port
from tests.support.record import record
from tests.support.toolkit import stop

pytestmark = pytest.mark.e2e


def run_until_exit(repository: Path, workdir: Path, bound_s: float = 60) -> tuple[int, str, float]:
    log = workdir / "server.log"
    env = {**os.environ, "JEPA_MODEL_REPOSITORY": str(repository), "JEPA_DATA_DIR": str(workdir / "data"),
           "JEPA_LOG_FORMAT": "text"}
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen([str(BIN / "jepa-serve"), "--host", "127.0.0.1", "--port", str(free_port())],
                                   cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        code = process.wait(bound_s)
    except subprocess.TimeoutExpired:
        stop(process)
        raise AssertionError(f"still running after {bound_s} s:\n{log.read_text()[-2000:]}") from None
    return code, log.read_text(), time.monotonic() - started


@pytest.mark.parametrize("case", ["missing folder", "empty folder", "no loadable model"])
def test_a_repository_with_nothing_to_serve_stops_the_server(tmp_path: Path, case: str):
    repository = tmp_path / "models"
    if case != "missing folder":
        repository.mkdir()
    if case == "no loadable model":
        (repository / "broken").mkdir()
        (repository / "broken" / "manifest.json").write_text("{not json")
    code, output, seconds = run_until_exit(repository, tmp_path)
    assert code == EXIT_STARTUP_FAILED == 1, (code, output[-2000:])
    errors = [line for line in output.splitlines() if " ERROR " in line and "no model to serve" in line]
    assert len(errors) == 1, output[-2000:]
    assert str(repository) in errors[0]
    expected = {"missing folder": "does not exist", "empty folder": "no model entry", "no loadable model": "broken"}
    assert expected[case] in errors[0], errors[0]
    assert "Traceback" not in output, output[-2000:]
    assert "did not stop in time" not in output, output[-2000:]  # the fronts stop with the core, none is killed
    record("start-up with no model to serve exits 1", case=case, refused=f"exit {code}",
           exited_after_s=round(seconds, 1))


def test_in_process_the_app_stays_up_failed(settings_factory, tmp_path: Path):
    with serving(settings_factory(model_repository=tmp_path / "nonexistent")) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["phase"] == "failed"
