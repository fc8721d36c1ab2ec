"""Optimisers whose step for a weight matrix is (an approximation of) the polar factor U Vᵀ of a gradient.

Shapes: a matrix parameter and its gradient ``G`` are ``(m, n)``; ``G = U Σ Vᵀ`` is its thin SVD.

- :func:`spec_step` — the exact polar factor of the truncated SVD: ``U_r V_rᵀ`` over the singular values above
  ``rtol · σ_max``. SpecGD (arXiv 2510.22980) steps along it.
- :func:`newton_schulz` — the matrix-multiplication-only approximation Muon uses: an odd quintic polynomial
  iterated on ``G / ‖G‖_F``; it moves every singular value towards 1 and leaves U and V alone.
- :class:`SpecGD` — ``W ← W − η U Vᵀ`` per matrix (arXiv 2510.22980).
- :class:`Muon` — SGD momentum (Nesterov by default), then the Newton–Schulz polar factor of the update
  (Jordan et al. 2024, "Muon: an optimizer for hidden layers"; scaling of arXiv 2502.16982).
- :class:`Shampoo` — full-matrix Shampoo ``L^{-1/4} G R^{-1/4}`` with ``L = Σ G Gᵀ``, ``R = Σ GᵀG``
  (Gupta et al. 2018, arXiv 1802.09568). With only the current gradient and ε → 0 it is exactly ``U Vᵀ``:
  ``(GGᵀ)^{-1/4} G (GᵀG)^{-1/4} = U Σ^{-1/2} Σ Σ^{-1/2} Vᵀ``.
- :class:`NormalizedGD` — ``W ← W − η G / ‖G‖_F`` per parameter (the baseline of arXiv 2510.22980).

Parameters that are not matrices. The spectral steps are defined for 2-D parameters only. A parameter group
of :class:`SpecGD`, :class:`Muon` or :class:`Shampoo` is either a *matrix group* (every parameter 2-D, else
``ValueError`` when the group is added) or an *AdamW group* (``adamw=True`` in the group), whose parameters
take a decoupled AdamW step with the group's ``lr``, ``betas``, ``eps`` and ``weight_decay``. This is how
Muon is used for language models: the hidden layers' weight matrices take the spectral step, embeddings,
the output head, norm gains and biases take AdamW (:func:`rlvr_lab.optim.groups.split_matrix_params`).

Weight decay is decoupled in every class: ``W ← W (1 − η λ)`` before the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""Quintic coefficients (a, b, c) of Muon's reference implementation: steep at 0 so small singular values grow
fast, at the price of not converging: after 5 steps the singular values lie in about [0.68, 1.13]."""
CONVERGENT_COEFFICIENTS = (15 / 8, -10 / 8, 3 / 8)
"""The classic quintic Newton–Schulz iteration p(x) = (15x − 10x³ + 3x⁵) / 8: p(1) = 1, p'(1) = p''(1) = 0,
so singular values in (0, 1] converge to 1 (slowly from near 0, quickly near 1)."""
COEFFICIENTS = {"muon": MUON_COEFFICIENTS, "convergent": CONVERGENT_COEFFICIENTS}
SCALES = ("none", "spectral", "match_adamw")
"""How a unit spectral step is scaled for an (m, n) matrix: ``none`` 1 (the paper's SpecGD); ``spectral``
sqrt(max(1, m / n)) (Muon's reference implementation); ``match_adamw`` 0.2 · sqrt(max(m, n)), which gives the
step about the per-entry RMS of an AdamW step so that AdamW's learning rate and weight decay carry over
(arXiv 2502.16982, §2.2)."""


def _check_matrix(G: torch.Tensor, what: str) -> None:
    if G.ndim != 2:
        raise ValueError(f"{what} needs a 2-D matrix, got shape {tuple(G.shape)}")


