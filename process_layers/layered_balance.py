"""The water balance of a layered soil column (Yan et al. 2026, differentiable water balance).

Source: shared/papers/mtl-differentiable-water-balance-yan-2026-summary.txt. The
multi-task LSTM predicts the volumetric soil moisture θ_k of every layer k and daily
ET; the balance of the column over one day is

    B_t = P_t − ET_t − R_t − ΔS_t (− ε_t),   ΔS_t = Σ_k d_k (θ_k,t − θ_k,t−1),

with d_k the layer thickness (mm), R the runoff and ε a learned residual (snow
accumulation and melt, drainage to groundwater, interception storage …) or nothing
(the fixed formula). Both are pure functions of tensors, [cells, days] on a daily axis.
"""

from __future__ import annotations

from torch import Tensor


def storage_change(theta: Tensor, thickness: Tensor) -> Tensor:
    """ΔS_t = Σ_k d_k (θ_k,t − θ_k,t−1), the column's storage change, mm day⁻¹.

    Args:
        theta: volumetric soil moisture of every layer, m³ m⁻³ [cells, days, layers].
        thickness: layer thicknesses d_k, mm [layers].

    Returns:
        ΔS, mm day⁻¹ [cells, days − 1] (day 1 onwards).
    """
    return ((theta[:, 1:] - theta[:, :-1]) * thickness).sum(-1)


def balance_residual(prec: Tensor, et: Tensor, runoff: Tensor, theta: Tensor,
                     thickness: Tensor, residual: Tensor | None = None) -> Tensor:
    """B = P − ET − R − ΔS (− ε), mm day⁻¹ [cells, days − 1] (day 1 onwards).

    Args:
        prec: precipitation P, mm day⁻¹ [cells, days].
        et: evapotranspiration ET, mm day⁻¹ [cells, days].
        runoff: runoff R, mm day⁻¹ [cells, days].
        theta: soil moisture of every layer, m³ m⁻³ [cells, days, layers].
        thickness: layer thicknesses, mm [layers].
        residual: ε, mm day⁻¹ [cells, days], or None for the fixed formula.
    """
    b = prec[:, 1:] - et[:, 1:] - runoff[:, 1:] - storage_change(theta, thickness)
    return b if residual is None else b - residual[:, 1:]
