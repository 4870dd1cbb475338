"""Snow: accumulation, degree-day melt and the SWE store (H2MV Appendix A1, eqs A1–A3).

All functions are elementwise over cells: inputs and outputs have shape [cells] (or any
common broadcastable shape). :func:`snow_covered_fraction` is an observation operator,
not part of the bucket: it maps SWE to the snow-covered fraction a satellite sees.
"""

from __future__ import annotations

import torch
from torch import Tensor, where

from process_layers._ops import maximum, minimum
from process_layers.constants import SNOW_TEMPERATURE_THRESHOLD


def snow_accumulation(prec: Tensor, tair_c: Tensor, beta_snow: Tensor) -> Tensor:
    """Snowfall, eq. A1: s_acc = prec · β_snow if T_air ≤ 0 °C, else 0.

    Args:
        prec: precipitation, mm day⁻¹.
        tair_c: air temperature, °C.
        beta_snow: global snowfall correction β_snow ∈ (0, 1), –.

    Returns:
        Snow accumulation, mm day⁻¹.
    """
    return where(tair_c <= SNOW_TEMPERATURE_THRESHOLD, prec * beta_snow, 0.0)


def snow_melt(tair_c: Tensor, alpha_snow_melt: Tensor, swe_prev: Tensor) -> Tensor:
    """Degree-day melt limited by the snow available, eq. A2.

    s_melt = min(max(T_air, 0) · α_smelt, SWE_{t−1}).

    Args:
        tair_c: air temperature, °C.
        alpha_snow_melt: degree-day factor α_smelt ≥ 0, mm °C⁻¹ day⁻¹.
        swe_prev: snow water equivalent at the end of the previous day, mm.

    Returns:
        Snow melt, mm day⁻¹.
    """
    return minimum(tair_c.clamp(min=SNOW_TEMPERATURE_THRESHOLD) * alpha_snow_melt, swe_prev)


def snow_water_equivalent(swe_prev: Tensor, snow_acc: Tensor, melt: Tensor) -> Tensor:
    """SWE update, eq. A3: SWE_t = max(SWE_{t−1} + s_acc − s_melt, 0), all in mm (day⁻¹)."""
    return maximum(swe_prev + snow_acc - melt, 0.0)


def snow_covered_fraction(swe: Tensor, scale: Tensor) -> Tensor:
    """Snow-covered fraction of a cell or basin from its SWE: 1 − exp(−SWE / k).

    A one-parameter areal depletion curve: the basin is bare at SWE = 0, and its
    snow-covered fraction grows with SWE and saturates at 1, as the snow of a basin
    melts out from its shallow parts first (the idea of the areal depletion curves of
    SNOW-17, Anderson 1973, in a smooth form with a single scale; issue 18 names it).
    k is the SWE at which 63 % of the basin is covered.

    Args:
        swe: snow water equivalent, mm.
        scale: k > 0, mm.

    Returns:
        Snow-covered fraction, – (in [0, 1)); gradient finite at SWE = 0.
    """
    return -torch.expm1(-swe / scale)
