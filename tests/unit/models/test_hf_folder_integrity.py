"""Hugging Face folders with missing, extra or mis-shaped tensors, or unreadable weight files, are refused by name.

transformers' `from_pretrained` initialises a missing weight at random and only logs it, and drops an
unexpected one: such a folder used to export with exit code 0 and be served as another model (served
tokens vs the intact model: cosine -0.34). Every case here must raise the project's named error, and the
export must write nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.checkpoints import CheckpointMismatch, CheckpointUnreadable, load_checkpoint
from tests.jepa_checkpoints import tiny_ijepa_folder, tiny_vjepa2_folder
from tests.support.record import record

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    tiny_ijepa_folder(root / "ijepa")
    tiny_vjepa2_folder(root / "vjepa2")
    return {"ijepa": root / "ijepa", "vjepa2": root / "vjepa2"}


def edited(source: Path, target: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    shutil.copytree(source, target)
    state = load_file(target / WEIGHTS)
    edit(state)
    save_file(state, target / WEIGHTS, metadata={"format": "pt"})
    return target


def drop(key: str):
    return lambda state: state.pop(key)


def add(key: str):
    return lambda state: state.__setitem__(key, torch.zeros(3))


def reshape(key: str):
    return lambda state: state.__setitem__(key, torch.zeros(7))


# (family, part, what is wrong, edit, the error's list that must name it, the key it must name)
BROKEN = [
    ("ijepa", "encoder", "missing", drop("embeddings.patch_embeddings.projection.weight"), "missing",
     "embeddings.patch_embeddings.projection.weight"),
    ("ijepa", "encoder", "unexpected", add("encoder.layer.0.attention.extra"), "unexpected",
     "encoder.layer.0.attention.extra"),
    ("ijepa", "encoder", "wrong shape", reshape("layernorm.weight"), "mis_shaped", "layernorm.weight (7,) != (32,)"),
    ("vjepa2", "encoder", "missing", drop("encoder.layer.1.mlp.fc2.bias"), "missing", "encoder.layer.1.mlp.fc2.bias"),
    ("vjepa2", "encoder", "unexpected", add("encoder.layer.0.extra"), "unexpected", "encoder.layer.0.extra"),
    ("vjepa2", "encoder", "wrong shape", reshape("encoder.layernorm.bias"), "mis_shaped",
     "encoder.layernorm.bias (7,) != (64,)"),
    ("vjepa2", "predictor", "missing", drop("predictor.proj.weight"), "missing", "predictor.proj.weight"),
    ("vjepa2", "predictor", "unexpected", add("predictor.layer.0.extra"), "unexpected", "predictor.layer.0.extra"),
    ("vjepa2", "predictor", "wrong shape", reshape("predictor.layernorm.weight"), "mis_shaped",
     "predictor.layernorm.weight (7,) != (32,)"),
]


@pytest.mark.parametrize(("family", "part", "wrong", "edit", "listed_as", "key"), BROKEN,
                         ids=[f"{f}-{p}-{w}" for f, p, w, *_ in BROKEN])
def test_a_folder_with_a_wrong_tensor_is_refused_naming_it(intact, tmp_path, family, part, wrong, edit, listed_as, key):
    folder = edited(intact[family], tmp_path / "broken", edit)
    with pytest.raises(CheckpointMismatch) as refused:
        load_checkpoint(folder, family=family)
    # transformers may report a key under its own current name (e.g. 'encoder.layer.0.' -> 'layers.0.'): the
    # distinctive end of the name must be there, and nothing else may be listed
    listed = getattr(refused.value, listed_as)
    assert len(listed) == 1 and listed[0].endswith(key.split(".", 3)[-1]), str(refused.value)
    assert listed[0] in str(refused.value)
    record("broken Hugging Face folder refused at export", case=f"{family} {part}: {wrong} key",
           refused="CheckpointMismatch")


@pytest.mark.parametrize("family", ["ijepa", "vjepa2"])
@pytest.mark.parametrize("damage", ["truncated", "not safetensors"])
def test_an_unreadable_weight_file_is_one_named_line(intact, tmp_path, family, damage):
    folder = tmp_path / "broken"
    shutil.copytree(intact[family], folder)
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * 64)
    with pytest.raises(CheckpointUnreadable) as refused:
        load_checkpoint(folder, family=family)
    message = str(refused.value)
    assert "\n" not in message and str(folder) in message and "model.safetensors" in message, message
    record("broken Hugging Face folder refused at export", case=f"{family}: {damage} model.safetensors",
           refused="CheckpointUnreadable")


def test_a_vjepa2_folder_without_any_predictor_weights_loads_the_encoder_alone(intact, tmp_path):
    def no_predictor(state):
        for key in [k for k in state if k.startswith("predictor.")]:
            del state[key]

    folder = edited(intact["vjepa2"], tmp_path / "encoder-only", no_predictor)
    loaded = load_checkpoint(folder, family="vjepa2")
    assert loaded.mask_predictor is None
    assert any("no predictor weights" in note for note in loaded.notes)
    assert load_checkpoint(intact["vjepa2"], family="vjepa2").mask_predictor is not None


def test_export_of_a_broken_folder_exits_1_and_writes_nothing(intact, tmp_path, capsys):
    from export.cli import main

    folder = edited(intact["ijepa"], tmp_path / "broken", drop("embeddings.patch_embeddings.projection.weight"))
    out = tmp_path / "repository"
    assert main(["ijepa", str(folder), "--name", "broken", "--out", str(out), "--no-fp16"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("jepa-export:") and "embeddings.patch_embeddings.projection.weight" in error, error
    assert not out.exists() or not any(out.iterdir())
