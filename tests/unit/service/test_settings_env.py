"""Settings from the environment: one line for a bad value, a warning for an unknown JEPA_* variable, lists as CSV."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings, SettingsError, did_you_mean, load_settings, unknown_variables

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("name", "value", "accepted"), [
    ("JEPA_MAX_BATCH_SIZE", "abc", "accepted: an integer >= 1 and <= 4096"),
    ("JEPA_PROVIDERS", "gpu", "accepted: one of auto, cpu, cuda, tensorrt, tensorrt_native"),
    ("JEPA_PREFERRED_BATCH_SIZES", "4,x", "accepted: a list of integers: 4,8,16 or [4,8,16]"),
    ("JEPA_FSYNC", "maybe", "accepted: true or false"),
])
def test_a_bad_value_is_one_line_naming_variable_value_and_what_is_accepted(monkeypatch, name, value, accepted):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"{name}={value!r} is invalid: ")
    assert line.endswith(accepted)


@pytest.mark.parametrize(("env", "line"), [
    ({"JEPA_MAX_BATCH_SIZE": "abc"},
     "JEPA_MAX_BATCH_SIZE='abc' is invalid: Input should be a valid integer, unable to parse string as an integer; "
     "accepted: an integer >= 1 and <= 4096"),
    # two settings that cannot hold together (service/config.py). This rule lived in BatchPolicy, met only once
    # the core was loading models, where start-up failed with a traceback
    ({"JEPA_PREFERRED_BATCH_SIZES": "4,32", "JEPA_MAX_BATCH_SIZE": "16"},
     "JEPA_PREFERRED_BATCH_SIZES=4,32 has 32 outside 1..JEPA_MAX_BATCH_SIZE=16 (a batch is padded up to one of "
     "them); drop it or raise the second"),
])
def test_jepa_serve_exits_with_that_line_and_no_traceback(tmp_path: Path, env, line):
    done = subprocess.run([str(BIN / "jepa-serve"), "--port", "1"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"jepa-serve: {line}"]


@pytest.mark.parametrize(("value", "expected"), [("4,8,16", (4, 8, 16)), ("[4, 8]", (4, 8)), (" 2 ", (2,)), ("", ())])
def test_list_settings_take_commas_or_json(monkeypatch, value, expected):
    monkeypatch.setenv("JEPA_PREFERRED_BATCH_SIZES", value)
    assert Settings().preferred_batch_sizes == expected


def test_unknown_jepa_variables_are_found():
    environ = {"JEPA_MAX_BATCH_SIZ": "8", "JEPA_MAX_BATCH_SIZE": "8", "HOME": "/root", "jepa_fsynk": "0"}
    assert unknown_variables(environ) == ["JEPA_MAX_BATCH_SIZ", "jepa_fsynk"]


@pytest.mark.parametrize(("name", "meant"), [
    ("JEPA_MAX_BATCH_SIZ", "JEPA_MAX_BATCH_SIZE"),
    ("jepa_fsynk", "JEPA_FSYNC"),
    ("JEPA_UI_MEDIA_DIRS", "JEPA_UI_MEDIA_DIR"),
    ("JEPA_REQUEST_TIMEOUT", "JEPA_REQUEST_TIMEOUT_MS"),
    ("JEPA_SOMETHING_ELSE_ENTIRELY", None),
])
def test_a_misspelt_variable_gets_the_setting_it_most_likely_meant(name, meant):
    assert did_you_mean(name) == meant


def test_jepa_serve_warns_about_unknown_variables_at_start(monkeypatch, capsys, tmp_path: Path):
    import service.cli

    started = []

    def run_instead(supervisor) -> int:  # the supervisor is built as jepa-serve builds it, but starts nothing
        started.append(supervisor.port)
        return 0

    monkeypatch.setattr(service.cli.Supervisor, "run", run_instead)
    monkeypatch.setenv("JEPA_MAX_BATCH_SIZ", "8")
    monkeypatch.setenv("JEPA_LOG_FORMAT", "text")
    assert service.cli.main(["--port", "8123", "--data-dir", str(tmp_path / "d")]) == 0
    assert started == [8123]
    assert "JEPA_MAX_BATCH_SIZ is not a jepa-serve setting: ignored (did you mean JEPA_MAX_BATCH_SIZE?)" in \
        capsys.readouterr().err


def test_plan_samples_above_the_predictor_batch_are_refused_in_one_line():
    with pytest.raises(SettingsError) as caught:
        load_settings({}, max_plan_samples=2048, predictor_max_batch_size=1024)
    line = str(caught.value)
    assert "\n" not in line
    assert "JEPA_MAX_PLAN_SAMPLES=2048 is above JEPA_PREDICTOR_MAX_BATCH_SIZE=1024" in line
    assert Settings(predictor_max_batch_size=64).max_plan_samples == 64  # the default follows the batch size
    assert Settings(predictor_max_batch_size=64, max_plan_samples=32).max_plan_samples == 32
