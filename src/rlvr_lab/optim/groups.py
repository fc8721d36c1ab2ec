"""Splitting a language model's parameters between a spectral optimiser and AdamW.

The usual practice with Muon (Jordan et al. 2024; Moonlight, arXiv 2502.16982): the weight matrices of the
hidden layers (attention and MLP projections) take the spectral step; the token embeddings, the output head
(the LM head, tied to the embeddings or not), norm gains, biases and anything else that is not a matrix take
AdamW. Embeddings and the head are excluded although they are 2-D: their rows are per-token vectors, not a
linear map between hidden spaces, and orthogonalising them equalises rare and frequent tokens.
"""

from __future__ import annotations

import torch

from rlvr_lab.optim.spectral import Muon, SpecGD

MATRIX_OPTIMIZERS = {"muon": Muon, "specgd": SpecGD}


def split_matrix_params(model: torch.nn.Module) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
    """``(matrix, other)``: (name, parameter) pairs of the trainable parameters of ``model``.

    ``matrix``: every 2-D parameter except those of ``nn.Embedding`` modules and of the model's output
    embeddings (``get_output_embeddings()`` of a Hugging Face model). ``other``: the rest. A parameter shared
    by several modules (tied embeddings) is listed once, under its first name.
    """
    excluded: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            excluded.update(id(p) for p in module.parameters(recurse=False))
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if isinstance(head, torch.nn.Module):
        excluded.update(id(p) for p in head.parameters(recurse=False))
    matrix, other = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (matrix if p.ndim == 2 and id(p) not in excluded else other).append((name, p))
    return matrix, other


def build_matrix_optimizer(model: torch.nn.Module, kind: str, *, lr: float, weight_decay: float,
                           betas: tuple[float, float], eps: float = 1e-8) -> Muon | SpecGD:
    """Muon or SpecGD (``kind``) on the hidden matrices of ``model`` and AdamW on the rest, one optimiser.

    One learning rate and weight decay for both groups: the spectral step is scaled by ``match_adamw``
    (0.2 · sqrt(max(m, n)), arXiv 2502.16982 §2.2) so its per-entry RMS is about AdamW's, and the AdamW group
    uses ``betas``. Muon keeps its momentum 0.95 with Nesterov and 5 Newton–Schulz steps.
    """
    if kind not in MATRIX_OPTIMIZERS:
        raise ValueError(f"unknown matrix optimiser {kind!r}; allowed: {', '.join(MATRIX_OPTIMIZERS)}")
    matrix, other = split_matrix_params(model)
    groups = [{"params": [p for _, p in matrix], "adamw": False}]
    if other:
        groups.append({"params": [p for _, p in other], "adamw": True})
    return MATRIX_OPTIMIZERS[kind](groups, lr=lr, scale="match_adamw", weight_decay=weight_decay, betas=betas, eps=eps)
