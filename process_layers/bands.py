"""Elevation bands: a basin's air temperature spread over K equal-area bands.

HBV (Bergström 1995, elevation zones) and CemaNeige (Valéry et al. 2014, J. Hydrol. 517,
five equal-area bands) run their snow routines once per band, each band at the
basin-mean temperature shifted by a lapse rate times the band's elevation above the
mean, so that a mountain basin snows at its top while it rains at its outlet and melts
out from its low to its high parts. Without the basin's hypsometry the band temperatures
here are T + σ_T · z_k: z_k are the means of K equal-probability slices of a standard
normal distribution, scaled to unit standard deviation (so σ_T, °C, is the standard
deviation of the band temperatures), and σ_T is a per-basin coefficient.

Bands run as extra cells of the bucket: cell c's band k is row c · K + k
(:func:`to_bands`), and :func:`band_mean` takes a basin's mean over its bands. The bands
share the basin's precipitation and energy and have equal areas, so the mean of the
bands' water balances is the basin's, exactly.

Pure functions, tensors in, tensors out; shapes in the docstrings.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def band_offsets(k: int, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> Tensor:
    """Unit-spread temperature offsets z_k of K equal-area bands [k], lowest band first.

    z_k ∝ E[Z | Z in the k-th of K equal-probability slices of a standard normal] =
    K · (φ(a_{k−1}) − φ(a_k)), a_k = Φ⁻¹(k / K), scaled so that mean(z²) = 1; the z_k
    sum to 0 (the basin mean is kept) and are ordered from the warmest band (the
    lowest) to the coldest. One band: [0].
    """
    if k < 1:
        raise ValueError(f"band_offsets: expected k ≥ 1 bands, found {k}")
    if k == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    edges = torch.special.ndtri(torch.arange(k + 1, dtype=torch.float64) / k)
    pdf = torch.exp(-0.5 * edges**2) / math.sqrt(2 * math.pi)
    pdf = torch.where(torch.isfinite(edges), pdf, torch.zeros_like(pdf))
    z = k * (pdf[:-1] - pdf[1:])  # ascending: the coldest slice first
    z = 0.5 * (z.flip(0) - z)  # exactly antisymmetric: the middle band of odd K is at 0
    z = z / torch.sqrt((z**2).mean())
    return z.to(dtype=dtype, device=device)


def to_bands(x: Tensor, k: int) -> Tensor:
    """[cells, ...] → [cells · k, ...]: each cell's row repeated for its k bands.

    A 0-d (global) value is shared by every band as it is.
    """
    return x if k == 1 or x.dim() == 0 else x.repeat_interleave(k, dim=0)


def split_bands(x: Tensor, k: int) -> Tensor:
    """[cells · k, ...] → [cells, k, ...]: each cell's bands side by side (k = 1: as is)."""
    return x if k == 1 else x.reshape(-1, k, *x.shape[1:])


def band_mean(x: Tensor, k: int) -> Tensor:
    """[cells · k, ...] → [cells, ...]: the mean over each cell's k equal-area bands."""
    return x if k == 1 else x.reshape(-1, k, *x.shape[1:]).mean(1)


def band_temperatures(tair: Tensor, spread: Tensor, k: int) -> Tensor:
    """Air temperature of every band, [cells · k, ...] in the unit of ``tair``.

    Args:
        tair: the basin-mean air temperature (K or °C) [cells, ...].
        spread: σ_T, the standard deviation of the band temperatures, K (= °C) [cells].
        k: number of bands.
    """
    z = band_offsets(k, tair.dtype, tair.device)
    shape = (-1, k, *([1] * (tair.dim() - 1)))
    t = tair[:, None] + spread.to(tair.dtype).reshape(-1, 1, *([1] * (tair.dim() - 1))) \
        * z.reshape(shape)
    return t.reshape(-1, *tair.shape[1:])
