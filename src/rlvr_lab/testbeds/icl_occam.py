"""In-context Occam's razor: a transformer trained on a mixture of a simple and a complex task family, against
exact Bayesian references.

arXiv 2506.19351 (Deora, Vasudeva, Behnia, Thrampoulidis, "In-Context Occam's Razor: How Transformers Prefer
Simpler Hypotheses on the Fly", COLM 2025). The task families are nested: the complex class contains the simple
one. A transformer trained on both infers in context which class a prompt comes from and, given data that the
simple class explains, prefers it to the complex one. The paper explains this with Bayes: the marginal
likelihood of a class trades fit against complexity, so the posterior moves to the simplest class that fits.

Two families, both reconstructions [I] except as noted (spec A4.1, A4.2):

- Markov chains over ``V`` tokens, order 1 vs order 3 (the orders are from a summary of the paper; the rest is
  ours). Every conditional row ~ Dirichlet(``alpha`` 1). The exact references are the Dirichlet-multinomial
  posterior predictive of each order, its marginal likelihood and their Bayesian model average (BMA). Training a
  transformer on this family needs accelerator-scale steps, so here only the references are computed: the
  posterior weight of order 1 shows the Occam preference that the marginal likelihood alone implements.
- Linear regression, ``y = w.x + sigma eps`` with ``x ~ N(0, I_d2)``; simple tasks use only the first ``d1``
  coordinates of ``w``, complex tasks all ``d2``; ``w`` has N(0, 1) entries. References: the posterior mean of
  each class (ridge with lambda = sigma^2, min-norm least squares at sigma = 0), the Gaussian marginal likelihood
  ``N(y; 0, X_S X_S^T + sigma^2 I)`` and the BMA. A small causal transformer is trained in context on a 1:1
  mixture: tokens ``[x_i; 0]`` and ``[0; y_i]`` interleaved, the prediction of ``y_i`` read at the ``x_i`` token.

The claim (spec A4.2c): on simple-task prompts with d1 <= k < d2 examples, consistent with both classes, the
transformer's error is well below the complex class's least-squares error (mean ratio over k = 1, 2, 3 below
0.7), i.e. it does not fall back on the complex hypothesis the data do not need.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from rlvr_lab.eval.intervals import mean_interval
from rlvr_lab.testbeds.plots import RUN_COLOURS, band_figure, series

NAME = "icl-occam"
PAPER = "2506.19351"
TITLE = "In-context Occam's razor: transformer vs Bayesian references"
CLAIM = ("Trained on a mix of simple (d1-dimensional) and complex (d2-dimensional) linear-regression tasks, a "
         "transformer given simple-task data that both classes fit predicts far better than the complex "
         "hypothesis: it prefers the simplest consistent explanation, as the Bayesian posterior does.")

DEFAULTS: dict[str, Any] = {
    # linear-regression family (spec A4.2c, calibrated with d2=4, d1=1, 8 pairs, sigma=0) [I]
    "d1": 1,
    "d2": 4,
    "n_context": 8,
    "sigma": 0.0,
    "simple_fraction": 0.5,
    "noise_floor": 0.01,     # noise level the marginal likelihood assumes when sigma = 0 (sigma -> 0 limit) [I]
    # transformer and optimiser (spec A4.2c) [I]
    "width": 32,
    "layers": 2,
    "heads": 2,
    "lr": 1e-3,
    "batch_size": 64,
    "steps": 12000,
    "eval_tasks": 2000,
    # claim (spec A4.2c: mean over k in {1, 2, 3} of model MSE / complex-LS MSE on simple prompts < 0.7)
    "claim_ks": [1, 2, 3],
    "claim_threshold": 0.7,
    # Markov references (spec A4.1/A4.2b) [I except the orders]
    "markov_vocab": 3,
    "markov_orders": [1, 3],
    "markov_alpha": 1.0,
    "markov_length": 128,
    "markov_sequences": 200,
    "markov_every": 8,
}
SMALL: dict[str, Any] = {"steps": 6000, "eval_tasks": 1000, "markov_sequences": 50}


# ---- Markov chains: Dirichlet-multinomial references ---------------------------------------------------


def sample_markov_chain(order: int, vocab: int, length: int, *, alpha: float,
                        rng: np.random.Generator) -> np.ndarray:
    """(length,) tokens of an order-``order`` chain whose ``vocab**order`` rows are drawn ~ Dirichlet(alpha 1);
    the first ``order`` tokens are uniform."""
    rows = rng.dirichlet(alpha * np.ones(vocab), size=vocab ** order)
    x = np.empty(length, dtype=np.int64)
    x[:order] = rng.integers(vocab, size=order)
    for t in range(order, length):
        x[t] = rng.choice(vocab, p=rows[context_id(x[t - order:t], vocab)])
    return x


def context_id(context: np.ndarray, vocab: int) -> int:
    """Index of a context (oldest token first) among the ``vocab**len(context)`` contexts."""
    out = 0
    for v in context:
        out = out * vocab + int(v)
    return out


def transition_counts(x: np.ndarray, order: int, vocab: int, *, start: int, end: int | None = None) -> np.ndarray:
    """(vocab**order, vocab) counts N(c, v) of token v after context c, over targets t in [start, end)."""
    end = len(x) if end is None else end
    if start < order:
        raise ValueError(f"start ({start}) must be >= order ({order}): the first targets have no full context")
    counts = np.zeros((vocab ** order, vocab))
    for t in range(start, end):
        counts[context_id(x[t - order:t], vocab), x[t]] += 1
    return counts


def log_marginal_dirichlet(x: np.ndarray, order: int, vocab: int, *, alpha: float, start: int,
                           end: int | None = None) -> float:
    """log ML_r = sum_c [lgamma(V a) - lgamma(N(c) + V a) + sum_v (lgamma(N(c, v) + a) - lgamma(a))].

    The probability of targets x_start..x_{end-1} under an order-r chain with Dirichlet(a 1) rows integrated
    out (spec A4.1 [D]); contexts never seen contribute 0.
    """
    counts = transition_counts(x, order, vocab, start=start, end=end)
    per_row = math.lgamma(vocab * alpha) - np.array([math.lgamma(n + vocab * alpha) for n in counts.sum(1)])
    per_cell = np.vectorize(math.lgamma)(counts + alpha) - math.lgamma(alpha)
    return float(per_row.sum() + per_cell.sum())


def dirichlet_predictive(x: np.ndarray, order: int, vocab: int, *, alpha: float, start: int) -> np.ndarray:
    """(T, V): row t is q_r(. | x_{<t}) = (N(c_t, .) + a) / (N(c_t) + V a) with counts over targets [start, t).

    Rows t < start are uniform (no context to condition on yet). By the chain rule the sum of the log
    predictive probabilities of x_start..x_{t-1} is :func:`log_marginal_dirichlet` over [start, t).
    """
    counts = np.zeros((vocab ** order, vocab))
    out = np.full((len(x), vocab), 1.0 / vocab)
    for t in range(start, len(x)):
        c = context_id(x[t - order:t], vocab)
        out[t] = (counts[c] + alpha) / (counts[c].sum() + vocab * alpha)
        counts[c, x[t]] += 1
    return out


def bma_markov(x: np.ndarray, orders: list[int], vocab: int, *, alpha: float,
               prior: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weights (T + 1, R), predictive (T, V)): posterior over the orders and the BMA next-token distribution.

    Every order counts targets from ``start = max(orders)`` on, so all orders explain the same tokens.
    ``weights[t]`` is the posterior after targets x_start..x_{t-1} (the prior for t <= start); the BMA
    prediction of x_t mixes each order's predictive with ``weights[t]``.
    """
    prior = [1.0 / len(orders)] * len(orders) if prior is None else prior
    start = max(orders)
    preds = np.stack([dirichlet_predictive(x, r, vocab, alpha=alpha, start=start) for r in orders])  # (R, T, V)
    token_logp = np.log(preds[:, np.arange(len(x)), x])  # (R, T)
    token_logp[:, :start] = 0.0
    log_post = np.log(np.asarray(prior))[:, None] + np.concatenate(
        [np.zeros((len(orders), 1)), np.cumsum(token_logp, axis=1)], axis=1)  # (R, T + 1)
    weights = np.exp(log_post - log_post.max(0, keepdims=True))
    weights = (weights / weights.sum(0, keepdims=True)).T  # (T + 1, R)
    predictive = np.einsum("tr,rtv->tv", weights[:-1], preds)
    return weights, predictive


