"""Spectral gradient descent vs gradient descent on imbalanced Gaussian mixtures (arXiv 2510.22980, Vasudeva,
Deora, Zhao, Sharan, Thrampoulidis, "How Muon's Spectral Design Benefits Generalization: A Study on Imbalanced
Data").

Data (a reconstruction, spec A2.2): K classes with orthogonal means ``μ_k = m e_k`` in R^d, ``x = μ_y + σ ξ``,
exponentially imbalanced priors ``π_k ∝ ratio^{−k/(K−1)}`` for training and a class-balanced test set.
Models: linear ``f(x) = W x`` (W (K, d), zero init) and bilinear ``f(x) = W₂ W₁ x`` (W₁ (d, d), W₂ (K, d),
init N(0, init_scale²)); squared loss to one-hot targets (the closed-form case) or cross-entropy; full batch,
float64. Optimisers: GD, normalised GD, SpecGD (``U Vᵀ`` of the truncated SVD per weight matrix), Adam and
Muon (:mod:`rlvr_lab.optim`).

Why SpecGD is better early (spec A2.2, derived for the noise-free population MSE from W₀ = 0): the gradient
is ``−Σ_k π_k m e_k e_kᵀ``, singular values ``π_k m``. GD learns the per-class coefficient
``a_k(t) = (1 − (1 − η π_k m²)^t) / m`` (majority classes first), SpecGD ``a_k(t) = η t`` for every class until
the target ``1/m`` (equal rates), so its balanced accuracy is high from the first steps. The claim tested:
over steps 1–25 (the mean over the checkpoints 1, 5, 10 and 25, as in the spec's calibration) the mean
balanced test accuracy of SpecGD exceeds that of GD by at least 0.15, for the linear and the bilinear model
under the squared loss. The mean over every step from 1 to 25 is reported beside it. Later the gap shrinks: the converged least-squares solution is
biased by the imbalance (balanced accuracy ≈ 0.82, below SpecGD's early ≈ 0.94), an early-stopping effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rlvr_lab.eval.intervals import mean_interval
from rlvr_lab.optim import Muon, NormalizedGD, SpecGD, spec_step  # noqa: F401 - spec_step: the A2.5 API names it here
from rlvr_lab.testbeds.plots import RUN_COLOURS, band_figure, series

NAME = "specgd"
PAPER = "2510.22980"
TITLE = "How Muon's Spectral Design Benefits Generalization: A Study on Imbalanced Data"
CLAIM = ("Early in training, spectral gradient descent reaches a markedly higher class-balanced test accuracy than "
         "gradient descent on imbalanced Gaussian-mixture data, for linear and bilinear models.")

MODELS = ("linear", "bilinear")
LOSSES = ("mse", "ce")
OPTIMIZERS = ("gd", "ngd", "specgd", "adam", "muon")
LABELS = {"gd": "GD", "ngd": "NGD", "specgd": "SpecGD", "adam": "Adam", "muon": "Muon"}
COLOURS = {"gd": RUN_COLOURS[0], "specgd": RUN_COLOURS[1], "ngd": RUN_COLOURS[2], "adam": RUN_COLOURS[3],
           "muon": RUN_COLOURS[4]}

DEFAULTS: dict[str, Any] = {
    "K": 5,
    "d": 50,
    "mu_norm": 3.0,
    "sigma": 1.0,
    "ratio": 20.0,
    "n_train": 2000,
    "n_test": 5000,
    "models": list(MODELS),
    "losses": list(LOSSES),
    "optimizers": list(OPTIMIZERS),
    "lr_gd": 0.05,
    "lr_ngd": 0.01,
    "lr_specgd": 0.01,
    "lr_adam": 0.01,
    "lr_muon": 0.01,
    "steps": 400,
    "init_scale": 1e-3,
    "dense_until": 50,
    "log_every": 10,
    "window_steps": [1, 5, 10, 25],
    "threshold": 0.15,
}
"""K classes in R^d, mean norm m, noise σ, imbalance ratio (largest / smallest prior), train and (balanced)
test sizes, which models / losses / optimisers to run, one learning rate per optimiser (GD, NGD and SpecGD as
in the spec's calibration; Adam and Muon chosen at SpecGD's scale), steps, the bilinear init scale, logging
(every step up to ``dense_until``, then every ``log_every``), and the claim: the steps at which balanced
accuracies are averaged (the spec's checkpoints 1, 5, 10 and 25 of steps 1–25) and the least SpecGD − GD gap."""
SMALL: dict[str, Any] = {"steps": 25, "losses": ["mse"], "dense_until": 25}


# ---- data and models ---------------------------------------------------------------------------


def exp_priors(K: int, ratio: float) -> torch.Tensor:
    """Class priors (K,) with ``π_k ∝ ratio^{−k/(K−1)}``: class 0 the majority, ``π_0 / π_{K−1} = ratio``."""
    if K < 2 or not ratio >= 1.0:
        raise ValueError(f"need K >= 2 and ratio >= 1, got K={K}, ratio={ratio}")
    weights = ratio ** (-torch.arange(K, dtype=torch.float64) / (K - 1))
    return weights / weights.sum()


def class_means(K: int, d: int, mu_norm: float) -> torch.Tensor:
    """The means as columns, M (d, K) with ``M[:, k] = m e_k`` (orthogonal, norm m)."""
    if d < K:
        raise ValueError(f"need d >= K for orthogonal means, got d={d}, K={K}")
    M = torch.zeros(d, K, dtype=torch.float64)
    M[torch.arange(K), torch.arange(K)] = mu_norm
    return M


def make_gmm(n: int, K: int, d: int, priors: torch.Tensor, *, mu_norm: float = 3.0, sigma: float = 1.0,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)``: X (d, n) with columns ``μ_{y_i} + σ ξ_i``, labels y (n,) drawn from ``priors``."""
    y = torch.multinomial(priors, n, replacement=True, generator=generator)
    X = class_means(K, d, mu_norm)[:, y] + sigma * torch.randn(d, n, dtype=torch.float64, generator=generator)
    return X, y


@dataclass(frozen=True)
class Data:
    """Training set (with optional per-sample weights; None: 1/n each) and the balanced test set."""

    X: torch.Tensor
    """(d, n) training inputs as columns."""
    y: torch.Tensor
    """(n,) training labels."""
    X_test: torch.Tensor
    """(d, n_test) test inputs."""
    y_test: torch.Tensor
    """(n_test,) test labels."""
    K: int
    mu_norm: float
    weights: torch.Tensor | None = None
    """(n,) sample weights summing to 1 (the population loss of a noise-free set), or None."""


def make_data(params: dict[str, Any], seed: int) -> Data:
    generator = torch.Generator().manual_seed(seed)
    K, d, m = params["K"], params["d"], params["mu_norm"]
    X, y = make_gmm(params["n_train"], K, d, exp_priors(K, params["ratio"]), mu_norm=m, sigma=params["sigma"],
                    generator=generator)
    X_test, y_test = make_gmm(params["n_test"], K, d, torch.full((K,), 1.0 / K, dtype=torch.float64), mu_norm=m,
                              sigma=params["sigma"], generator=generator)
    return Data(X, y, X_test, y_test, K, m)


def make_model(model: str, K: int, d: int, *, init_scale: float = 1e-3,
               generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The weight matrices, input side first: linear ``[W]`` (K, d) at 0; bilinear ``[W₁ (d, d), W₂ (K, d)]``
    with entries ~ N(0, init_scale²)."""
    if model == "linear":
        return [torch.zeros(K, d, dtype=torch.float64, requires_grad=True)]
    if model == "bilinear":
        return [(init_scale * torch.randn(d, d, dtype=torch.float64, generator=generator)).requires_grad_(),
                (init_scale * torch.randn(K, d, dtype=torch.float64, generator=generator)).requires_grad_()]
    raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODELS)}")


