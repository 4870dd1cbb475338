"""Groundwater and terrestrial water storage (H2MV Appendix A5–A6, eqs A23–A24)."""

from __future__ import annotations

from torch import Tensor


def groundwater_storage(gw_prev: Tensor, r_gw: Tensor, q_base: Tensor) -> Tensor:
    """Groundwater update, eq. A23: GW_t = GW_{t−1} + r_gw − q_base (mm)."""
    return gw_prev + r_gw - q_base


def terrestrial_water_storage(swe: Tensor, sm: Tensor, gw: Tensor) -> Tensor:
    """Terrestrial water storage, eq. A24: TWS = SWE + GW + SM (mm).

    Summed in the order of A24 (SWE + GW + SM); the fused kernel uses the same order.
    """
    return swe + gw + sm
