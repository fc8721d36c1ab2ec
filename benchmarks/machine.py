"""The machine's own speed limit, measured in the run that compares against it, and the sizes a
model's useful FLOPs are counted from.

Benchmarks report achieved FLOP/s as a fraction of a square matmul timed with the same threads and
precision in the same run, because these machines are noisy and differ from one another (one 2-core
machine ran a 2048x2048 fp32 matmul at 98 GFLOP/s, another at 290-340).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

MATMUL_N, MATMUL_REPEATS = 2048, 5


def matmul_flop_rate(dtype: torch.dtype = torch.float32, n: int = MATMUL_N, repeats: int = MATMUL_REPEATS) -> float:
    """FLOP/s of an ``n x n`` by ``n x n`` ``torch.mm`` in ``dtype`` here and now (median of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


@dataclass(frozen=True)
class FlopShape:
    """What a decoder's useful FLOPs per token are counted from."""

    linear_weights: int  # every linear layer's weights, the output layer included
    head_weights: int  # the output layer's
    attention: int  # layers x attention width; a forward pass spends 4x this per token and attended position


def flop_shape(model) -> FlopShape:
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return FlopShape(
        linear_weights=sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
        head_weights=model.get_output_embeddings().weight.numel(),
        attention=cfg.num_hidden_layers * cfg.num_attention_heads * head_dim,
    )