def markov_posterior_curves(p: dict[str, Any], rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Mean posterior weight of the lowest order, per true order: {order: (T + 1,)} over ``markov_sequences``."""
    orders, vocab, alpha = list(p["markov_orders"]), p["markov_vocab"], p["markov_alpha"]
    out = {}
    for true_order in orders:
        curves = [bma_markov(sample_markov_chain(true_order, vocab, p["markov_length"], alpha=alpha, rng=rng),
                             orders, vocab, alpha=alpha)[0][:, 0] for _ in range(p["markov_sequences"])]
        out[true_order] = np.mean(curves, axis=0)
    return out


# ---- linear regression: Gaussian references ------------------------------------------------------------


def sample_linreg(batch: int, n_points: int, *, d1: int, d2: int, sigma: float, simple: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (B, N, d2), y (B, N), w (B, d2)); rows with ``simple[b]`` have w zero past coordinate d1."""
    x = torch.randn(batch, n_points, d2, generator=generator)
    w = torch.randn(batch, d2, generator=generator)
    w[simple, d1:] = 0.0
    y = torch.einsum("bnd,bd->bn", x, w) + sigma * torch.randn(batch, n_points, generator=generator)
    return x, y, w


def posterior_mean_predict(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, *, sigma: float) -> torch.Tensor:
    """(B,) posterior-mean prediction at ``x_query`` under w ~ N(0, I), noise sigma, from k examples.

    x: (B, k, d); y: (B, k); x_query: (B, d). Kernel form: w = X^T (X X^T + sigma^2 I)^-1 y (ridge with
    lambda = sigma^2); at sigma = 0 the min-norm least-squares solution pinv(X) y. No examples predict 0.
    """
    b, k, d = x.shape
    if k == 0:
        return torch.zeros(b, dtype=x.dtype)
    if sigma == 0.0:
        w = torch.linalg.pinv(x) @ y.unsqueeze(-1)  # (B, d, 1)
    else:
        gram = x @ x.transpose(1, 2) + sigma ** 2 * torch.eye(k, dtype=x.dtype)
        w = x.transpose(1, 2) @ torch.linalg.solve(gram, y.unsqueeze(-1))
    return (x_query.unsqueeze(1) @ w).reshape(b)


def gaussian_log_marginal(x: torch.Tensor, y: torch.Tensor, *, sigma: float) -> torch.Tensor:
    """(B,) log N(y; 0, X X^T + sigma^2 I): the evidence of a class with prior w ~ N(0, I) (sigma > 0)."""
    b, k, _ = x.shape
    if k == 0:
        return torch.zeros(b, dtype=x.dtype)
    cov = x @ x.transpose(1, 2) + sigma ** 2 * torch.eye(k, dtype=x.dtype)
    chol = torch.linalg.cholesky(cov)
    alpha = torch.cholesky_solve(y.unsqueeze(-1), chol).squeeze(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
    return -0.5 * ((y * alpha).sum(-1) + logdet + k * math.log(2.0 * math.pi))


def linreg_references(x: torch.Tensor, y: torch.Tensor, k: int, *, d1: int, sigma: float, noise_floor: float,
                      prior_simple: float = 0.5) -> dict[str, torch.Tensor]:
    """References for predicting y_k from the first k pairs: each class's posterior mean, P(simple), the BMA.

    x: (B, N, d2) float64; y: (B, N). The class evidences use ``max(sigma, noise_floor)`` (sigma = 0 makes the
    simple class's covariance singular once k > d1; the floor gives the sigma -> 0 limit up to a tiny error).
    """
    xs, ys, xq = x[:, :k], y[:, :k], x[:, k]
    simple = posterior_mean_predict(xs[..., :d1], ys, xq[:, :d1], sigma=sigma)
    complex_ = posterior_mean_predict(xs, ys, xq, sigma=sigma)
    s = max(sigma, noise_floor)
    log_odds = (gaussian_log_marginal(xs[..., :d1], ys, sigma=s) - gaussian_log_marginal(xs, ys, sigma=s)
                + math.log(prior_simple / (1.0 - prior_simple)))
    p_simple = torch.sigmoid(log_odds)
    return {"simple": simple, "complex": complex_, "p_simple": p_simple,
            "bma": p_simple * simple + (1.0 - p_simple) * complex_}


# ---- transformer trained in context ----------------------------------------------------------------------


class InContextRegressor(nn.Module):
    """Causal pre-LN transformer over interleaved ``[x_i; 0]``, ``[0; y_i]`` tokens; reads y_i at x_i's token."""

    def __init__(self, dim: int, n_points: int, *, width: int, layers: int, heads: int):
        super().__init__()
        self.read_in = nn.Linear(dim + 1, width)
        self.positions = nn.Parameter(torch.zeros(2 * n_points, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.read_out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (B, N, d); y: (B, N) -> (B, N) prediction of y_i from x_1..x_i and y_1..y_{i-1}."""
        b, n, d = x.shape
        x_tokens = torch.cat([x, x.new_zeros(b, n, 1)], -1)
        y_tokens = torch.cat([x.new_zeros(b, n, d), y.unsqueeze(-1)], -1)
        seq = torch.stack([x_tokens, y_tokens], 2).reshape(b, 2 * n, d + 1)  # x_1, y_1, x_2, y_2, ...
        mask = nn.Transformer.generate_square_subsequent_mask(2 * n)
        h = self.blocks(self.read_in(seq) + self.positions[: 2 * n], mask=mask, is_causal=True)
        return self.read_out(h[:, 0::2]).squeeze(-1)


def train_regressor(p: dict[str, Any], seed: int) -> tuple[InContextRegressor, list[float]]:
    """Train on the 1:1 simple/complex mixture; returns the model and the loss every 100 steps."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    model = InContextRegressor(p["d2"], p["n_context"] + 1, width=p["width"], layers=p["layers"], heads=p["heads"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=0.0, fused=True)
    losses = []
    for step in range(p["steps"]):
        simple = torch.rand(p["batch_size"], generator=data) < p["simple_fraction"]
        x, y, _ = sample_linreg(p["batch_size"], p["n_context"] + 1, d1=p["d1"], d2=p["d2"], sigma=p["sigma"],
                                simple=simple, generator=data)
        loss = ((model(x, y) - y) ** 2).mean()  # every position: predict y_i from i - 1 pairs and x_i
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == p["steps"] - 1:
            losses.append(float(loss.detach()))
    return model, losses


@torch.no_grad()
def evaluate_regressor(model: nn.Module, p: dict[str, Any], *, simple: bool,
                       generator: torch.Generator) -> list[dict[str, float]]:
    """Per context size k = 0..n_context: MSE of the model and of each reference on fresh prompts of one class,
    the model's squared distance to the BMA, and the mean posterior P(simple)."""
    n = p["eval_tasks"]
    x, y, _ = sample_linreg(n, p["n_context"] + 1, d1=p["d1"], d2=p["d2"], sigma=p["sigma"],
                            simple=torch.full((n,), simple), generator=generator)
    model.eval()
    pred = model(x, y).double()
    xd, yd = x.double(), y.double()
    rows = []
    for k in range(p["n_context"] + 1):
        refs = linreg_references(xd, yd, k, d1=p["d1"], sigma=p["sigma"], noise_floor=p["noise_floor"])
        target = yd[:, k]
        rows.append({"model_mse": float(((pred[:, k] - target) ** 2).mean()),
                     "simple_mse": float(((refs["simple"] - target) ** 2).mean()),
                     "complex_mse": float(((refs["complex"] - target) ** 2).mean()),
                     "bma_mse": float(((refs["bma"] - target) ** 2).mean()),
                     "model_vs_bma": float(((pred[:, k] - refs["bma"]) ** 2).mean()),
                     "p_simple": float(refs["p_simple"].mean())})
    return rows


def occam_ratio(rows: list[dict[str, float]], ks: list[int]) -> float:
    """Mean over ``ks`` of model MSE / complex-class MSE (simple prompts: < 1 means the model beats the complex
    hypothesis; 0 means it matches the simple one when sigma = 0)."""
    return float(np.mean([rows[k]["model_mse"] / rows[k]["complex_mse"] for k in ks]))


# ---- one run ---------------------------------------------------------------------------------------------


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train the in-context regressor and compare it with the references; also the Markov posterior curves.

    History: linear-regression records keyed by ``context_pairs`` (k = 0..n_context, ``step`` = k), then Markov
    records keyed by ``context_tokens`` (every ``markov_every`` tokens, ``step`` = t).
    """
    p = {**DEFAULTS, **params}
    if not 0 < p["d1"] < p["d2"]:
        raise ValueError(f"need 0 < d1 < d2, got d1={p['d1']}, d2={p['d2']}")
    if max(p["claim_ks"]) > p["n_context"]:
        raise ValueError(f"claim_ks {p['claim_ks']} exceed n_context {p['n_context']}")
    model, losses = train_regressor(p, seed)
    evaluation = torch.Generator().manual_seed(10_000 + seed)
    by_class = {name: evaluate_regressor(model, p, simple=name == "simple", generator=evaluation)
                for name in ("simple", "complex")}
    history: list[dict[str, Any]] = []
    for k in range(p["n_context"] + 1):
        record: dict[str, Any] = {"step": k, "context_pairs": k}
        for name, rows in by_class.items():
            record |= {f"{key}/{name}": value for key, value in rows[k].items()}
        history.append(record)
    curves = markov_posterior_curves(p, np.random.default_rng([seed, 7]))
    low = min(p["markov_orders"])
    for t in range(p["markov_every"], p["markov_length"] + 1, p["markov_every"]):
        history.append({"step": t, "context_tokens": t,
                        **{f"p_order{low}/order{r}_data": float(c[t]) for r, c in curves.items()}})
    final = {"occam_ratio": occam_ratio(by_class["simple"], p["claim_ks"]),
             "train_loss": float(np.mean(losses[-10:])),
             **{f"model_mse/simple/k={k}": by_class["simple"][k]["model_mse"] for k in p["claim_ks"]},
             **{f"complex_mse/simple/k={k}": by_class["simple"][k]["complex_mse"] for k in p["claim_ks"]},
             **{f"model_vs_bma/simple/k={k}": by_class["simple"][k]["model_vs_bma"] for k in p["claim_ks"]},
             **{f"p_order{low}@{p['markov_length']}/order{r}_data": float(c[-1]) for r, c in curves.items()}}
    return {"history": history, "final": final}


# ---- claim and figures ---------------------------------------------------------------------------------


def claim(results: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Mean over seeds of :func:`occam_ratio` on simple prompts; holds below ``claim_threshold``."""
    p = {**DEFAULTS, **params}
    ratios = [r["final"]["occam_ratio"] for r in results]
    mean, lo, hi = mean_interval(ratios)
    interval = None if math.isnan(lo) else [lo, hi]
    ks = p["claim_ks"]

    def avg(key: str, k: int) -> float:
        return float(np.mean([next(h[key] for h in r["history"] if h.get("context_pairs") == k) for r in results]))

    simple_rows = ", ".join(
        f"k={k}: model {avg('model_mse/simple', k):.3f} / simple-LS {avg('simple_mse/simple', k):.3f} / complex-LS "
        f"{avg('complex_mse/simple', k):.3f} / BMA {avg('bma_mse/simple', k):.3f} (model-BMA distance "
        f"{avg('model_vs_bma/simple', k):.3f})" for k in ks)
    complex_ks = [k for k in (p["d2"], p["d2"] + 2, p["n_context"]) if k <= p["n_context"]]
    complex_rows = ", ".join(f"k={k}: model {avg('model_mse/complex', k):.3f} / complex-LS "
                             f"{avg('complex_mse/complex', k):.3f}" for k in dict.fromkeys(complex_ks))
    low, length = min(p["markov_orders"]), p["markov_length"]
    markov = ", ".join(
        f"order-{r} data {np.mean([res['final'][f'p_order{low}@{length}/order{r}_data'] for res in results]):.3f}"
        for r in p["markov_orders"])
    detail = (f"per-seed ratios: {', '.join(f'{v:.3f}' for v in ratios)}. Simple prompts (MSE): {simple_rows}. "
              f"Complex prompts: {complex_rows}. Bayesian P(order {low}) at t={length}: {markov}.")
    return {
        "text": f"On simple-task prompts with k in {ks} examples (both classes fit them), the transformer's MSE "
                f"is below {p['claim_threshold']} x the complex hypothesis' least-squares MSE (mean over k).",
        "metric": "mean_k model MSE / complex-LS MSE (simple prompts)",
        "measured": mean,
        "interval": interval,
        "threshold": p["claim_threshold"],
        "holds": bool(mean < p["claim_threshold"]),
        "detail": detail,
    }


def figures(results: list[dict[str, Any]], params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Headline: prediction error against context size on simple-task prompts, the transformer against the
    Bayesian references; then the same on complex-task prompts, and the references' posterior weight of the
    simple class (linear regression and Markov chains)."""
    p = {**DEFAULTS, **params}
    out = []
    for kind in ("simple", "complex"):
        lines = [series(label, results, f"{key}/{kind}", x="context_pairs", colour=RUN_COLOURS[i], dash=dash)
                 for i, (key, label, dash) in enumerate((
                     ("model_mse", "transformer", "solid"),
                     ("simple_mse", f"simple class (d={p['d1']}): posterior mean", "dot"),
                     ("complex_mse", f"complex class (d={p['d2']}): posterior mean", "dash"),
                     ("bma_mse", "Bayesian model average", "dashdot")))]
        fig = band_figure(lines, x_title="context examples k", y_title="MSE of the prediction of the next y")
        fig.add_vrect(x0=p["d1"] - 0.5, x1=p["d2"] - 0.5, fillcolor="#94a3b8", opacity=0.12, line_width=0)
        out.append((f"Transformer vs Bayesian references over context length ({kind}-task prompts)", fig,
                    f"Shaded: d1 <= k < d2, where the data fit both classes. sigma = {p['sigma']:g}; the class "
                    "posterior means are min-norm least squares at sigma = 0."))
    low = min(p["markov_orders"])
    posterior = [series(f"linear regression, {kind} tasks (x = examples)", results, f"p_simple/{kind}",
                        x="context_pairs", colour=RUN_COLOURS[i]) for i, kind in enumerate(("simple", "complex"))]
    posterior += [series(f"Markov, order-{r} data (x = tokens)", results, f"p_order{low}/order{r}_data",
                         x="context_tokens", colour=RUN_COLOURS[2 + i], dash="dash")
                  for i, r in enumerate(p["markov_orders"])]
    out.append(("Bayesian posterior of the simplest hypothesis over context length",
                band_figure(posterior, x_title="context length", y_title="posterior probability of the simple class",
                            log_x=True, y_range=[0, 1.02]),
                f"Exact references: Gaussian evidence (linear regression, noise floor {p['noise_floor']:g} at "
                f"sigma = 0) and Dirichlet-multinomial evidence (order {low} vs "
                f"{max(p['markov_orders'])}, V = {p['markov_vocab']}), prior 1/2 each."))
    return out
