"""models/checkpoints.py: every format loads onto our modules and reproduces its reference implementation."""

from pathlib import Path

import numpy as np
import pytest
import torch

from models.ac_predictor import block_causal_mask
from models.checkpoints import CheckpointMismatch, LoadOptions, UnknownCheckpoint, load_checkpoint
from models.ijepa import ijepa_sincos_positions
from tests.jepa_checkpoints import (
    cosine_rows,
    original_ijepa_file,
    original_vjepa2_file,
    reference,
    tiny_ijepa_folder,
    tiny_vjepa2_folder,
)

TINY = LoadOptions(heads=2, image_size=32, predictor_heads=2)


def test_hf_ijepa_folder_equals_transformers(tmp_path: Path):
    hf = tiny_ijepa_folder(tmp_path / "ijepa")
    loaded = load_checkpoint(tmp_path / "ijepa")
    assert (loaded.family, loaded.source_format) == ("ijepa", "hf-folder")
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        ref = hf(pixel_values=x).last_hidden_state
        pooled, tokens = loaded.encoder(x)
    assert tokens.shape == ref.shape == (3, 16, 32)
    assert cosine_rows(tokens, ref) >= 0.9999
    assert cosine_rows(pooled, ref.mean(dim=1)) >= 0.9999


def test_hf_vjepa2_folder_equals_transformers_for_video_and_image(tmp_path: Path):
    hf = tiny_vjepa2_folder(tmp_path / "vjepa2")
    loaded = load_checkpoint(tmp_path / "vjepa2")
    assert (loaded.family, loaded.source_format) == ("vjepa2", "hf-folder")
    assert loaded.mask_predictor is not None  # the mask predictor is loaded too (future prediction)
    video = torch.randn(2, 3, 4, 32, 32)  # ours: (B, C, T, H, W); HF: (B, T, C, H, W)
    image = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        ref = hf(pixel_values_videos=video.permute(0, 2, 1, 3, 4), skip_predictor=True).last_hidden_state
        pooled, frames, tokens = loaded.encoder(video)
        # HF repeats a single frame up to the tubelet; we take the image as a clip of 2 identical frames
        ref_image = hf(pixel_values_videos=image.unsqueeze(1), skip_predictor=True).last_hidden_state
        image_tokens = loaded.encoder(image.unsqueeze(2).repeat(1, 1, 2, 1, 1))[2]
    assert tokens.shape == ref.shape == (2, 2 * 16, 64)
    assert cosine_rows(tokens, ref) >= 0.9999
    assert cosine_rows(pooled, ref.mean(dim=1)) >= 0.9999
    assert cosine_rows(frames, ref.reshape(2, 2, 16, 64).mean(dim=2)) >= 0.9999
    assert cosine_rows(image_tokens, ref_image) >= 0.9999


def test_original_ijepa_reproduces_the_original_code_and_uses_target_encoder(tmp_path: Path):
    ref = original_ijepa_file(tmp_path / "IN1K-tiny.pth.tar")
    loaded = load_checkpoint(tmp_path / "IN1K-tiny.pth.tar", LoadOptions(heads=ref.config["heads"]))
    assert (loaded.family, loaded.source_format) == ("ijepa", "ijepa-original")
    assert loaded.encoder.config.image_size == 32 and loaded.encoder.config.depth == 2
    with torch.inference_mode():
        pooled, tokens = loaded.encoder(ref.inputs["pixels"])
    assert cosine_rows(tokens, ref.outputs["tokens"]) >= 0.9999
    assert cosine_rows(pooled, ref.outputs["tokens"].mean(dim=1)) >= 0.9999


def test_our_sincos_table_is_the_one_ijepa_saves():
    ref = reference("ijepa_original")
    saved = ref.groups["target_encoder"]["module.pos_embed"][0]
    torch.testing.assert_close(ijepa_sincos_positions(4, ref.config["dim"]), saved, atol=1e-6, rtol=0)


def test_original_vjepa2_ac_reproduces_the_original_code(tmp_path: Path):
    enc, ac = original_vjepa2_file(tmp_path / "vjepa2-ac-tiny.pt")
    loaded = load_checkpoint(tmp_path / "vjepa2-ac-tiny.pt", TINY)
    assert (loaded.family, loaded.source_format) == ("vjepa2_ac", "vjepa2-original")
    assert any("pos_embed" in note for note in loaded.notes)
    with torch.inference_mode():
        tokens = loaded.encoder(enc.inputs["video"])[2]
        predicted = loaded.predictor(ac.inputs["context"], ac.inputs["actions"], ac.inputs["states"])
    assert cosine_rows(tokens, enc.outputs["tokens"]) >= 0.9999
    assert cosine_rows(predicted, ac.outputs["predicted"]) >= 0.9999


