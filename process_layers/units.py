"""Conversions of the forcing into the units the bucket equations use."""

from __future__ import annotations

from torch import Tensor

from process_layers.constants import (
    LATENT_HEAT_VAPORISATION,
    W_M2_TO_MJ_M2_DAY,
    ZERO_CELSIUS_IN_KELVIN,
)


def net_radiation_mm_per_day(rn_w_m2: Tensor) -> Tensor:
    """Net radiation as an evaporation-equivalent water depth, floored at zero.

    Rn [mm day⁻¹] = max(Rn [W m⁻²] × 0.0864 [MJ m⁻² day⁻¹ per W m⁻²] / 2.45 [MJ kg⁻¹], 0).
    Negative daily net radiation (polar night) supplies no energy for evaporation.

    Args:
        rn_w_m2: daily-mean net radiation, W m⁻², any shape.

    Returns:
        Available energy, mm day⁻¹, same shape.
    """
    return (rn_w_m2 * (W_M2_TO_MJ_M2_DAY / LATENT_HEAT_VAPORISATION)).clamp(min=0.0)


def kelvin_to_celsius(tair_k: Tensor) -> Tensor:
    """Air temperature in °C from K (any shape)."""
    return tair_k - ZERO_CELSIUS_IN_KELVIN
