"""Water input and its routing to soil and groundwater (H2MV Appendix A3, eqs A13–A18; eqs 5–7).

All functions are elementwise over cells.
"""

from __future__ import annotations

from torch import Tensor

from process_layers._ops import maximum, minimum
from process_layers.constants import RECHARGE_EPSILON


def water_input(rainfall: Tensor, melt: Tensor, ei: Tensor) -> Tensor:
    """Water reaching the land surface, eq. A13 (eq. 5): w_in = rainfall + s_melt − Ei, mm day⁻¹."""
    return rainfall + melt - ei


def soil_recharge_fraction(
    sm_max: Tensor,
    sm: Tensor,
    w_in: Tensor,
    alpha_r_soil: Tensor,
    eps: float = RECHARGE_EPSILON,
) -> Tensor:
    """Share of the water input that infiltrates the soil, eq. A14 (eq. 6).

    r_soil_frac = min(1, (SM_max − SM) / max(w_in, ε)) · α_rsoil.

    Args:
        sm_max: soil water capacity, mm.
        sm: soil moisture after evaporation and transpiration, mm.
        w_in: water input, mm day⁻¹.
        alpha_r_soil: α_rsoil ∈ [0, 1], –.
        eps: floor of the denominator, mm day⁻¹ (1e-8 in the paper).

    Returns:
        Soil recharge fraction, – in [0, 1].
    """
    ratio = (sm_max - sm) / maximum(w_in, eps)
    return minimum(ratio, 1.0) * alpha_r_soil


def soil_recharge(r_soil_frac: Tensor, w_in: Tensor) -> Tensor:
    """Soil recharge, eq. A15: r_soil = r_soil_frac · w_in (mm day⁻¹)."""
    return r_soil_frac * w_in


def recharge_soil_moisture(sm: Tensor, r_soil: Tensor) -> Tensor:
    """Soil moisture after infiltration, eq. A16: SM + r_soil (mm)."""
    return sm + r_soil


def groundwater_recharge_fraction(r_soil_frac: Tensor, alpha_r_gw: Tensor) -> Tensor:
    """Groundwater recharge fraction, eq. A17 (eq. 7): (1 − r_soil_frac) · α_rgw (–)."""
    return (1.0 - r_soil_frac) * alpha_r_gw


def groundwater_recharge(r_gw_frac: Tensor, w_in: Tensor) -> Tensor:
    """Groundwater recharge, eq. A18: r_gw = r_gw_frac · w_in (mm day⁻¹)."""
    return r_gw_frac * w_in
