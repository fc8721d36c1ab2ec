"""The Fourier head's synthetic density-estimation toy (arXiv 2410.22269; spec sections B10.2 and B10.4).

An MLP reads two inputs (x, y) and predicts the distribution of a third value z, quantised to 50 bins of
[-1, 1], through either a linear head or a :class:`~rlvr_lab.layers.fourier.FourierHead`. Three datasets,
each drawn from its own seed (variance 0.01, i.e. standard deviation 0.1, as in the paper's code):

- ``gaussian``: x ~ U(-0.8, 0.8), y ~ N(x, 0.01), z ~ N(y, 0.01);
- ``gmm2``: x, y ~ U(-0.8, 0.8), z ~ 1/2 N(x, 0.01) + 1/2 N(y, 0.01);
- ``beta``: x ~ U(-0.8, 0.8), y ~ N(x, 0.01), z = s * w with s = +-1 equally likely, w ~ Beta(100|x|, 100|y|).

As in the paper's code, the network sees the *bin indices* of x and y as floats, the target is the bin of z,
and a fixed 80/20 split (its own seed, 42) separates training from test rows.

Metrics on the test rows, each a function of pmfs (rows of probabilities over the bins):

- KL(true || predicted), averaged over rows ('batchmean'), with 1e-10 added to the predicted pmf;
- MSE between the centre of the bin nearest the predicted mean bin index and the centre of the true bin;
- the smoothness metric sum_{sigma=1}^{100} (6 / pi^2) sigma^-2 ||q - G_sigma q||_2, G_sigma a Gaussian filter of
  standard deviation sigma (in bins) with periodic ("wrap") boundary and radius m - 1, averaged over rows.
  Lower is smoother.

The true pmf is the law of the quantised target given the *continuous* inputs, exactly: the generator's
Gaussian, mixture or Beta distribution integrated over each bin (a difference of CDFs), with the mass
outside [-1, 1] in the end bins, where the quantisation puts those samples. The paper's code instead
evaluates the density at the bin centres and renormalises; the two differ by the curvature of the density
across a bin (bins are 0.04 wide, the Gaussians' sd is 0.1) and by the Beta densities' singularities at 0
and 1 when a shape parameter is below 1, which the bin integral handles and a midpoint sample cannot.

Means over seeds carry a Student's t 95% interval (``rlvr_lab.eval.intervals.mean_interval``, the convention of
every seed comparison in this repository): with 2 or 3 seeds a normal interval would be far too narrow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlvr_lab.eval.intervals import mean_interval, paired_difference, regularized_incomplete_beta
from rlvr_lab.layers.fourier import FourierHead

DATASETS = ("gaussian", "gmm2", "beta")
HEADS = ("linear", "fourier")
N_BINS = 50
VARIANCE = 0.01
"""Variance of every Gaussian of the generators (the paper's code passes 0.01 as a variance)."""
SPLIT_SEED = 42
TEST_FRACTION = 0.2
SIGMAS = tuple(range(1, 101))
KL_EPS = 1e-10
METRICS = ("kl", "smoothness_l2", "mse")


# ---- data -----------------------------------------------------------------------------------------------


def make_dataset(name: str, n_samples: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_samples`` rows: inputs (n, 2) = (x, y) and target z (n,), float64, from ``seed`` alone."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    rng = np.random.default_rng(seed)
    sd = math.sqrt(VARIANCE)
    x = rng.uniform(-0.8, 0.8, n_samples)
    if name == "gaussian":
        y = x + sd * rng.standard_normal(n_samples)
        z = y + sd * rng.standard_normal(n_samples)
    elif name == "gmm2":
        y = rng.uniform(-0.8, 0.8, n_samples)
        pick_x = rng.random(n_samples) < 0.5
        z = np.where(pick_x, x, y) + sd * rng.standard_normal(n_samples)
    else:
        y = x + sd * rng.standard_normal(n_samples)
        sign = np.where(rng.random(n_samples) < 0.5, -1.0, 1.0)
        z = sign * rng.beta(100 * np.abs(x), 100 * np.abs(y))
    return np.stack([x, y], axis=1), z


def quantise(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin index of each value for ``n_bins`` equal bins of [-1, 1]; values outside go to the end bins.

    Any shape -> the same shape, int64. A value on an interior edge belongs to the bin above it.
    """
    index = np.floor((np.asarray(values, dtype=np.float64) + 1.0) * n_bins / 2.0)
    return np.clip(index, 0, n_bins - 1).astype(np.int64)


def _normal_cdf(t: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.as_tensor(t, dtype=torch.float64)).numpy()


def true_pmf(name: str, inputs: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The law of ``quantise(z)`` given the continuous inputs: (n, 2) -> (n, n_bins), rows summing to 1.

    Each bin's mass is a difference of the conditional CDF of z at the bin's edges; the outer edges are
    -inf and +inf, because the quantisation puts every z below -1 (above 1) into the first (last) bin.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    inputs = np.asarray(inputs, dtype=np.float64)
    edges = np.linspace(-1.0, 1.0, n_bins + 1)  # (m+1,)
    x, y = inputs[:, :1], inputs[:, 1:2]  # (n, 1) each
    sd = math.sqrt(VARIANCE)
    if name == "gaussian":
        cdf = _normal_cdf((edges - y) / sd)  # (n, m+1)
    elif name == "gmm2":
        cdf = 0.5 * _normal_cdf((edges - x) / sd) + 0.5 * _normal_cdf((edges - y) / sd)
    else:
        # z = s w, s = +-1 equally likely: P(z <= t) = 1/2 + 1/2 sign(t) I_|t|(a, b) on [-1, 1]. The edges
        # are symmetric about 0, so I_|t| is computed once per distinct |t|.
        magnitudes, where = np.unique(np.abs(edges).round(12), return_inverse=True)
        cdf = np.empty((inputs.shape[0], n_bins + 1))
        for row, (a, b) in enumerate(100 * np.abs(inputs)):
            beta_cdf = np.array([regularized_incomplete_beta(a, b, float(t)) for t in magnitudes])
            cdf[row] = 0.5 + 0.5 * np.sign(edges) * beta_cdf[where]
    cdf[:, 0], cdf[:, -1] = 0.0, 1.0
    return np.diff(cdf, axis=1)


@dataclass(frozen=True)
class ToySplit:
    """One dataset, quantised and split. Inputs are bin indices as floats, as the paper's network sees them."""

    train_inputs: torch.Tensor
    """(n_train, 2) float32."""
    train_bins: torch.Tensor
    """(n_train,) int64: the target bin."""
    test_inputs: torch.Tensor
    """(n_test, 2) float32."""
    test_bins: torch.Tensor
    """(n_test,) int64."""
    test_true_pmf: torch.Tensor
    """(n_test, n_bins) float64: :func:`true_pmf` of the test rows' continuous inputs."""


def make_split(name: str, n_samples: int, *, seed: int, n_bins: int = N_BINS) -> ToySplit:
    """Draw a dataset from ``seed`` and split it 80/20 with the fixed permutation of ``SPLIT_SEED``."""
    inputs, z = make_dataset(name, n_samples, seed=seed)
    n_test = max(1, round(TEST_FRACTION * n_samples))
    if n_test >= n_samples:
        raise ValueError(f"n_samples={n_samples} leaves no training rows")
    order = np.random.default_rng(SPLIT_SEED).permutation(n_samples)
    test, train = order[:n_test], order[n_test:]
    bins_in, bins_z = quantise(inputs, n_bins), quantise(z, n_bins)
    return ToySplit(
        train_inputs=torch.as_tensor(bins_in[train], dtype=torch.float32),
        train_bins=torch.as_tensor(bins_z[train]),
        test_inputs=torch.as_tensor(bins_in[test], dtype=torch.float32),
        test_bins=torch.as_tensor(bins_z[test]),
        test_true_pmf=torch.as_tensor(true_pmf(name, inputs[test], n_bins)),
    )


# ---- metrics --------------------------------------------------------------------------------------------


def kl_divergence(true: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """KL(true || predicted) summed over bins, averaged over rows: (B, m), (B, m) -> scalar.

    Bins where ``true`` is 0 contribute 0; ``KL_EPS`` is added to the prediction before the log.
    """
    true = true.to(torch.float64)
    per_row = torch.special.xlogy(true, true) - true * torch.log(predicted.to(torch.float64) + KL_EPS)  # (B, m)
    return per_row.sum(-1).mean()


def expected_bin_mse(predicted: torch.Tensor, target_bins: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the centre of the bin at the rounded predicted mean bin index and the
    centre of the target bin: (B, m) pmf, (B,) int -> scalar."""
    n_bins = predicted.shape[-1]
    index = torch.arange(n_bins, dtype=torch.float64)  # (m,)
    mean_bin = torch.round(predicted.to(torch.float64) @ index).long().clamp(0, n_bins - 1)  # (B,)
    width = 2.0 / n_bins  # centres are -1 + (b + 1/2) width, so their distance is width times the index gap
    return ((mean_bin - target_bins).to(torch.float64) * width).pow(2).mean()


def wrap_gaussian_filters(n_bins: int, sigmas: Sequence[float] = SIGMAS) -> torch.Tensor:
    """Periodic Gaussian filters as matrices: (S, m, m), row i the weights that filtered bin i gives each bin.

    Weights exp(-j^2 / (2 sigma^2)) for offsets j = -(m-1)..m-1 (radius m - 1), normalised to sum to 1, and
    offset j landing on bin (i + j) mod m ("wrap" boundary). Offsets j and j - m reach the same bin, so
    such pairs add up.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    sigma = torch.as_tensor(list(sigmas), dtype=torch.float64)  # (S,)
    if sigma.numel() == 0 or not bool((sigma > 0).all()):
        raise ValueError(f"sigmas must be a non-empty sequence of positive numbers, got {list(sigmas)}")
    offsets = torch.arange(-(n_bins - 1), n_bins, dtype=torch.float64)  # (2m-1,)
    weights = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)  # (S, 2m-1)
    weights = weights / weights.sum(-1, keepdim=True)
    rows = torch.arange(n_bins)[:, None]  # (m, 1)
    columns = (rows + offsets.long()[None, :]) % n_bins  # (m, 2m-1): the bin that offset j of row i reads
    filters = torch.zeros(sigma.numel(), n_bins, n_bins, dtype=torch.float64)
    filters.scatter_add_(2, columns.expand(sigma.numel(), -1, -1), weights[:, None, :].expand(-1, n_bins, -1))
    return filters


def smoothness_l2(pmf: torch.Tensor, sigmas: Sequence[float] = SIGMAS) -> torch.Tensor:
    """sum_sigma (6 / pi^2) sigma^-2 ||q - G_sigma q||_2 per pmf: (..., m) -> (...). 0 for a constant q."""
    q = pmf.to(torch.float64)
    filters = wrap_gaussian_filters(q.shape[-1], sigmas)  # (S, m, m)
    filtered = torch.einsum("sij,...j->...si", filters, q)  # (..., S, m)
    distance = torch.linalg.vector_norm(q.unsqueeze(-2) - filtered, dim=-1)  # (..., S)
    alpha = 6.0 / math.pi**2 / torch.as_tensor(list(sigmas), dtype=torch.float64) ** 2  # (S,)
    return distance @ alpha


# ---- training -------------------------------------------------------------------------------------------


def make_model(head: str, *, n_bins: int = N_BINS, n_freqs: int = 12, gamma: float = 0.0) -> nn.Sequential:
    """The paper's MLP 2 -> 64 -> ReLU -> 32 -> ReLU -> head, the head a linear layer or a Fourier head."""
    if head == "linear":
        last: nn.Module = nn.Linear(32, n_bins)
    elif head == "fourier":
        last = FourierHead(32, n_bins, n_freqs, gamma=gamma)
    else:
        raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEADS)}")
    return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), last)