def test_original_vjepa2_without_ac_predictor_is_plain_vjepa2(tmp_path: Path):
    enc, _ = original_vjepa2_file(tmp_path / "vitl-tiny.pt", with_predictor=False)
    loaded = load_checkpoint(tmp_path / "vitl-tiny.pt", TINY)
    assert loaded.family == "vjepa2" and loaded.predictor is None


def test_the_ac_predictor_is_block_causal(tmp_path: Path):
    """Changing the last step's frame, action and state must not change the predictions for earlier steps,
    and those equal a run with a shorter history (what a fixed-history export relies on)."""
    _, ac = original_vjepa2_file(tmp_path / "ac.pt")
    predictor = load_checkpoint(tmp_path / "ac.pt", TINY).predictor
    context, actions, states = (ac.inputs[k].clone() for k in ("context", "actions", "states"))
    per_step = 16
    with torch.inference_mode():
        before = predictor(context, actions, states)
        context[:, -per_step:] += 1.0
        actions[:, -1] += 1.0
        states[:, -1] -= 1.0
        after = predictor(context, actions, states)
        shorter = predictor(context[:, :-per_step], actions[:, :-1], states[:, :-1])
    torch.testing.assert_close(before[:, :-per_step], after[:, :-per_step])
    torch.testing.assert_close(shorter, before[:, :-per_step], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(before[:, -per_step:], after[:, -per_step:])
    mask = block_causal_mask(3, 2)
    assert mask[0, :2].all() and not mask[0, 2:].any() and mask[-1].all()


def test_missing_and_unexpected_keys_are_named(tmp_path: Path):
    ref = reference("ijepa_original")
    state = dict(ref.groups["target_encoder"])
    del state["module.blocks.1.mlp.fc2.bias"]
    state["module.blocks.0.attn.rel_pos"] = torch.zeros(3)
    torch.save({"target_encoder": state}, tmp_path / "broken.pth.tar")
    with pytest.raises(CheckpointMismatch) as err:
        load_checkpoint(tmp_path / "broken.pth.tar", LoadOptions(heads=2))
    message = str(err.value)
    assert "missing" in message and "blocks.1.mlp.fc2.bias" in message
    assert "unexpected" in message and "blocks.0.attn.rel_pos" in message
    assert err.value.missing == ["blocks.1.mlp.fc2.bias"] and err.value.unexpected == ["blocks.0.attn.rel_pos"]


def test_wrong_shape_is_named(tmp_path: Path):
    enc, _ = original_vjepa2_file(tmp_path / "x.pt", with_predictor=False, extra_pos_embed=False)
    payload = torch.load(tmp_path / "x.pt", weights_only=True)
    payload["encoder"]["module.backbone.norm.weight"] = torch.ones(7)
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(CheckpointMismatch, match=r"wrong shape.*norm\.weight \(7,\)"):
        load_checkpoint(tmp_path / "x.pt", TINY)


def test_unknown_inputs_get_clear_errors(tmp_path: Path):
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(UnknownCheckpoint, match="top-level keys: \\['model'\\]"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownCheckpoint, match="config.json"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UnknownCheckpoint, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


def test_family_mismatch_and_unknown_width_are_refused(tmp_path: Path):
    original_vjepa2_file(tmp_path / "v.pt", with_predictor=False)
    with pytest.raises(ValueError, match="holds a vjepa2 model"):
        load_checkpoint(tmp_path / "v.pt", TINY, family="ijepa")
    with pytest.raises(ValueError, match="--heads"):
        load_checkpoint(tmp_path / "v.pt")  # width 64 is no published architecture: heads must be given


def test_pooled_is_the_token_mean_never_a_pooler(tmp_path: Path):
    """An HF folder saved with its random Dense+Tanh pooler: the pooler is skipped, pooled = token mean."""
    from transformers import IJepaConfig, IJepaModel

    torch.manual_seed(0)
    hf = IJepaModel(IJepaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                image_size=32, patch_size=8), add_pooling_layer=True).eval()
    hf.save_pretrained(tmp_path / "pooler")
    loaded = load_checkpoint(tmp_path / "pooler")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        out = hf(pixel_values=x)
        pooled, _ = loaded.encoder(x)
    assert cosine_rows(pooled, out.last_hidden_state.mean(dim=1)) >= 0.9999
    assert cosine_rows(pooled, out.pooler_output) < 0.99
    assert np.isfinite(pooled.numpy()).all()
