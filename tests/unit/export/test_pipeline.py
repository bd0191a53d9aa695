"""The one export pipeline: every family writes its entry through write_entry, with a typed manifest."""

import json
import re

import pytest
import torch
from pydantic import ValidationError

from contract import ComponentSpec
from export.pipeline import ExportOptions, export_component, write_entry
from service.repository import read_entry
from tests.support.paths import ROOT


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # the ONNX input is named after the argument
        return self.linear(pixel_values)


def _fields(component) -> dict:
    return {
        "family": "toy", "checkpoint_sha256": "0" * 64, "space_id": "toy-1",
        "input": {"kind": "image", "layout": "NCHW", "image_size": [2, 2], "mean": [0, 0, 0], "std": [1, 1, 1],
                  "patch_size": 1},
        "output": {"dim": 3, "token_grid": [1], "pooling": "none"},
        "components": {"encoder": component},
    }


def test_an_entry_is_written_typed_and_read_back_by_the_service(tmp_path):
    torch.manual_seed(0)
    module = Toy().eval()
    options = ExportOptions(name="toy", out=tmp_path, fp16=False)
    feeds = {"pixel_values": torch.randn(4, 4).numpy()}

    def build(folder):
        return _fields(export_component(module, feeds, ("pooled",), folder, "encoder", options, log=lambda _: None))

    entry = read_entry(write_entry(options, build, log=lambda _: None))
    assert entry.manifest.components["encoder"].files == {"fp32": "encoder.onnx"}
    assert entry.manifest.tools
    assert entry.manifest.created_at
    written = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert "predictor" not in written  # only what the exporter set: the reader fills in the defaults


def test_a_misspelt_manifest_field_fails_the_export_and_leaves_no_entry(tmp_path):
    options = ExportOptions(name="toy", out=tmp_path)
    component = ComponentSpec(files={"fp32": "encoder.onnx"}, inputs={"x": [-1, 4]}, outputs=["pooled"])
    with pytest.raises(ValidationError, match="checkpoint_sha265"):
        write_entry(options, lambda folder: {**_fields(component), "checkpoint_sha265": "typo"}, log=lambda _: None)
    assert not (tmp_path / "toy").exists()


def test_only_the_pipeline_writes_manifests():
    writers = [p.name for p in (ROOT / "export").glob("*.py") if re.search(r"\bwrite_manifest\(", p.read_text())]
    assert sorted(writers) == ["manifest.py", "pipeline.py"]  # the definition and its one caller