@dataclass(frozen=True)
class RunMetrics:
    """Test metrics of one trained model (see the module docstring)."""

    kl: float
    smoothness_l2: float
    mse: float
    seconds: float
    """Wall time of training and evaluation (not of building the model and optimiser)."""


def evaluate(model: nn.Module, split: ToySplit) -> dict[str, float]:
    """The three test metrics of ``model`` on ``split``."""
    model.eval()
    with torch.no_grad():
        predicted = torch.softmax(model(split.test_inputs), dim=-1)  # (n_test, m)
    return {
        "kl": kl_divergence(split.test_true_pmf, predicted).item(),
        "smoothness_l2": smoothness_l2(predicted).mean().item(),
        "mse": expected_bin_mse(predicted, split.test_bins).item(),
    }


def train_and_evaluate(head: str, split: ToySplit, *, seed: int, epochs: int, n_freqs: int = 12,
                       gamma: float = 0.0, batch_size: int = 32, lr: float = 1e-3) -> RunMetrics:
    """Train one model with Adam on cross-entropy (+ the Fourier head's regulariser) and evaluate it.

    ``seed`` sets the initialisation and the order of the mini-batches (reshuffled every epoch).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    model = make_model(head, n_bins=split.test_true_pmf.shape[-1], n_freqs=n_freqs, gamma=gamma)
    regulariser = model[-1] if isinstance(model[-1], FourierHead) else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()  # after the optimiser: its first construction in a process imports torch._dynamo
    order = torch.Generator().manual_seed(seed)
    n_train = split.train_bins.shape[0]
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(n_train, generator=order).split(batch_size):
            logits = model(split.train_inputs[batch])  # (b, m)
            loss = F.cross_entropy(logits, split.train_bins[batch])
            if regulariser is not None:
                loss = loss + regulariser.reg_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    metrics = evaluate(model, split)
    return RunMetrics(**metrics, seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class HeadComparison:
    """Linear vs Fourier head on one dataset over seeds."""

    dataset: str
    seeds: tuple[int, ...]
    settings: dict[str, Any]
    """epochs, n_freqs, gamma, n_samples, batch_size, lr."""
    per_seed: dict[str, dict[int, RunMetrics]]
    """head -> seed -> metrics."""

    def values(self, head: str, metric: str) -> dict[int, float]:
        """seed -> one metric of one head."""
        return {seed: getattr(run, metric) for seed, run in self.per_seed[head].items()}

    def interval(self, head: str, metric: str) -> tuple[float, float, float]:
        """(mean, low, high) over seeds, a Student's t 95% interval; NaN bounds with one seed."""
        return mean_interval(list(self.values(head, metric).values()))

    def difference(self, metric: str) -> tuple[float, float, float, int]:
        """Fourier - linear, paired by seed: (mean, low, high, n)."""
        return paired_difference(self.values("fourier", metric), self.values("linear", metric))