def spec_step(G: torch.Tensor, *, rtol: float = 1e-10) -> torch.Tensor:
    """``U_r V_rᵀ`` (m, n) of the thin SVD of ``G`` (m, n), keeping singular values ``> rtol · σ_max``.

    The tolerance is raised to the numerical-rank floor ``eps(dtype) · max(m, n)`` when ``rtol`` is below it
    (as ``numpy.linalg.matrix_rank`` does), so a float32 gradient's rounding noise never becomes a unit
    direction. A zero matrix gives zeros. In float64 the default keeps the spec's 1e-10 (arXiv 2510.22980).

    >>> spec_step(torch.tensor([[3.0, 0.0], [0.0, -0.5]], dtype=torch.float64)).tolist()
    [[1.0, 0.0], [0.0, -1.0]]
    """
    _check_matrix(G, "spec_step")
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)  # (m, r), (r,), (r, n) with r = min(m, n)
    if S.numel() == 0 or not S[0] > 0:
        return torch.zeros_like(G)
    floor = torch.finfo(G.dtype).eps * max(G.shape)
    keep = S > max(rtol, floor) * S[0]
    return U[:, keep] @ Vh[keep]


def newton_schulz(G: torch.Tensor, *, steps: int = 5, coefficients: str | tuple[float, float, float] = "muon",
                  eps: float = 1e-7) -> torch.Tensor:
    """An approximate polar factor (m, n) of ``G`` (m, n) by ``steps`` quintic Newton–Schulz iterations.

    ``X ← a X + (b A + c A²) X`` with ``A = X Xᵀ``, from ``X = G / (‖G‖_F + eps)`` (so every singular value
    starts in [0, 1]); computed on the wide orientation so ``A`` is the smaller Gram matrix. Every step maps
    each singular value σ to p(σ) = aσ + bσ³ + cσ⁵ and keeps the singular vectors. ``coefficients``: ``muon``
    (:data:`MUON_COEFFICIENTS`, Muon's default), ``convergent`` (:data:`CONVERGENT_COEFFICIENTS`) or a tuple.
    """
    _check_matrix(G, "newton_schulz")
    a, b, c = COEFFICIENTS[coefficients] if isinstance(coefficients, str) else coefficients
    tall = G.shape[0] > G.shape[1]
    X = G.mT if tall else G
    X = X / (torch.linalg.matrix_norm(X) + eps)
    for _ in range(steps):
        A = X @ X.mT  # (min, min)
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.mT if tall else X


def step_scale(shape: torch.Size | tuple[int, ...], scale: str) -> float:
    """The factor of :data:`SCALES` for a unit spectral step of a matrix of ``shape``."""
    m, n = shape
    if scale == "none":
        return 1.0
    if scale == "spectral":
        return math.sqrt(max(1.0, m / n))
    if scale == "match_adamw":
        return 0.2 * math.sqrt(max(m, n))
    raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")


class _MatrixOptimizer(torch.optim.Optimizer):
    """Shared machinery: matrix groups take the subclass's ``_matrix_step``, ``adamw=True`` groups take AdamW."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if not defaults["lr"] >= 0:
            raise ValueError(f"lr must be >= 0, got {defaults['lr']}")
        if not defaults["weight_decay"] >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {defaults['weight_decay']}")
        defaults = {"adamw": False, "betas": (0.9, 0.999), "eps": 1e-8, **defaults}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if "scale" in group:
            step_scale((1, 1), group["scale"])  # an unknown name fails here, not at the first step
        if not group["adamw"]:
            bad = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
            if bad:
                raise ValueError(
                    f"{type(self).__name__}: the spectral step needs 2-D parameters, got shapes {bad}; put "
                    "vectors, embeddings and heads in a group with adamw=True (see rlvr_lab.optim.split_matrix_params)")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                if group["adamw"]:
                    self._adamw_step(p, group)
                else:
                    self._matrix_step(p, group)
        return loss

    def _adamw_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """Adam's bias-corrected step (Loshchilov & Hutter 2019; the decay was applied by ``step``)."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        state["exp_avg"].lerp_(p.grad, 1.0 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
        denom = (state["exp_avg_sq"] / (1.0 - beta2 ** t)).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1.0 - beta1 ** t))

    def _matrix_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        raise NotImplementedError


class SpecGD(_MatrixOptimizer):
    """Spectral gradient descent (arXiv 2510.22980): ``W ← W − lr · s · U Vᵀ`` with ``U Σ Vᵀ`` the truncated
    SVD of the gradient (:func:`spec_step`) and ``s`` from ``scale`` (:data:`SCALES`; ``none`` by default,
    the paper's step). Matrix groups need 2-D parameters; ``adamw=True`` groups take AdamW."""

    def __init__(self, params: Iterable[Any], lr: float, *, rtol: float = 1e-10, scale: str = "none",
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "rtol": rtol, "scale": scale, "weight_decay": weight_decay,
                                  "betas": betas, "eps": eps})

    def _matrix_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        p.add_(spec_step(p.grad, rtol=group["rtol"]), alpha=-group["lr"] * step_scale(p.shape, group["scale"]))


