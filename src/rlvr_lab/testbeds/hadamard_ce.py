"""Cross-entropy on a two-layer linear net with standard-basis inputs, from a Hadamard initialisation
(arXiv 2512.04006, Garrod, Keating, Thrampoulidis, "Diagonalizing the Softmax: Hadamard Initialization for
Tractable Cross-Entropy Dynamics").

Model: one input per class, ``x_k = e_k``, so the net ``f(x) = W H x`` has logits ``Z = W H`` (K, K), column
``k`` those of sample ``k``; ``H`` (d, K) holds the features, ``W`` (K, d) the classifier (the unconstrained
features model of neural collapse). Loss: mean cross-entropy over the K samples; full-batch GD, float64.

Why the Hadamard initialisation makes the dynamics tractable (arXiv 2512.04006; spec A1.2). With
``Q = hadamard(K) / √K`` (symmetric, orthogonal; K a power of 2), ``W₀ = Q diag(a) Rᵀ`` and
``H₀ = R diag(b) Q`` (R: d × K, orthonormal columns) give ``Z = Q diag(λ) Q``, λ = a ⊙ b, whose entries depend
only on ``i XOR j``. Every column of Z is then a permutation of column 0, so the column-softmax P and the logit
gradient ``G_Z = (P − I) / K`` are diagonal in the same basis, and GD keeps the singular vectors (Q, R) fixed:
it reduces to ``a ← a − η ĝ ⊙ b``, ``b ← b − η ĝ ⊙ a`` with ``ĝ = (p̂ − 1) / K`` (:func:`reduced_step`).
Mode 0 (the all-ones direction) never moves; the others grow, and neural collapse (a simplex ETF) is
``λ₁ = … = λ_{K−1}``, approached logarithmically slowly.

The claim measured (spec A1.3): from a Hadamard init the off-diagonal of ``Qᵀ Z Q`` stays below 1e-10
(frozen singular vectors), the spectral spread ``sv_ratio`` of the centred logits and the NC2 distance fall
at every logged checkpoint and end at least 30% below their value at t = 0, and NC3 ends below 1e-3. A small
random initialisation is run beside it: its off-diagonal is O(1), while its NC metrics fall the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rlvr_lab.eval.intervals import mean_interval
from rlvr_lab.testbeds.plots import RUN_COLOURS, band_figure, series

NAME = "hadamard-ce"
PAPER = "2512.04006"
TITLE = "Diagonalizing the Softmax: Hadamard Initialization for Tractable Cross-Entropy Dynamics"
CLAIM = ("GD on cross-entropy from a Hadamard initialisation keeps the singular vectors of W and H frozen and "
         "drives the non-trivial logit spectrum towards equality (neural collapse).")

DEFAULTS: dict[str, Any] = {
    "K": 8,
    "d": 8,
    "lr": 1.0,
    "steps": 20_000,
    "init_scale": 0.05,
    "log_points": 40,
    "drop": 0.30,
    "offdiag_tol": 1e-10,
    "nc3_tol": 1e-3,
}
"""K classes (a power of 2), width d >= K, GD learning rate, steps, init scale (Hadamard: a, b ~ scale ·
U(0.5, 1.5); random: entries ~ N(0, scale²)), checkpoints on a log grid (plus 0, 100, 1000, 5000, 20000 when
within ``steps``), and the claim's thresholds: the relative drop of sv_ratio and NC2, the off-diagonal
tolerance, the NC3 bound."""
SMALL: dict[str, Any] = {"steps": 2_000, "log_points": 16}

INITS = ("hadamard", "random")
SPEC_CHECKPOINTS = (0, 100, 1_000, 5_000, 20_000)
"""The checkpoints of the spec's calibration table, always logged when within ``steps``."""
DTYPE = torch.float64


# ---- the model ---------------------------------------------------------------------------------


def sylvester_hadamard(K: int) -> torch.Tensor:
    """The normalised Sylvester–Hadamard matrix ``Q`` (K, K), symmetric and orthogonal; ValueError unless K = 2^m."""
    if K < 1 or K & (K - 1):
        raise ValueError(f"the Hadamard initialisation needs K a power of 2, got K={K}")
    Hm = torch.ones(1, 1, dtype=DTYPE)
    while Hm.shape[0] < K:
        Hm = torch.cat([torch.cat([Hm, Hm], 1), torch.cat([Hm, -Hm], 1)], 0)
    return Hm / math.sqrt(K)


