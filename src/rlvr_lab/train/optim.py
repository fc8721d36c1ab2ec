"""The optimiser (AdamW, or Muon / SpecGD from :mod:`rlvr_lab.optim`) with linear warmup and an optional
decay, and global-norm gradient clipping."""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "muon", "specgd")
"""Names of ``train.optim.name`` / ``sft.optim.name``."""


def build_optimizer(params, *, lr: float, weight_decay: float, betas: tuple[float, float],
                    name: str = "adamw") -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``params`` (an ``nn.Module`` or an iterable of tensors).

    ``adamw``: AdamW on every trainable parameter. ``muon`` / ``specgd``: that spectral step on the hidden
    weight matrices and AdamW on the rest (:func:`rlvr_lab.optim.build_matrix_optimizer`), which needs the
    module to tell embeddings and the LM head from hidden matrices.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    if name != "adamw":
        if not isinstance(params, torch.nn.Module):
            raise ValueError(f"optimiser {name!r} needs the model (an nn.Module) to split its parameters, "
                             "not a list of tensors")
        from rlvr_lab.optim import build_matrix_optimizer

        return build_matrix_optimizer(params, name, lr=lr, weight_decay=weight_decay, betas=betas)
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    params = [p for p in params if p.requires_grad]
    # foreach=False keeps peak memory low on CPU; fused kernels are only used on CUDA.
    fused = bool(params) and params[0].is_cuda
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown schedule {schedule!r}; valid: constant, cosine, linear")


def build_scheduler(optimizer, *, warmup_steps: int, total_steps: int, schedule: str):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule),
    )


def clip_and_step(model, optimizer, scheduler, max_grad_norm: float | None) -> tuple[float, bool]:
    """Clip gradients, then step unless the norm is not finite (the step is skipped, as in verl).

    Returns the pre-clip global gradient norm and whether the step was taken.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    norm_value = float(norm)
    finite = math.isfinite(norm_value)
    if finite:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm_value, finite