class Muon(_MatrixOptimizer):
    """Muon: momentum, then an orthogonalised update (Jordan et al. 2024; arXiv 2502.16982 for ``match_adamw``).

    Per matrix: ``B ← μ B + G``; ``M = G + μ B`` (Nesterov) or ``B``; ``W ← W − lr · s · NS(M)`` with
    ``NS`` = :func:`newton_schulz` (``ns_steps`` iterations of ``coefficients``) and ``s`` from ``scale``
    (``spectral`` by default, as the reference implementation). With ``momentum=0`` and convergent
    coefficients it is :class:`SpecGD`. Matrix groups need 2-D parameters; ``adamw=True`` groups take AdamW,
    the usual set-up for a language model (hidden matrices Muon; embeddings, head, norms, biases AdamW).
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.02, *, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, coefficients: str | tuple[float, float, float] = "muon", scale: str = "spectral",
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if isinstance(coefficients, str) and coefficients not in COEFFICIENTS:
            raise ValueError(f"unknown coefficients {coefficients!r}; allowed: {', '.join(COEFFICIENTS)} or (a, b, c)")
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps,
                                  "coefficients": coefficients, "scale": scale, "weight_decay": weight_decay,
                                  "betas": betas, "eps": eps})

    def _matrix_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf, mu = state["momentum_buffer"], group["momentum"]
        buf.mul_(mu).add_(p.grad)
        update = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
        direction = newton_schulz(update, steps=group["ns_steps"], coefficients=group["coefficients"])
        p.add_(direction.to(p.dtype), alpha=-group["lr"] * step_scale(p.shape, group["scale"]))


def _inverse_fourth_root(M: torch.Tensor, eps: float) -> torch.Tensor:
    """``(M + eps I)^{-1/4}`` (n, n) of a symmetric positive semi-definite ``M`` (n, n), by eigendecomposition."""
    w, V = torch.linalg.eigh(M)
    return (V * (w.clamp_min(0.0) + eps).pow(-0.25)) @ V.mT


class Shampoo(_MatrixOptimizer):
    """Full-matrix Shampoo (Gupta et al. 2018, arXiv 1802.09568) for matrices.

    Per matrix: ``L ← decay · L + G Gᵀ``, ``R ← decay · R + GᵀG`` (``decay=1``: the original running sum;
    ``decay=0``: the current gradient only), then ``W ← W − lr · (L + εI)^{-1/4} G (R + εI)^{-1/4}``. With
    ``decay=0`` and ε → 0 the step is ``U Vᵀ`` on the rank of ``G`` (arXiv 2510.22980 relates it to SpecGD).
    The roots come from an eigendecomposition every step: meant for the small matrices of the testbeds.
    """

    def __init__(self, params: Iterable[Any], lr: float, *, decay: float = 1.0, epsilon: float = 1e-12,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        super().__init__(params, {"lr": lr, "decay": decay, "epsilon": epsilon, "weight_decay": weight_decay,
                                  "betas": betas, "eps": eps})

    def _matrix_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state, G = self.state[p], p.grad
        if "left" not in state:
            state["left"] = torch.zeros(G.shape[0], G.shape[0], dtype=G.dtype, device=G.device)
            state["right"] = torch.zeros(G.shape[1], G.shape[1], dtype=G.dtype, device=G.device)
        state["left"].mul_(group["decay"]).add_(G @ G.mT)
        state["right"].mul_(group["decay"]).add_(G.mT @ G)
        step = _inverse_fourth_root(state["left"], group["epsilon"]) @ G @ _inverse_fourth_root(
            state["right"], group["epsilon"])
        p.add_(step, alpha=-group["lr"])


class NormalizedGD(torch.optim.Optimizer):
    """Normalised gradient descent: ``W ← W − lr · G / ‖G‖_F`` per parameter (any shape); a zero gradient
    leaves the parameter where it is. The adaptive-step baseline of arXiv 2510.22980."""

    def __init__(self, params: Iterable[Any], lr: float) -> None:
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                norm = torch.linalg.vector_norm(p.grad)
                if norm > 0:
                    p.add_(p.grad / norm, alpha=-group["lr"])
        return loss
