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


def baseflow(gw_prev: Tensor, beta_baseflow: Tensor) -> Tensor:
    """Baseflow from the previous day's groundwater, eq. A21: q_base = GW_{t−1} · β_gw.

    Args:
        gw_prev: groundwater storage at the end of the previous day, mm.
        beta_baseflow: global recession constant β_gw ∈ (0, 1), day⁻¹.

    Returns:
        Baseflow, mm day⁻¹.
    """
    return gw_prev * beta_baseflow


def total_runoff(q_surf: Tensor, q_base: Tensor) -> Tensor:
    """Total runoff, eq. A22: q_total = q_surf + q_base (mm day⁻¹)."""
    return q_surf + q_base
