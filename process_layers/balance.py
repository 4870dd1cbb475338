"""Water-balance bookkeeping of a simulated series."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from torch import Tensor

from process_layers.containers import Fluxes, States


class WaterBalance(NamedTuple):
    """Per-cell totals over a series, mm [cells].

    ``inputs`` is rainfall + snowfall *after* the β_snow correction (the water that enters
    the bucket, eq. A1); ``residual`` = inputs − et − runoff − storage_change, which the
    model keeps at rounding level.
    """

    inputs: Tensor
    et: Tensor
    runoff: Tensor
    storage_change: Tensor
    residual: Tensor


def water_balance(fluxes: Fluxes, initial: Mapping[str, Tensor]) -> WaterBalance:
    """Σ(rainfall + snow_acc) − Σ ET − Σ q_total − Δ(SWE + SM + GW) per cell.

    Args:
        fluxes: output of ``simulate``, each [cells, time].
        initial: the storages the series started from (``swe``, ``sm``, ``gw``) [cells].
    """
    s0 = initial if isinstance(initial, States) else States(**dict(initial))
    inputs = (fluxes.rainfall + fluxes.snow_acc).sum(dim=1)
    et = fluxes.ET.sum(dim=1)
    runoff = fluxes.q_total.sum(dim=1)
    end = fluxes.final_states()
    change = (end.swe - s0.swe) + (end.sm - s0.sm) + (end.gw - s0.gw)
    return WaterBalance(inputs, et, runoff, change, inputs - et - runoff - change)
