"""The Fourier head (arXiv 2410.22269, Gillman et al., ICLR 2025; spec section B10.1).

A drop-in replacement for the last ``nn.Linear`` of a classifier whose classes are ordered bins of a
continuous quantity. Instead of one free logit per bin, the head predicts a smooth probability density
on [-1, 1] as a truncated Fourier series and reads the bin probabilities off it:

1. a linear map z -> 2(N+1) reals, read as complex a_0..a_N (first half real parts, second half imaginary);
2. the autocorrelation c_k = sum_{j=0}^{N-k} a_{j+k} conj(a_j), k = 0..N, so c_0 = sum_j |a_j|^2 > 0;
3. the density f(x) = 1/2 + sum_{k=1}^{N} Re((c_k / c_0) e^{i pi k x}). By construction
   f(x) = |sum_j a_j e^{i pi j x}|^2 / (2 c_0), so f >= 0, and its integral over [-1, 1] is 1 (every
   k >= 1 term integrates to 0). By the Fejer-Riesz theorem every non-negative trigonometric polynomial
   of degree N has this form, so nothing is lost by the parametrisation;
4. q_b = f(x_b) / sum_b' f(x_b') at the bin centres x_b = -1 + (2b + 1) / m;
5. logits = log(q_b + eps) (the "inverse softmax": softmax of the output is q up to eps), so the usual
   cross-entropy applies unchanged;
6. a smoothness regulariser R = gamma * 2 * mean_batch sum_k 2 pi^2 k^2 |c_k|^2 on the un-normalised
   c_k (a penalty on high frequencies; the factor 2 and the un-normalised c_k follow the paper's own
   code), stored on the module for the caller to add.

Spec section B10.3 works one case by hand (N = 1, four bins); ``tests/test_layers_fourier.py`` checks it.

Everything is real arithmetic on (real, imaginary) pairs, so the head runs in any floating dtype
(bfloat16 has no complex type) and on any device, and needs no complex ``conv1d``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def bin_centres(n_bins: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
                ) -> torch.Tensor:
    """Centres of ``n_bins`` equal bins of [-1, 1]: (n_bins,), x_b = -1 + (2b + 1) / n_bins."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    steps = torch.arange(n_bins, dtype=dtype or torch.get_default_dtype(), device=device)
    return -1.0 + (2.0 * steps + 1.0) / n_bins


