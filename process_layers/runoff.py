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


def groundwater_export(q_base: Tensor, export_fraction: Tensor) -> tuple[Tensor, Tensor]:
    """Split the groundwater outflow between the river and the basin's outside (optional).

    q_channel = (1 − f_ex) · q_base,  q_export = f_ex · q_base  (mm day⁻¹).

    Not in the paper (A21 sends all of the groundwater outflow to the river). Catchments
    exchange groundwater with their neighbours and with deep aquifers that no gauge sees
    (Le Moine et al. 2007, WRR 43, W06428): GR4J's exchange term X2 (Perrin et al. 2003,
    J. Hydrol. 279) and SAC-SMA's ``SIDE``, the ratio of deep recharge to channel baseflow
    (Burnash 1995), take part of the slow flow out of the basin. Without it a basin whose
    gauge sees less water than its forcing brings can only scale down all of its
    precipitation, storm peaks included. The store drains as A21 says (its recession is
    unchanged); only where the water goes changes, so P − ET − q_total − q_export − ΔS
    closes.

    Args:
        q_base: groundwater outflow of A21 / A21′, mm day⁻¹ [cells, days] (or any shape
            that ``export_fraction`` broadcasts against).
        export_fraction: f_ex ∈ [0, 1), – (per cell, broadcast over days).

    Returns:
        ``(q_channel, q_export)``, mm day⁻¹; their sum is ``q_base``.
    """
    q_export = export_fraction * q_base
    return q_base - q_export, q_export


def total_runoff(q_surf: Tensor, q_base: Tensor) -> Tensor:
    """Total runoff, eq. A22: q_total = q_surf + q_base (mm day⁻¹)."""
    return q_surf + q_base
