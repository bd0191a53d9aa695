"""The manifest contract: what the reader accepts, what the writer refuses, defaults defined once."""

import json

import pytest
from pydantic import ValidationError

from contract import DEFAULT_SURPRISE_THRESHOLD, SCHEMA_VERSION, Manifest, SurpriseSpec
from tests.support.fake_repository import write_fake_entry


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    entry = write_fake_entry(tmp_path_factory.mktemp("repo"))
    return json.loads((entry / "manifest.json").read_text())


def test_the_reader_ignores_fields_it_does_not_know_and_the_writer_refuses_them(written):
    newer = {**written, "added_by_a_newer_exporter": {"x": 1}}
    assert Manifest.model_validate(newer) == Manifest.model_validate(written)
    with pytest.raises(ValidationError):
        Manifest.model_validate(newer, extra="forbid")  # how export/pipeline.py validates what it writes


def test_another_schema_version_is_refused(written):
    assert written["schema_version"] == SCHEMA_VERSION
    with pytest.raises(ValidationError):
        Manifest.model_validate({**written, "schema_version": SCHEMA_VERSION + 1})


def test_the_surprise_threshold_default_is_the_contracts():
    assert SurpriseSpec(mean=0.1, std=0.2).threshold == DEFAULT_SURPRISE_THRESHOLD == 3.0