def autocorrelation(a_real: torch.Tensor, a_imag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c_k = sum_{j=0}^{N-k} a_{j+k} conj(a_j) for k = 0..N (arXiv 2410.22269; spec B10.1 step 2).

    a = a_real + i a_imag, each (..., N+1) -> (c_real, c_imag), each (..., N+1); c_imag[..., 0] is exactly 0.
    The sum over j is written out for all lags at once: row k of the window matrix holds a_{j+k} (0 past
    a_N), so c_k is that row times conj(a). O(N^2) work, nothing for the N <= 64 the paper uses, and no
    complex ``conv1d`` (which older torch builds lack). The test file checks it against a loop over lags.
    """
    if a_real.shape != a_imag.shape:
        raise ValueError(f"real and imaginary parts differ in shape: {tuple(a_real.shape)} vs {tuple(a_imag.shape)}")
    n = a_real.shape[-1]
    lead_re = F.pad(a_real, (0, n - 1)).unfold(-1, n, 1)  # (..., N+1 lags k, N+1 terms j): a_{j+k}
    lead_im = F.pad(a_imag, (0, n - 1)).unfold(-1, n, 1)  # (..., N+1, N+1)
    lag_re, lag_im = a_real.unsqueeze(-2), a_imag.unsqueeze(-2)  # (..., 1, N+1): a_j
    # (p + iq)(r - is) = (pr + qs) + i(qr - ps)
    c_real = (lead_re * lag_re + lead_im * lag_im).sum(-1)  # (..., N+1)
    c_imag = (lead_im * lag_re - lead_re * lag_im).sum(-1)  # (..., N+1)
    return c_real, c_imag


def fourier_density(c_real: torch.Tensor, c_imag: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f(x) = 1/2 + sum_{k=1}^{N} Re((c_k / c_0) e^{i pi k x}) from autocorrelation coefficients.

    c_real, c_imag: (..., N+1) with c_0 = c_real[..., 0] > 0; x: (L,) points of [-1, 1] -> (..., L), in the
    dtype and on the device of the coefficients.
    """
    n_freqs = c_real.shape[-1] - 1
    x = x.to(c_real)
    k = torch.arange(1, n_freqs + 1, dtype=c_real.dtype, device=c_real.device)  # (N,)
    phase = math.pi * k[:, None] * x[None, :]  # (N, L)
    c0 = c_real[..., :1]  # (..., 1)
    ratio_re, ratio_im = c_real[..., 1:] / c0, c_imag[..., 1:] / c0  # (..., N)
    # Re((u + iv) e^{i theta}) = u cos(theta) - v sin(theta)
    return 0.5 + ratio_re @ torch.cos(phase) - ratio_im @ torch.sin(phase)  # (..., L)


def fourier_pdf(a_real: torch.Tensor, a_imag: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The head's continuous density at points ``x`` (for plots and tests): (..., N+1) pairs, (L,) -> (..., L)."""
    return fourier_density(*autocorrelation(a_real, a_imag), x)


def frequency_penalty(c_real: torch.Tensor, c_imag: torch.Tensor) -> torch.Tensor:
    """sum_{k=0}^{N} 2 pi^2 k^2 |c_k|^2 per row: (..., N+1) -> (...). Un-normalised c_k, as in the paper's code."""
    k = torch.arange(c_real.shape[-1], dtype=c_real.dtype, device=c_real.device)  # (N+1,)
    return (2.0 * math.pi**2 * k**2 * (c_real**2 + c_imag**2)).sum(-1)


class FourierHead(nn.Module):
    """Fourier head (arXiv 2410.22269): features (..., d_in) -> logits over ``n_bins`` ordered bins of [-1, 1].

    Args:
        d_in: input feature size.
        n_bins: number of output bins m (may be smaller than 2N+1: the density is simply sampled).
        n_freqs: number of frequencies N >= 1 of the truncated Fourier series.
        gamma: weight of the smoothness regulariser; 0 (the default) leaves ``reg_loss`` at 0.
        inv_softmax_eps: the constant in ``log(q + eps)``; softmax of the logits is q up to it.
        init_div: the default ``nn.Linear`` initialisation of weight and bias is divided by this, so the
            initial density is close to uniform (the paper's code uses 100).

    After each ``forward`` the attribute ``reg_loss`` holds the regulariser of that batch, a scalar tensor
    on the graph, to add to the task loss: ``loss = cross_entropy(logits, bins) + head.reg_loss``.
    """

    def __init__(self, d_in: int, n_bins: int, n_freqs: int, gamma: float = 0.0, inv_softmax_eps: float = 1e-5,
                 init_div: float = 100.0) -> None:
        super().__init__()
        for name, value in (("d_in", d_in), ("n_bins", n_bins), ("n_freqs", n_freqs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FourierHead: {name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"FourierHead: gamma must be a finite number >= 0, got {gamma!r}")
        if not (math.isfinite(inv_softmax_eps) and inv_softmax_eps >= 0):
            raise ValueError(f"FourierHead: inv_softmax_eps must be a finite number >= 0, got {inv_softmax_eps!r}")
        if not (math.isfinite(init_div) and init_div > 0):
            raise ValueError(f"FourierHead: init_div must be a finite number > 0, got {init_div!r}")
        self.d_in, self.n_bins, self.n_freqs = d_in, n_bins, n_freqs
        self.gamma, self.inv_softmax_eps = float(gamma), float(inv_softmax_eps)
        self.linear = nn.Linear(d_in, 2 * (n_freqs + 1))
        with torch.no_grad():
            self.linear.weight.div_(init_div)
            self.linear.bias.div_(init_div)
        self.reg_loss: torch.Tensor = torch.zeros(())

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The complex a_0..a_N as (real, imaginary) parts: (..., d_in) -> two (..., N+1)."""
        params = self.linear(x)  # (..., 2(N+1))
        a_real, a_imag = params.split(self.n_freqs + 1, dim=-1)
        return a_real, a_imag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> logits (..., n_bins); sets ``self.reg_loss`` (scalar)."""
        c_real, c_imag = autocorrelation(*self.coefficients(x))  # (..., N+1) each
        centres = bin_centres(self.n_bins, dtype=c_real.dtype, device=c_real.device)  # (m,)
        density = fourier_density(c_real, c_imag, centres)  # (..., m)
        pmf = density / density.sum(-1, keepdim=True)  # (..., m)
        # arXiv 2410.22269 (spec B10.1 step 6): the batch mean of the penalty, times 2 as in the paper's code.
        self.reg_loss = self.gamma * 2.0 * frequency_penalty(c_real, c_imag).mean()
        return torch.log(pmf + self.inv_softmax_eps)

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, n_bins={self.n_bins}, n_freqs={self.n_freqs}, gamma={self.gamma}, "
                f"inv_softmax_eps={self.inv_softmax_eps}")
