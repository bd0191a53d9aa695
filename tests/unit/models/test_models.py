import pytest
import torch

from models.demo import build_demo_model
from models.predictor import ActionConditionedPredictor, PredictorConfig
from models.vit import ViTConfig, ViTEncoder, sincos_position_embedding


def test_encoder_shapes_and_pooling_is_mean_of_patch_tokens():
    encoder = ViTEncoder(ViTConfig(image_size=32, patch_size=8, dim=64, depth=2, heads=4)).eval()
    with torch.inference_mode():
        pooled, tokens = encoder(torch.randn(3, 3, 32, 32))
    assert tokens.shape == (3, 16, 64)
    assert pooled.shape == (3, 64)
    torch.testing.assert_close(pooled, tokens.mean(dim=1))


def test_sincos_positions_are_distinct_and_fixed():
    pos = sincos_position_embedding(4, 16)
    assert pos.shape == (16, 16)
    assert torch.unique(pos, dim=0).shape[0] == 16
    torch.testing.assert_close(pos, sincos_position_embedding(4, 16))


def test_config_rejects_bad_geometry():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="divisible by heads"):
        ViTConfig(dim=130, heads=4)


def test_predictor_is_residual_in_the_state():
    predictor = ActionConditionedPredictor(PredictorConfig(dim=8, action_dim=2)).eval()
    torch.nn.init.zeros_(predictor.mlp[-1].weight)
    torch.nn.init.zeros_(predictor.mlp[-1].bias)
    state = torch.randn(5, 8)
    with torch.inference_mode():
        out = predictor(state, torch.randn(5, 2))
    torch.testing.assert_close(out, state)


def test_demo_model_is_deterministic_per_seed_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    a, b, c = build_demo_model(0), build_demo_model(0), build_demo_model(1)
    assert torch.rand(1) == expected_next
    x = torch.randn(2, 2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(a.encoder(x)[0], b.encoder(x)[0])
        assert not torch.allclose(a.encoder(x)[0], c.encoder(x)[0])


def test_fused_attention_computes_what_the_written_out_attention_does():
    """The operator the export fuses, with 3-D rotary positions and the block-causal mask (V-JEPA 2-AC's predictor)."""
    from models.ac_predictor import ACPredictorConfig, VJepa2ACPredictor
    from models.jepa_blocks import use_fused_attention

    torch.manual_seed(0)
    predictor = VJepa2ACPredictor(ACPredictorConfig(image_size=32, patch_size=8, embed_dim=48, dim=48, depth=2, heads=2,
                                                    mlp_hidden=64)).eval()
    inputs = (torch.randn(2, 32, 48), torch.randn(2, 2, 7), torch.randn(2, 2, 7))
    with torch.inference_mode():
        written_out = predictor(*inputs)
        assert use_fused_attention(predictor) == 2
        fused = predictor(*inputs)
        use_fused_attention(predictor, False)
        assert torch.equal(predictor(*inputs), written_out)
    torch.testing.assert_close(fused, written_out, atol=2e-6, rtol=1e-5)
