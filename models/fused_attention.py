"""Attention as one operator: `torch.ops.jepa.attention`, which the ONNX export turns into a fused kernel.

Queries, keys and values come in the token-major layout the qkv projection writes, (B, N, heads * head_dim), and
the output has it too, so the exported graph needs no transposes around the operator. In PyTorch it runs
`scaled_dot_product_attention`; export/attention.py translates it to the ONNX `Attention` operator (opset 23,
3-D inputs) or to ONNX Runtime's `com.microsoft.MultiHeadAttention`. A mask is additive (0 where a query may
attend, a large negative number elsewhere): the form both operators take as a float mask or attention bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.library.custom_op("jepa::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """q, k, v (B, N, D); bias (N, N) or None -> (B, N, D): softmax(q k^T / sqrt(D / heads) + bias) v per head."""
    b, n, d = q.shape

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, x.shape[1], heads, d // heads).transpose(1, 2)  # (B, h, N, hs)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=bias)
    return out.transpose(1, 2).reshape(b, n, d)


@attention.register_fake
def _attention_shape(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.empty_like(q)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, N) bool (True where a query may attend to a key) -> 0 there, the dtype's lowest finite value elsewhere.

    Finite rather than -inf: a kernel that adds the bias to a score or scales it never makes inf - inf = NaN, and
    the fp16 conversion clamps it to fp16's lowest value, which still gives exp() = 0."""
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