@dataclass(frozen=True)
class HadamardInit:
    W: torch.Tensor
    """(K, d) classifier, ``Q diag(a) Rᵀ``."""
    H: torch.Tensor
    """(d, K) features, ``R diag(b) Q``."""
    Q: torch.Tensor
    """(K, K) normalised Hadamard matrix."""
    R: torch.Tensor
    """(d, K) orthonormal columns."""
    a: torch.Tensor
    """(K,) singular values of W (positive)."""
    b: torch.Tensor
    """(K,) singular values of H (positive)."""


def hadamard_init(K: int, d: int, *, scale: float = 0.05, generator: torch.Generator | None = None) -> HadamardInit:
    """``W₀ = Q diag(a) Rᵀ``, ``H₀ = R diag(b) Q`` with a, b ~ scale · U(0.5, 1.5) and R a random orthonormal
    (d, K) frame (QR of a Gaussian matrix). ValueError unless K is a power of 2 and d >= K."""
    Q = sylvester_hadamard(K)
    if d < K:
        raise ValueError(f"the width d must be at least K, got d={d}, K={K}")
    R, _ = torch.linalg.qr(torch.randn(d, K, dtype=DTYPE, generator=generator))
    a = scale * (0.5 + torch.rand(K, dtype=DTYPE, generator=generator))
    b = scale * (0.5 + torch.rand(K, dtype=DTYPE, generator=generator))
    return HadamardInit(W=Q * a @ R.mT, H=R * b @ Q, Q=Q, R=R, a=a, b=b)


def random_init(K: int, d: int, *, scale: float = 0.05,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, H)``: (K, d) and (d, K) with entries ~ N(0, scale²), the small random init of the comparison."""
    return (scale * torch.randn(K, d, dtype=DTYPE, generator=generator),
            scale * torch.randn(d, K, dtype=DTYPE, generator=generator))


def ce_logit_grad(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, G_Z, P)`` for logits Z (K, K) whose column k is sample k of class k.

    loss: mean over samples of ``−log P[k, k]``; P (K, K): softmax over each column (max-subtracted, since the
    logits grow like log t); ``G_Z = (P − I) / K`` (K, K), the gradient of the loss in Z.
    """
    K = Z.shape[0]
    log_p = torch.log_softmax(Z, dim=0)
    P = log_p.exp()
    return -log_p.diagonal().mean(), (P - torch.eye(K, dtype=Z.dtype)) / K, P


