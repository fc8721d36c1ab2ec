"""Drop-in modules from the papers: the Fourier head (arXiv 2410.22269)."""

from rlvr_lab.layers.fourier import FourierHead, autocorrelation, bin_centres, fourier_pdf

__all__ = ["FourierHead", "autocorrelation", "bin_centres", "fourier_pdf"]
