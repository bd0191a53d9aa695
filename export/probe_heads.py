"""The three kinds of probe head `jepa-export probe` trains, each fitted in PyTorch and written as an ONNX graph
`features -> probabilities` with the feature standardisation folded in (the service feeds raw encoder outputs).

- linear: softmax(x W^T + b) on the pooled vector (multinomial logistic regression, full batch).
- mlp: one hidden ReLU layer on the pooled vector (AdamW with weight decay, mini-batches, a fixed number of epochs,
  the learning rate decayed to zero); it draws what a linear head cannot, e.g. the XOR of two features.
- attentive: V-JEPA's attentive probe on the token grid (B, N, D): a learned query token cross-attends over the
  layer-normed tokens with a few heads, then a residual MLP, LayerNorm and a linear layer, softmax. A learned
  per-token position embedding is added first: a ViT's tokens already carry their position, a convolutional
  grid's (the demo encoder's) do not, and "which room" is a question about where.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    epochs: int
    learning_rate: float
    weight_decay: float
    hidden: int = 256  # mlp: hidden units; attentive: the MLP after the attention
    attention_heads: int = 4
    batch_size: int = 128
    seed: int = 0


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and scale over every axis but the last (for tokens: over items and tokens)."""
    flat = x.reshape(-1, x.shape[-1])
    return flat.mean(0).astype(np.float32), (flat.std(0) + 1e-6).astype(np.float32)


# -- linear ------------------------------------------------------------------------------------------------------


def fit_linear(x: np.ndarray, y: np.ndarray, classes: int, options: FitOptions) -> tuple[np.ndarray, np.ndarray]:
    """Standardised multinomial logistic regression, full-batch; returns (W (C, D), b (C,)) on the raw features
    (the standardisation folded in)."""
    mean, scale = standardisation(x)
    generator = torch.Generator().manual_seed(options.seed)
    xs = torch.from_numpy((x - mean) / scale)
    layer = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.01)
        layer.bias.zero_()
    optimiser = torch.optim.Adam(layer.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    target = torch.from_numpy(y)
    for _ in range(options.epochs):
        optimiser.zero_grad()
        nn.functional.cross_entropy(layer(xs), target).backward()
        optimiser.step()
    weight = layer.weight.detach().numpy() / scale  # (C, D)
    bias = layer.bias.detach().numpy() - weight @ mean
    return weight.astype(np.float32), bias.astype(np.float32)


def head_graph(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """features (B, D) -> probabilities (B, C) = softmax(features W^T + b)."""
    classes, dim = weight.shape
    return _pooled_graph(
        [helper.make_node("MatMul", ["features", "weight_t"], ["scaled"]),
         helper.make_node("Add", ["scaled", "bias"], ["logits"])],
        dim, classes, {"weight_t": weight.T, "bias": bias})


# -- mlp ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlpWeights:
    """probabilities = softmax(relu(x W1^T + b1) W2^T + b2) on raw features."""

    w1: np.ndarray  # (H, D)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (C, H)
    b2: np.ndarray  # (C,)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.w1.T + self.b1, 0) @ self.w2.T + self.b2


def fit_mlp(x: np.ndarray, y: np.ndarray, classes: int, options: FitOptions) -> MlpWeights:
    mean, scale = standardisation(x)
    torch.manual_seed(options.seed)
    model = nn.Sequential(nn.Linear(x.shape[1], options.hidden), nn.ReLU(), nn.Linear(options.hidden, classes))
    _train(model, (x - mean) / scale, y, options)
    w1 = model[0].weight.detach().numpy() / scale  # (H, D): the standardisation folded in
    b1 = model[0].bias.detach().numpy() - w1 @ mean
    return MlpWeights(w1.astype(np.float32), b1.astype(np.float32),
                      model[2].weight.detach().numpy().astype(np.float32),
                      model[2].bias.detach().numpy().astype(np.float32))


def mlp_graph(weights: MlpWeights) -> onnx.ModelProto:
    """features (B, D) -> probabilities (B, C) = softmax(relu(features W1^T + b1) W2^T + b2)."""
    classes, dim = weights.w2.shape[0], weights.w1.shape[1]
    return _pooled_graph(
        [helper.make_node("MatMul", ["features", "w1_t"], ["h_scaled"]),
         helper.make_node("Add", ["h_scaled", "b1"], ["h_pre"]),
         helper.make_node("Relu", ["h_pre"], ["hidden"]),
         helper.make_node("MatMul", ["hidden", "w2_t"], ["scaled"]),
         helper.make_node("Add", ["scaled", "b2"], ["logits"])],
        dim, classes, {"w1_t": weights.w1.T, "b1": weights.b1, "w2_t": weights.w2.T, "b2": weights.b2})


def _pooled_graph(nodes: list, dim: int, classes: int, initialisers: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [*nodes, helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "probe_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(np.ascontiguousarray(v, np.float32), k) for k, v in initialisers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


# -- attentive ---------------------------------------------------------------------------------------------------


class AttentiveProbe(nn.Module):
    """Tokens (B, N, D) -> probabilities (B, C): V-JEPA's attentive pooler (one learned query, a cross-attention
    block) and a linear classifier."""

    def __init__(self, tokens: int, dim: int, classes: int, options: FitOptions,
                 mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("scale", torch.from_numpy(scale))
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm_tokens = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, options.attention_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, options.hidden), nn.GELU(), nn.Linear(options.hidden, dim))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, classes)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = self.norm_tokens((features - self.mean) / self.scale + self.position)  # (B, N, D)
        query = self.query.expand(x.shape[0], -1, -1)  # (B, 1, D)
        pooled = query + self.attention(query, x, x, need_weights=False)[0]
        pooled = pooled + self.mlp(self.norm_mlp(pooled))
        return self.classifier(self.norm(pooled[:, 0]))  # (B, C)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(features), dim=-1)


def fit_attentive(x: np.ndarray, y: np.ndarray, classes: int, options: FitOptions) -> AttentiveProbe:
    """x: tokens (B, N, D) raw."""
    if x.shape[2] % options.attention_heads:
        raise ValueError(f"--attention-heads {options.attention_heads} must divide the token width {x.shape[2]}")
    torch.manual_seed(options.seed)
    mean, scale = standardisation(x)
    probe = AttentiveProbe(x.shape[1], x.shape[2], classes, options, mean, scale)
    _train(probe, x, y, options, forward=probe.logits)
    return probe.eval()


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, options: FitOptions,
           forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """AdamW on shuffled mini-batches, a fixed number of epochs, the learning rate on a cosine to zero."""
    step = forward or model
    features, target = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(options.seed)
    batches = math.ceil(len(x) / options.batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=options.epochs * batches)
    model.train()
    for _ in range(options.epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(batches):
            rows = order[i * options.batch_size:(i + 1) * options.batch_size]
            optimiser.zero_grad()
            nn.functional.cross_entropy(step(features[rows]), target[rows]).backward()
            optimiser.step()
            schedule.step()
    model.eval()