def end_to_end(weights: list[torch.Tensor]) -> torch.Tensor:
    """The product of the weight matrices, output side first: (K, d)."""
    W = weights[0]
    for layer in weights[1:]:
        W = layer @ W
    return W


def objective(F: torch.Tensor, y: torch.Tensor, loss: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean over samples of the loss of outputs F (K, n) with labels y (n,).

    ``mse``: ``½ ‖f_i − e_{y_i}‖²`` (its gradient in F is ``(F − Y) / n``); ``ce``: ``−log softmax(f_i)_{y_i}``.
    ``weights`` (n,) sum to 1; None means 1/n each.
    """
    if loss == "mse":
        per_sample = 0.5 * (F - torch.nn.functional.one_hot(y, F.shape[0]).to(F.dtype).mT).pow(2).sum(0)
    elif loss == "ce":
        per_sample = torch.nn.functional.cross_entropy(F.mT, y, reduction="none")
    else:
        raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    return per_sample.mean() if weights is None else (weights * per_sample).sum()


def make_optimizer(name: str, weights: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """GD (SGD without momentum on the full batch), NGD, SpecGD, Adam or Muon (momentum 0.95, Nesterov,
    5 Newton–Schulz steps) over the weight matrices."""
    if name == "gd":
        return torch.optim.SGD(weights, lr=lr)
    if name == "ngd":
        return NormalizedGD(weights, lr=lr)
    if name == "specgd":
        return SpecGD(weights, lr=lr)
    if name == "adam":
        return torch.optim.Adam(weights, lr=lr)
    if name == "muon":
        return Muon(weights, lr=lr)
    raise ValueError(f"unknown optimiser {name!r}; allowed: {', '.join(OPTIMIZERS)}")


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, K: int) -> tuple[float, list[float]]:
    """``(mean of the per-class accuracies, per-class accuracies)``; a class absent from y counts as NaN."""
    per_class = [float((pred[y == k] == k).double().mean()) if bool((y == k).any()) else math.nan for k in range(K)]
    present = [a for a in per_class if not math.isnan(a)]
    return math.fsum(present) / len(present), per_class


def evaluate(weights: list[torch.Tensor], data: Data) -> dict[str, float]:
    """Balanced and worst-class test accuracy, per-class accuracies ``acc_k<k>`` and per-class coefficients
    ``coef_k<k>`` = ``m (W μ_k)_k / m`` = ``m W[k, k]``: the share of the noise-free target ``1/m`` learned."""
    with torch.no_grad():
        W = end_to_end(weights)
        bal, per_class = balanced_accuracy((W @ data.X_test).argmax(0), data.y_test, data.K)
        record = {"bal_acc": bal, "worst_acc": min(per_class)}
        record.update({f"acc_k{k}": a for k, a in enumerate(per_class)})
        record.update({f"coef_k{k}": float(data.mu_norm * W[k, k]) for k in range(data.K)})
    return record


def train(model: str, optimizer: str, loss: str, data: Data, *, lr: float, steps: int, log_at: set[int] | list[int],
          init_scale: float = 1e-3, seed: int = 0) -> list[dict[str, float]]:
    """Full-batch training; a record (``step`` and :func:`evaluate`) after each number of updates in ``log_at``."""
    weights = make_model(model, data.K, data.X.shape[0], init_scale=init_scale,
                         generator=torch.Generator().manual_seed(seed))
    opt = make_optimizer(optimizer, weights, lr)
    log_at = set(log_at)
    history = []
    for t in range(steps + 1):
        if t in log_at:
            history.append({"step": t, **evaluate(weights, data)})
        if t == steps:
            break
        opt.zero_grad(set_to_none=True)
        objective(end_to_end(weights) @ data.X, data.y, loss, data.weights).backward()
        opt.step()
    return history


def gd_closed_form(priors: torch.Tensor, mu_norm: float, lr: float, t: int) -> torch.Tensor:
    """GD's per-class coefficients (K,) after t steps on the noise-free population MSE from W = 0:
    ``a_k(t) = (1 − (1 − η π_k m²)^t) / m`` (spec A2.2)."""
    return (1.0 - (1.0 - lr * priors * mu_norm ** 2) ** t) / mu_norm


# ---- the testbed contract ----------------------------------------------------------------------


def log_steps(steps: int, dense_until: int, log_every: int) -> list[int]:
    """Every step up to ``dense_until``, then every ``log_every``, and the last."""
    return sorted(set(range(min(steps, dense_until) + 1)) | set(range(0, steps + 1, max(1, log_every))) | {steps})


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Every model x loss x optimiser on the data of ``seed``; history keys ``<model>_<loss>/<opt>/<metric>``;
    finals: the last step's metrics, ``<model>_<loss>/<opt>/window_bal_acc``, the mean balanced accuracy over
    the claim's ``window_steps``, and ``.../window_bal_acc_every_step`` over every step in their range."""
    for key, allowed in (("models", MODELS), ("losses", LOSSES), ("optimizers", OPTIMIZERS)):
        unknown = [v for v in params[key] if v not in allowed]
        if unknown:
            raise ValueError(f"{key}: unknown {unknown}; allowed: {', '.join(allowed)}")
    data = make_data(params, seed)
    steps = params["steps"]
    log_at = log_steps(steps, params["dense_until"], params["log_every"])
    window_steps = set(params["window_steps"])
    low, high = min(window_steps), max(window_steps)
    if not window_steps <= set(log_at):
        raise ValueError(f"window_steps {sorted(window_steps)} must be logged steps (every step up to dense_until, "
                         f"then every log_every, up to steps={steps})")
    by_step: dict[int, dict[str, Any]] = {t: {"step": t} for t in log_at}
    final: dict[str, float] = {}
    for model in params["models"]:
        for loss in params["losses"]:
            for opt in params["optimizers"]:
                prefix = f"{model}_{loss}/{opt}"
                records = train(model, opt, loss, data, lr=params[f"lr_{opt}"], steps=steps, log_at=log_at,
                                init_scale=params["init_scale"], seed=seed + 1)
                for record in records:
                    by_step[record["step"]].update({f"{prefix}/{k}": v for k, v in record.items() if k != "step"})
                final.update({f"{prefix}/{k}": v for k, v in records[-1].items() if k != "step"})
                window = [r["bal_acc"] for r in records if r["step"] in window_steps]
                final[f"{prefix}/window_bal_acc"] = math.fsum(window) / len(window)
                every = [r["bal_acc"] for r in records if low <= r["step"] <= high]
                final[f"{prefix}/window_bal_acc_every_step"] = math.fsum(every) / len(every)
    return {"history": list(by_step.values()), "final": final}


def _gaps(final: dict[str, float], models: list[str], suffix: str = "") -> dict[str, float]:
    return {m: final[f"{m}_mse/specgd/window_bal_acc{suffix}"] - final[f"{m}_mse/gd/window_bal_acc{suffix}"]
            for m in models}


def claim(results: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Holds when the mean over seeds of the smaller SpecGD − GD gap (over the models, squared loss) in mean
    balanced accuracy at ``window_steps`` is at least the threshold."""
    missing = [v for key, v in (("losses", "mse"), ("optimizers", "gd"), ("optimizers", "specgd")) if v not in params[key]]
    if missing:
        raise ValueError(f"the claim compares SpecGD with GD under the squared loss; the run lacks {missing}")
    models, window = params["models"], sorted(params["window_steps"])
    low, high = window[0], window[-1]
    at = ", ".join(map(str, window))
    gaps = [_gaps(r["final"], models) for r in results]
    every = [_gaps(r["final"], models, "_every_step") for r in results]
    worst = [min(g.values()) for g in gaps]
    mean, lo, hi = mean_interval(worst)
    n = len(results)

    def mean_of(key: str) -> float:
        return math.fsum(r["final"][key] for r in results) / n

    per_model = "; ".join(
        f"{m}: SpecGD {mean_of(f'{m}_mse/specgd/window_bal_acc'):.3f} vs GD {mean_of(f'{m}_mse/gd/window_bal_acc'):.3f}"
        f" (gap {math.fsum(g[m] for g in gaps) / n:+.3f})" for m in models)
    others = "; ".join(
        f"{m}: " + ", ".join(f"{LABELS[o]} {mean_of(f'{m}_mse/{o}/window_bal_acc'):.3f}" for o in params["optimizers"])
        for m in models)
    late = "; ".join(
        f"{m}_{loss}: " + ", ".join(f"{LABELS[o]} {mean_of(f'{m}_{loss}/{o}/bal_acc'):.3f}" for o in params["optimizers"])
        for m in models for loss in params["losses"])
    every_text = ", ".join(f"{m} {math.fsum(g[m] for g in every) / n:+.3f}" for m in models)
    detail = (f"Mean balanced test accuracy at steps {at}, squared loss, {n} seed(s): {per_model}. Gap averaged "
              f"over every step {low}–{high} instead: {every_text}. All optimisers at steps {at}: {others}. "
              f"At step {params['steps']}: {late}.")
    return {
        "text": (f"Over steps {low}–{high} (mean at steps {at}), SpecGD's balanced test accuracy exceeds GD's by ≥ "
                 f"{params['threshold']:g} for the {' and the '.join(models)} model(s) under the squared loss "
                 "(the smaller of the gaps, mean over seeds)"),
        "metric": "window balanced-accuracy gap SpecGD − GD (min over models, mse)",
        "measured": mean,
        "interval": None if n < 2 else [lo, hi],
        "threshold": params["threshold"],
        "holds": mean >= params["threshold"],
        "detail": detail,
    }


def figures(results: list[dict[str, Any]], params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Balanced test accuracy over steps per optimiser, one plot per model and loss; per-class coefficients of
    GD vs SpecGD on the linear model (squared loss when run)."""
    out: list[tuple[Any, ...]] = []
    window = sorted(params["window_steps"])
    for model in params["models"]:
        for loss in params["losses"]:
            lines = [series(LABELS[o], results, f"{model}_{loss}/{o}/bal_acc", colour=COLOURS[o],
                            width=2.6 if o == "specgd" else 2.0) for o in params["optimizers"]]
            out.append((f"Balanced test accuracy: {model} model, {'squared loss' if loss == 'mse' else 'cross-entropy'}",
                        band_figure(lines, x_title="step", y_title="balanced test accuracy", log_x=True,
                                    hlines=[(1.0 / params["K"], "chance")]),
                        f"Claim: the mean at steps {', '.join(map(str, window))}. Log step axis; the early steps are "
                        "where the optimisers differ."))
    loss = "mse" if "mse" in params["losses"] else params["losses"][0]
    if "linear" in params["models"]:
        chosen = [o for o in ("specgd", "gd") if o in params["optimizers"]]
        lines = [series(f"{LABELS[o]}: class {k}", results, f"linear_{loss}/{o}/coef_k{k}",
                        colour=RUN_COLOURS[k % len(RUN_COLOURS)], dash="solid" if o == "specgd" else "dash")
                 for o in chosen for k in range(params["K"])]
        out.append(("Per-class coefficients: equal rates (SpecGD) vs prior order (GD)",
                    band_figure(lines, x_title="step", y_title="m · W[k, k] (share of the target 1/m)", log_x=True,
                                hlines=[(1.0, "noise-free target")]),
                    f"Linear model, {loss}. Class 0 is the majority (prior {float(exp_priors(params['K'], params['ratio'])[0]):.3f}), "
                    f"class {params['K'] - 1} the smallest; solid SpecGD, dashed GD."))
    return out

