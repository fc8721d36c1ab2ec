"""Gradient norms per layer group: which part of the network an update moves.

A blow-up of the total gradient norm is one of the signs of the accelerated-collapse phase
(arXiv 2512.04220, §5.1); per-group norms show whether it starts in the embeddings, in a band of
layers or in the output head. Parameters are grouped by name, so the grouping works for any model
whose blocks are numbered in their parameter names (``model.layers.3.mlp...``, ``h.3.attn...``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)\.")
_EMBEDDING_NAMES = ("embed", "wte", "wpe")


def layer_groups(names: Iterable[str], n_groups: int) -> list[str]:
    """Group name of each parameter: ``embed``, ``layers_<a>-<b>`` (``n_groups`` contiguous bands of
    blocks, ``layers_<a>`` for a band of one) or ``head`` (final norm and output layer).

    A parameter belongs to a block when its name contains a number between dots; otherwise it is an
    embedding when its name says so, else part of the head.
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    names = list(names)
    index = [_LAYER_INDEX.search(name) for name in names]
    layers = sorted({int(m.group(1)) for m in index if m})
    bands: dict[int, str] = {}
    if layers:
        n = min(n_groups, len(layers))
        for g in range(n):  # split the blocks into n near-equal contiguous bands
            band = layers[g * len(layers) // n : (g + 1) * len(layers) // n]
            label = f"layers_{band[0]}" if len(band) == 1 else f"layers_{band[0]}-{band[-1]}"
            bands.update({layer: label for layer in band})
    groups = []
    for name, m in zip(names, index):
        if m:
            groups.append(bands[int(m.group(1))])
        elif any(part in name for part in _EMBEDDING_NAMES):
            groups.append("embed")
        else:
            groups.append("head")
    return groups


class GradGroups:
    """Pre-clip gradient norm of each layer group, read from ``param.grad`` after backward.

    ``norms()`` costs one small norm kernel per parameter and one host sync, against a backward pass.
    Groups whose parameters have no gradient are left out. The squares of the group norms add up to
    the square of the total norm that clipping sees.
    """

    def __init__(self, model: torch.nn.Module, n_groups: int = 4):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        labels = layer_groups([n for n, _ in named], n_groups)
        self.names = list(dict.fromkeys(labels))  # first-seen order: embed, layers..., head
        self.index = torch.tensor([self.names.index(label) for label in labels])

    def norms(self) -> dict[str, float]:
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not have:
            return {}
        sq = torch.stack([self.params[i].grad.detach().float().norm().square() for i in have]).cpu()
        index = self.index[have]
        totals = torch.zeros(len(self.names)).index_add_(0, index, sq)
        present = torch.zeros(len(self.names), dtype=torch.bool)
        present[index] = True
        values = totals.sqrt().tolist()
        return {f"grad_norm/{name}": values[g] for g, name in enumerate(self.names) if present[g]}
