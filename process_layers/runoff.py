"""Surface runoff, baseflow and total runoff (H2MV Appendix A4, eqs A19–A22; eq. 8).

All functions are elementwise over cells.
"""

from __future__ import annotations

from torch import Tensor


def surface_runoff_fraction(r_soil_frac: Tensor, alpha_r_gw: Tensor) -> Tensor:
    """Surface runoff fraction, eq. A19 (eq. 8): (1 − r_soil_frac) · (1 − α_rgw) (–).

    With A17 the three fractions (soil, groundwater, surface) sum to one, so the whole
    water input is routed.
    """
    return (1.0 - r_soil_frac) * (1.0 - alpha_r_gw)


def surface_runoff(q_surf_frac: Tensor, w_in: Tensor) -> Tensor:
    """Surface runoff, eq. A20: q_surf = q_surf_frac · w_in (mm day⁻¹)."""
    return q_surf_frac * w_in


def baseflow(gw_prev: Tensor, beta_baseflow: Tensor, baseflow_half: Tensor | None = None
             ) -> Tensor:
    """Baseflow from the previous day's groundwater, eq. A21 (linear), or A21′ (nonlinear).

    A21 (the paper): q_base = β_gw · GW_{t−1}, one recession rate at every storage.

    A21′ (this project's option, ``baseflow_half`` = K_gw given):
    q_base = β_gw · GW_{t−1} · GW_{t−1} / (GW_{t−1} + K_gw). The rate β_gw · GW / (GW + K)
    rises with storage, from 0 in an empty store to β_gw in a full one: the nonlinear
    storage–discharge relation of real catchments, whose recessions are fast after
    recharge and slow in a dry season (Kirchner 2009, WRR 45, W02429; HBV's upper zone
    drains as K·S^(1+α), Bergström 1995), which one linear reservoir cannot be. It is A21
    for GW ≫ K_gw and quadratic, β_gw GW² / K_gw, for GW ≪ K_gw. Since the rate stays
    below β_gw < 1, q_base < GW_{t−1}: the store never overdraws (A23 stays ≥ 0).

    Args:
        gw_prev: groundwater storage at the end of the previous day, mm.
        beta_baseflow: recession constant β_gw ∈ (0, 1), day⁻¹ (global, or per cell).
        baseflow_half: K_gw > 0, mm (per cell), or None for A21.

    Returns:
        Baseflow, mm day⁻¹. Gradients are finite everywhere, GW = 0 included
        (∂q/∂GW = β r (2 − r), ∂q/∂K = −β r², r = GW / (GW + K)).
    """
    if baseflow_half is None:
        return gw_prev * beta_baseflow
    return beta_baseflow * gw_prev * (gw_prev / (gw_prev + baseflow_half))


def total_runoff(q_surf: Tensor, q_base: Tensor) -> Tensor:
    """Total runoff, eq. A22: q_total = q_surf + q_base (mm day⁻¹)."""
    return q_surf + q_base
