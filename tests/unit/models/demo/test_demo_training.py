"""The demo JEPA's training path: regularisers, clip encoder, weights round trip, and a smoke run."""

import json
import math

import pytest
import torch

from models.demo import ClipEncoderConfig, build_demo_model, load_demo_model, save_demo_model
from models.demo.regularizers import epps_pulley, sigreg, vicreg
from models.demo.train import main as train_main


def test_epps_pulley_is_small_for_gaussians_and_large_for_collapse():
    g = torch.Generator().manual_seed(0)
    gaussian = torch.randn(2048, 8, generator=g)
    collapsed = torch.zeros(2048, 8) + 0.01 * torch.randn(2048, 8, generator=g)
    squeezed = 3.0 * torch.rand(2048, 8, generator=g)  # uniform, wrong shape and scale
    assert epps_pulley(gaussian).mean() < 3.0
    assert epps_pulley(collapsed).min() > 100 * epps_pulley(gaussian).mean()
    assert epps_pulley(squeezed).min() > 10 * epps_pulley(gaussian).mean()


def test_sigreg_and_vicreg_push_a_collapsed_batch_apart():
    z = (0.05 * torch.randn(256, 16)).requires_grad_()
    for loss in (sigreg(z, 64), vicreg(z)):
        (grad,) = torch.autograd.grad(loss, z)
        # one gradient step away from the mean increases the spread
        spread_after = (z - 0.5 * grad).std(0).mean()
        assert math.isfinite(float(loss.detach()))
        assert spread_after > z.std(0).mean()


def test_clip_encoder_sees_both_frames():
    model = build_demo_model(0)
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        same = model.encoder(torch.stack([a, a], dim=1))[0]
        moved = model.encoder(torch.stack([b, a], dim=1))[0]
        pooled, tokens = model.encoder(torch.stack([a, a], dim=1))
    assert not torch.allclose(same, moved)
    assert pooled.shape == (1, 128)
    assert tokens.shape == (1, 64, 64)


def test_weights_round_trip_through_safetensors(tmp_path):
    model = build_demo_model(3, ClipEncoderConfig(width=32, dim=64))
    path = save_demo_model(model, tmp_path / "m.safetensors")
    loaded = load_demo_model(path)
    x = torch.randn(2, 2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encoder(x)[0], model.encoder(x)[0])
        s, a = torch.randn(2, 64), torch.randn(2, 2)
        torch.testing.assert_close(loaded.predictor(s, a), model.predictor(s, a))


@pytest.mark.parametrize("reg", ["sigreg", "vicreg", "none"])
def test_smoke_training_writes_loadable_weights_and_a_log(tmp_path, reg):
    out = tmp_path / "demo.safetensors"
    assert train_main(["--smoke", "--reg", reg, "--out", str(out), "--threads", "1"]) == 0
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["steps"] == 3
    assert len(log["history"]) == 3
    assert all(math.isfinite(row["loss"]) for row in log["history"])
    assert (reg in log["history"][0]) == (reg != "none")
    before = build_demo_model(0)
    after = load_demo_model(out)
    assert not torch.equal(before.encoder.head.weight, after.encoder.head.weight)  # it trained


def test_second_stage_continues_from_weights_and_logs_both_stages(tmp_path):
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert train_main(["--smoke", "--out", str(first), "--threads", "1"]) == 0
    assert train_main(["--smoke", "--init", str(first), "--out", str(second), "--threads", "1"]) == 0
    log = json.loads(second.with_suffix(".json").read_text())
    assert log["steps_total"] == 6
    assert [s["steps"] for s in log["stages"]] == [3, 3]
    assert not torch.equal(load_demo_model(first).encoder.head.weight, load_demo_model(second).encoder.head.weight)


def test_predictor_losses_pair_each_state_with_the_action_that_follows_it():
    # a world where action t moves state t to t + 1 exactly: a predictor that adds the action has zero loss,
    # one that ignores it does not (an off-by-one between states and actions would break the first)
    from models.demo.train import predictor_losses

    states = torch.arange(10.0).repeat(3, 1)[..., None].expand(3, 10, 4).contiguous()  # (N, T, D), state t = t
    actions = torch.ones(3, 9, 4)
    rows, starts = torch.tensor([0, 1, 2]).numpy(), torch.tensor([0, 3, 5]).numpy()
    exact = predictor_losses(lambda s, a: s + a, states, actions, rows, starts, horizon=4, one_step_weight=1.0)
    still = predictor_losses(lambda s, a: s, states, actions, rows, starts, horizon=4, one_step_weight=1.0)
    assert float(exact["loss"]) == 0.0
    assert float(still["one_step"]) == 1.0  # one step behind everywhere
    assert float(still["rollout"]) == pytest.approx((1 + 4 + 9 + 16) / 4)  # k steps behind after k steps


def test_predictor_stage_trains_the_predictor_on_a_frozen_encoder(tmp_path):
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert train_main(["--smoke", "--predictor-steps", "0", "--out", str(first), "--threads", "1"]) == 0
    assert train_main(["--smoke", "--init", str(first), "--max-steps", "0", "--out", str(second),
                       "--threads", "1"]) == 0
    before, after = load_demo_model(first), load_demo_model(second)
    for name, tensor in before.encoder.state_dict().items():
        assert torch.equal(tensor, after.encoder.state_dict()[name]), name  # BatchNorm statistics included
    assert not torch.equal(before.predictor.mlp[0].weight, after.predictor.mlp[0].weight)
    log = json.loads(second.with_suffix(".json").read_text())
    assert log["steps_total"] == 3
    assert [s["predictor_steps"] for s in log["stages"][1:]] == [3]
    assert len(log["predictor_history"]) == 3
    assert all(math.isfinite(row["loss"]) for row in log["predictor_history"])
