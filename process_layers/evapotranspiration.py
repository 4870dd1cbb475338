"""Rainfall and the partitioning of evapotranspiration (H2MV Appendix A2, eqs A4–A12; eqs 1–4).

Energy is spent in a fixed order: interception first, then soil evaporation, then
transpiration, each drawing on the net radiation left by the previous one (A6), so that
Ei + Es + T never exceeds the available energy. All functions are elementwise over cells.
"""

from __future__ import annotations

from torch import Tensor, where

from process_layers._ops import minimum
from process_layers.constants import SNOW_TEMPERATURE_THRESHOLD


def rainfall(prec: Tensor, tair_c: Tensor) -> Tensor:
    """Liquid precipitation, eq. A4: prec if T_air > 0 °C else 0 (mm day⁻¹)."""
    return where(tair_c > SNOW_TEMPERATURE_THRESHOLD, prec, 0.0)


def interception_evaporation(
    rainfall: Tensor, fapar: Tensor, alpha_ei: Tensor, rn: Tensor
) -> Tensor:
    """Interception evaporation, eq. A5: Ei = min(min(rainfall, fAPAR · α_Ei), Rn).

    Eq. 2 in §2.2.1 prints ``min(rainfall, fAPAR, α_Ei)``; Appendix A (A5) and the text
    ("a flexible scaling of fAPAR") give the product, which is what is implemented.

    Args:
        rainfall: mm day⁻¹.
        fapar: fraction of absorbed PAR, –, in [0, 1].
        alpha_ei: interception capacity factor α_Ei ≥ 0, mm day⁻¹.
        rn: available energy, mm day⁻¹ (≥ 0).

    Returns:
        Interception evaporation, mm day⁻¹.
    """
    return minimum(minimum(rainfall, fapar * alpha_ei), rn)


def remaining_energy(rn: Tensor, evaporation: Tensor) -> Tensor:
    """Energy left after an evaporation flux, eq. A6: Rn − E (mm day⁻¹)."""
    return rn - evaporation


def potential_evapotranspiration(rn: Tensor, sm: Tensor) -> Tensor:
    """Potential ET, eq. A7: ETpot = min(Rn, SM) (mm day⁻¹; SM in mm over one day)."""
    return minimum(rn, sm)


def soil_evaporation(fapar: Tensor, et_pot: Tensor, alpha_es: Tensor) -> Tensor:
    """Soil evaporation, eq. A8 (eq. 3): Es = (1 − fAPAR) · ETpot · α_Es (mm day⁻¹)."""
    return (1.0 - fapar) * et_pot * alpha_es


def transpiration(fapar: Tensor, et_pot: Tensor, alpha_t: Tensor) -> Tensor:
    """Transpiration, eq. A10 (eq. 4): T = fAPAR · ETpot · α_T (mm day⁻¹)."""
    return fapar * et_pot * alpha_t


def deplete_soil_moisture(sm: Tensor, flux: Tensor) -> Tensor:
    """Soil moisture after an evaporative loss, eqs A9 and A11: SM − E (mm)."""
    return sm - flux


def evapotranspiration(ei: Tensor, es: Tensor, t: Tensor) -> Tensor:
    """Total ET, eq. A12 (eq. 1): ET = Ei + Es + T (mm day⁻¹)."""
    return ei + es + t


def evaporative_fraction(et: Tensor, rn: Tensor) -> Tensor:
    """Evaporative fraction EF = ET / Rn (–), 0 where Rn = 0.

    Both in mm day⁻¹; ``rn`` is the available energy before any evaporation. The
    denominator is replaced where Rn = 0 so that no inf/NaN enters the gradient.
    """
    has_energy = rn > 0.0
    return where(has_energy, et / where(has_energy, rn, 1.0), 0.0)