def gd_step(W: torch.Tensor, H: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One full-batch GD step on the mean cross-entropy: ``(W − lr G_Z Hᵀ, H − lr Wᵀ G_Z, loss before)``."""
    loss, G, _ = ce_logit_grad(W @ H)
    return W - lr * (G @ H.mT), H - lr * (W.mT @ G), loss


def reduced_step(a: torch.Tensor, b: torch.Tensor, lr: float, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One GD step of the singular values (a, b) (K,) of a Hadamard-initialised model (spec A1.2).

    ``ĝ = (p̂ − 1) / K``, with ``p̂`` the Hadamard spectrum of the column-softmax P of ``Z = Q diag(a ⊙ b) Q``.
    Only column 0 is needed: ``Z e₀ = Q λ / √K``, and P = Q diag(p̂) Q gives ``p̂ = √K Q P e₀`` (O(K²)).
    """
    root_k = math.sqrt(Q.shape[0])
    column = torch.softmax(Q @ (a * b) / root_k, dim=0)  # P e₀ (K,)
    g_hat = (root_k * (Q @ column) - 1.0) / Q.shape[0]
    return a - lr * g_hat * b, b - lr * g_hat * a


def _cosine_nc2(V: torch.Tensor) -> float:
    """Mean over pairs k ≠ l of |cos(v_k, v_l) + 1/(K − 1)| for the columns v_k of V (·, K)."""
    K = V.shape[1]
    unit = V / torch.linalg.vector_norm(V, dim=0, keepdim=True)
    cos = unit.mT @ unit
    off = ~torch.eye(K, dtype=torch.bool)
    return float((cos[off] + 1.0 / (K - 1)).abs().mean())


def nc_metrics(W: torch.Tensor, H: torch.Tensor, Q: torch.Tensor) -> dict[str, float]:
    """Neural-collapse and spectral metrics of the model (W (K, d), H (d, K)); NC1 is 0 by construction here.

    - ``sv_ratio``: max / min of the top K − 1 singular values of the class-centred logits
      ``Z − 1 1ᵀ Z / K`` (1 at a simplex ETF);
    - ``offdiag``: max |off-diagonal entry| of ``Qᵀ Z Q`` (≈ 0 while the singular vectors stay frozen);
    - ``nc2_feat`` / ``nc2_cls``: mean |cos + 1/(K − 1)| over pairs of centred features ``h_k − mean h`` /
      centred classifier rows ``w_k − mean w`` (0 at a simplex ETF);
    - ``equinorm``: std / mean of the centred feature norms;
    - ``nc3``: ``‖W̄ / ‖W̄‖_F − H̄ᵀ / ‖H̄‖_F‖_F`` (self-duality; 0 when classifier and features align).
    """
    K = W.shape[0]
    Z = W @ H
    sv = torch.linalg.svdvals(Z - Z.mean(dim=0, keepdim=True))[: K - 1]
    spectrum = Q.mT @ Z @ Q
    H_c = H - H.mean(dim=1, keepdim=True)  # (d, K): features minus their global mean
    W_c = W - W.mean(dim=0, keepdim=True)  # (K, d): classifier rows minus their mean
    norms = torch.linalg.vector_norm(H_c, dim=0)
    return {
        "sv_ratio": float(sv.max() / sv.min()),
        "offdiag": float((spectrum - torch.diag(spectrum.diagonal())).abs().max()),
        "nc2_feat": _cosine_nc2(H_c),
        "nc2_cls": _cosine_nc2(W_c.mT),
        "equinorm": float(norms.std(unbiased=False) / norms.mean()),
        "nc3": float(torch.linalg.matrix_norm(W_c / torch.linalg.matrix_norm(W_c)
                                              - H_c.mT / torch.linalg.matrix_norm(H_c))),
    }


def claim_checkpoints(steps: int) -> list[int]:
    """The checkpoints over which the claim asks for a monotone fall: the spec's within ``steps``, and ``steps``.

    Not the dense log grid: over the first few steps sv_ratio rises by about 1% before it falls (a
    cross-entropy transient while the logits are still near 0), which the plots show.
    """
    return sorted({c for c in SPEC_CHECKPOINTS if c <= steps} | {steps})


def checkpoints(steps: int, log_points: int) -> list[int]:
    """0, ``log_points`` steps spaced evenly in log between 1 and ``steps``, and the spec's checkpoints."""
    grid = {0, steps} | {c for c in SPEC_CHECKPOINTS if c <= steps}
    if steps >= 1 and log_points > 0:
        grid |= {round(math.exp(i * math.log(steps) / max(1, log_points - 1))) for i in range(log_points)}
    return sorted(grid)


def train_ufm(init: str = "hadamard", *, K: int = 8, d: int = 8, lr: float = 1.0, steps: int = 20_000,
              log_at: list[int] | tuple[int, ...] = SPEC_CHECKPOINTS, seed: int = 0,
              init_scale: float = 0.05) -> list[dict[str, float]]:
    """Full-batch GD from ``init`` (``hadamard`` or ``random``); one record per step in ``log_at``.

    Each record: ``step``, ``loss`` and :func:`nc_metrics`. From a Hadamard init the reduced recursion runs
    alongside and ``reduced_gap`` is the largest entry of ``|W − Q diag(a) Rᵀ|`` and ``|H − R diag(b) Q|``
    (≈ 0: GD on the full model is the singular-value recursion).
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    generator = torch.Generator().manual_seed(seed)
    Q = sylvester_hadamard(K)
    if init == "hadamard":
        start = hadamard_init(K, d, scale=init_scale, generator=generator)
        W, H, R, a, b = start.W, start.H, start.R, start.a, start.b
    else:
        W, H = random_init(K, d, scale=init_scale, generator=generator)
    log_at = set(log_at)
    history = []
    for t in range(steps + 1):
        if t in log_at:
            record = {"step": t, "loss": float(ce_logit_grad(W @ H)[0]), **nc_metrics(W, H, Q)}
            if init == "hadamard":
                record["reduced_gap"] = float(max((W - Q * a @ R.mT).abs().max(), (H - R * b @ Q).abs().max()))
            history.append(record)
        if t == steps:
            break
        W, H, _ = gd_step(W, H, lr)
        if init == "hadamard":
            a, b = reduced_step(a, b, lr, Q)
    return history


# ---- the testbed contract ----------------------------------------------------------------------


def _non_increasing(values: list[float], rel_tol: float = 1e-9) -> bool:
    return all(later <= earlier * (1.0 + rel_tol) for earlier, later in zip(values, values[1:]))


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Both initialisations from ``seed``; history keys ``<init>/<metric>``; finals at the last checkpoint plus
    the claim's per-seed quantities (drops from t = 0, monotone over :func:`claim_checkpoints`, the largest
    off-diagonal, the early rise of sv_ratio above its t = 0 value)."""
    log_at = checkpoints(params["steps"], params["log_points"])
    claim_steps = claim_checkpoints(params["steps"])
    by_step: dict[int, dict[str, Any]] = {t: {"step": t} for t in log_at}
    final: dict[str, float] = {}
    for init in INITS:
        records = train_ufm(init, K=params["K"], d=params["d"], lr=params["lr"], steps=params["steps"],
                            log_at=log_at, seed=seed, init_scale=params["init_scale"])
        for record in records:
            by_step[record["step"]].update({f"{init}/{k}": v for k, v in record.items() if k != "step"})
        first, last = records[0], records[-1]
        at_claim = [r for r in records if r["step"] in claim_steps]
        final.update({f"{init}/{k}": v for k, v in last.items() if k != "step"})
        final[f"{init}/sv_ratio_drop"] = 1.0 - last["sv_ratio"] / first["sv_ratio"]
        final[f"{init}/nc2_feat_drop"] = 1.0 - last["nc2_feat"] / first["nc2_feat"]
        final[f"{init}/offdiag_max"] = max(r["offdiag"] for r in records)
        final[f"{init}/sv_ratio_monotone"] = float(_non_increasing([r["sv_ratio"] for r in at_claim]))
        final[f"{init}/nc2_feat_monotone"] = float(_non_increasing([r["nc2_feat"] for r in at_claim]))
        final[f"{init}/sv_ratio_early_rise"] = max(r["sv_ratio"] for r in records) / first["sv_ratio"] - 1.0
    return {"history": list(by_step.values()), "final": final}


def _seed_checks(final: dict[str, float], params: dict[str, Any]) -> dict[str, bool]:
    return {
        "offdiag": final["hadamard/offdiag_max"] < params["offdiag_tol"],
        "sv_ratio monotone": final["hadamard/sv_ratio_monotone"] == 1.0,
        "NC2 monotone": final["hadamard/nc2_feat_monotone"] == 1.0,
        "sv_ratio drop": final["hadamard/sv_ratio_drop"] >= params["drop"],
        "NC2 drop": final["hadamard/nc2_feat_drop"] >= params["drop"],
        "NC3": final["hadamard/nc3"] < params["nc3_tol"],
    }


def claim(results: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Holds when every seed meets every criterion of spec A1.3; ``measured`` is the drop of sv_ratio."""
    finals = [r["final"] for r in results]
    drops = [f["hadamard/sv_ratio_drop"] for f in finals]
    mean, low, high = mean_interval(drops)
    checks = [_seed_checks(f, params) for f in finals]
    n = len(finals)
    passed = {name: sum(c[name] for c in checks) for name in checks[0]}

    def mean_of(key: str) -> float:
        return math.fsum(f[key] for f in finals) / n

    detail = (
        f"Hadamard init, {n} seed(s), {params['steps']} GD steps, checks passed per seed: "
        + ", ".join(f"{name} {count}/{n}" for name, count in passed.items())
        + f". Max off-diagonal of QᵀZQ {max(f['hadamard/offdiag_max'] for f in finals):.1e} "
        f"(tolerance {params['offdiag_tol']:g}); NC2 drop {mean_of('hadamard/nc2_feat_drop'):.1%}; final NC3 "
        f"{mean_of('hadamard/nc3'):.2e} (bound {params['nc3_tol']:g}); full model vs reduced recursion "
        f"{max(f['hadamard/reduced_gap'] for f in finals):.1e}; monotone over steps "
        f"{', '.join(map(str, claim_checkpoints(params['steps'])))} (on the dense grid sv_ratio first rises by up to "
        f"{max(f['hadamard/sv_ratio_early_rise'] for f in finals):.1%}). Random init for contrast: off-diagonal "
        f"{mean_of('random/offdiag'):.2f}, sv_ratio {mean_of('random/sv_ratio'):.2f} (drop "
        f"{mean_of('random/sv_ratio_drop'):.1%}), NC2 drop {mean_of('random/nc2_feat_drop'):.1%}."
    )
    return {
        "text": (f"From a Hadamard init, QᵀZQ stays diagonal (< {params['offdiag_tol']:g}), sv_ratio and NC2 fall "
                 f"monotonically over steps {', '.join(map(str, claim_checkpoints(params['steps'])))} to ≥ "
                 f"{params['drop']:.0%} below t=0, and NC3 < {params['nc3_tol']:g}, on every seed"),
        "metric": "hadamard/sv_ratio_drop",
        "measured": mean,
        "interval": None if n < 2 else [low, high],
        "threshold": params["drop"],
        "holds": all(all(c.values()) for c in checks),
        "detail": detail,
    }


def figures(results: list[dict[str, Any]], params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """sv_ratio, NC2, the off-diagonal of QᵀZQ, NC3 and the loss over GD steps (log axes), Hadamard vs random."""
    colours = {"hadamard": RUN_COLOURS[0], "random": RUN_COLOURS[1]}
    plus_one = lambda t: t + 1  # noqa: E731 - step 0 on a log axis
    x_title = "GD step + 1"

    def line(init: str, metric: str, label: str = "", dash: str = "solid"):
        return series(f"{init} init{label}", results, f"{init}/{metric}", x_transform=plus_one,
                      colour=colours[init], dash=dash)

    return [
        ("Spectral spread of the centred logits",
         band_figure([line(i, "sv_ratio") for i in INITS], x_title=x_title, y_title="sv_ratio (max/min of top K−1)",
                     log_x=True, log_y=True, hlines=[(1.0, "simplex ETF")]),
         "max/min of the top K−1 singular values of the class-centred logits; 1 at neural collapse."),
        ("NC2: distance to the simplex ETF",
         band_figure([line(i, m, lab, dash) for i in INITS
                      for m, lab, dash in (("nc2_feat", ": features", "solid"), ("nc2_cls", ": classifier", "dash"))],
                     x_title=x_title, y_title="mean |cos + 1/(K−1)|", log_x=True, log_y=True),
         "Mean over class pairs of |cos(centred vectors) + 1/(K−1)|; 0 at a simplex ETF."),
        ("Frozen singular vectors: off-diagonal of QᵀZQ",
         band_figure([line(i, "offdiag") for i in INITS]
                     + [line("hadamard", "reduced_gap", ": full model − reduced recursion", "dot")],
                     x_title=x_title, y_title="max |off-diagonal| (log)", log_x=True, log_y=True,
                     hlines=[(params["offdiag_tol"], "claim tolerance")]),
         "≈ 1e-13 from a Hadamard init (the singular vectors never move; GD equals the singular-value recursion); "
         "O(1) from a random init."),
        ("NC3: self-duality of classifier and features",
         band_figure([line(i, "nc3") for i in INITS], x_title=x_title, y_title="‖W̄/‖W̄‖ − H̄ᵀ/‖H̄‖‖_F",
                     log_x=True, log_y=True, hlines=[(params["nc3_tol"], "claim bound")]),
         "Distance between the normalised centred classifier and the transposed centred features."),
        ("Cross-entropy loss",
         band_figure([line(i, "loss") for i in INITS], x_title=x_title, y_title="mean cross-entropy",
                     log_x=True, log_y=True),
         "Training loss over the K samples."),
    ]