def compare_heads(dataset: str, *, seeds: Sequence[int], epochs: int, n_freqs: int = 12, gamma: float = 0.0,
                  n_samples: int = 5000, batch_size: int = 32, lr: float = 1e-3) -> HeadComparison:
    """Train both heads on each seed's dataset (the same split, the same seed for both heads)."""
    if not seeds:
        raise ValueError("need at least one seed")
    per_seed: dict[str, dict[int, RunMetrics]] = {head: {} for head in HEADS}
    for seed in seeds:
        split = make_split(dataset, n_samples, seed=seed)
        for head in HEADS:
            per_seed[head][seed] = train_and_evaluate(head, split, seed=seed, epochs=epochs, n_freqs=n_freqs,
                                                      gamma=gamma, batch_size=batch_size, lr=lr)
    settings = {"epochs": epochs, "n_freqs": n_freqs, "gamma": gamma, "n_samples": n_samples,
                "batch_size": batch_size, "lr": lr}
    return HeadComparison(dataset, tuple(seeds), settings, per_seed)


def comparison_record(comparison: HeadComparison) -> dict[str, Any]:
    """Plain-JSON form of a comparison: settings, per-seed metrics, intervals and paired differences."""
    return {
        "dataset": comparison.dataset,
        "seeds": list(comparison.seeds),
        "settings": dict(comparison.settings),
        "per_seed": {head: {str(seed): asdict(run) for seed, run in runs.items()}
                     for head, runs in comparison.per_seed.items()},
        "intervals": {head: {metric: list(comparison.interval(head, metric)) for metric in (*METRICS, "seconds")}
                      for head in HEADS},
        "fourier_minus_linear": {metric: list(comparison.difference(metric)) for metric in METRICS},
    }
