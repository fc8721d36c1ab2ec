"""Optimisers beyond AdamW, for the trainer and the testbeds: SpecGD, Muon, Shampoo, normalised GD.

- :class:`SpecGD` — ``W ← W − η U Vᵀ`` from the truncated SVD of the gradient (arXiv 2510.22980).
- :class:`Muon` — Nesterov momentum 0.95, then 5 quintic Newton–Schulz steps towards the polar factor of the
  update (Jordan et al. 2024).
- :class:`Shampoo` — full-matrix Shampoo with accumulated preconditioners and ε (arXiv 1802.09568).
- :class:`NormalizedGD` — ``W ← W − η G / ‖G‖_F``.

All are ``torch.optim.Optimizer`` subclasses. The spectral ones take 2-D parameters in their matrix groups
(anything else raises ``ValueError``) and AdamW steps in groups marked ``adamw=True``;
:func:`split_matrix_params` and :func:`build_matrix_optimizer` apply the usual language-model split (hidden
matrices spectral; embeddings, LM head, norms and biases AdamW). The trainer reaches them through
``train.optim.name`` (``adamw`` | ``muon`` | ``specgd``).
"""

from rlvr_lab.optim.groups import MATRIX_OPTIMIZERS, build_matrix_optimizer, split_matrix_params
from rlvr_lab.optim.spectral import (
    CONVERGENT_COEFFICIENTS,
    MUON_COEFFICIENTS,
    SCALES,
    Muon,
    NormalizedGD,
    Shampoo,
    SpecGD,
    newton_schulz,
    spec_step,
    step_scale,
)

__all__ = [
    "CONVERGENT_COEFFICIENTS", "MATRIX_OPTIMIZERS", "MUON_COEFFICIENTS", "SCALES", "Muon", "NormalizedGD", "Shampoo",
    "SpecGD", "build_matrix_optimizer", "newton_schulz", "spec_step", "split_matrix_params", "step_scale",
]
