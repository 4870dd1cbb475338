"""The monotonic water-balance terms of PHY-LSTM / PHYs-LSTM (Li et al., eqs 10–14 and 19).

Source: shared/papers/phy-lstm-monotonic-water-balance-loss.txt, §2.4–2.5. The paper's
equation images are missing from the text; each function states how the equation is read
from the surrounding prose, and docs/phy_lstm.md collects these readings.

Series are [cells, time] tensors on a daily axis. Day-to-day differences leave the first
day(s) undefined: they are NaN in ΔW and count as "no direction" (0) further on, so they
never enter a loss or a metric.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _diff(x: Tensor) -> Tensor:
    """x_t − x_{t−1} along time; NaN on the first day."""
    first = torch.full_like(x[:, :1], torch.nan)
    return torch.cat([first, x[:, 1:] - x[:, :-1]], 1)


def surface_water_change(prec: Tensor, et: Tensor, runoff: Tensor, swe: Tensor) -> Tensor:
    """ΔW_t = P_t − ET_t − R_t − ΔSWE_t, eq. 10 (mm day⁻¹).

    The water the surface soil layer gains (or loses) on day t: precipitation minus
    evapotranspiration, surface runoff and the change of the snowpack.

    Args:
        prec: precipitation, mm day⁻¹ [cells, time].
        et: evapotranspiration, mm day⁻¹ [cells, time].
        runoff: surface runoff, mm day⁻¹ [cells, time].
        swe: snow water equivalent at the end of each day, mm [cells, time].

    Returns:
        ΔW, mm day⁻¹ [cells, time]; NaN on the first day (no ΔSWE).
    """
    return prec - et - runoff - _diff(swe)


def surface_water_change_deep(dw: Tensor, deep_storage: Tensor) -> Tensor:
    """ΔW^s_t = ΔW_t − ΔSM^deep_t, eq. 11 (mm day⁻¹).

    Water that went into the deep soil (7–100 cm) did not stay in the surface layer, so
    the deep layers' storage change is taken off eq. 10.

    Args:
        dw: ΔW of eq. 10, mm day⁻¹ [cells, time].
        deep_storage: water held by the deep layers at the end of each day, mm
            [cells, time] (Σ over deep layers of θ_k · d_k).

    Returns:
        ΔW^s, mm day⁻¹ [cells, time]; NaN on the first day.
    """
    return dw - _diff(deep_storage)


def deep_storage(theta: Tensor, thickness: Tensor, layer: int = 1) -> Tensor:
    """Water held by the layers below layer ``layer``: Σ_{k > layer} θ_k · d_k (mm).

    It enters eq. 11 through its day-to-day change only, in which the residual water
    content θ_r cancels, so θ itself is used.

    Args:
        theta: volumetric soil moisture, m³ m⁻³ [..., layers].
        thickness: layer thicknesses d_k, mm [layers].
        layer: the forecast (surface) layer, 1-based; the deep layers are those below it.

    Returns:
        mm [...].
    """
    return (theta[..., layer:] * thickness[layer:]).sum(-1)


def expected_direction(dw: Tensor, mode: str = "change") -> Tensor:
    """The expected sign of the soil-moisture change, eq. 12: sign(ΔW_t − ΔW_{t−1}).

    +1 when more water enters (or less leaves) the surface layer than on the day before,
    −1 when less enters, 0 when nothing changed (threshold 0): such days, and days with
    an undefined ΔW, carry no physical loss.

    ``mode="level"`` is not the paper's: it takes sign(ΔW_t) itself (a net gain should
    wet the layer), the direction a closed water balance implies; docs/phy_lstm.md
    compares both.

    Args:
        dw: ΔW (eq. 10) or ΔW^s (eq. 11), mm day⁻¹ [cells, time].
        mode: ``change`` (eq. 12) or ``level``.

    Returns:
        Direction in {−1, 0, +1} [cells, time], in the dtype of ``dw``.
    """
    if mode not in ("change", "level"):
        raise ValueError(f"mode: expected change or level, found {mode!r}")
    change = _diff(dw) if mode == "change" else dw
    return torch.where(torch.isnan(change), 0.0, torch.sign(change)).to(dw.dtype)


def observed_agreement(direction: Tensor, sm_obs: Tensor) -> Tensor:
    """Days whose observed soil-moisture change follows the expected direction, eq. 13.

    A day counts only when direction_t · (y_t − y_{t−1}) > 0; days where the observations
    move against ΔW (saturated or very dry soil, lags, processes the balance leaves out)
    or do not move are excluded from the physical loss.

    Args:
        direction: eq. 12 [cells, time].
        sm_obs: observed soil moisture y_t, m³ m⁻³ [cells, time] (NaN: missing).

    Returns:
        Boolean mask [cells, time].
    """
    change = _diff(sm_obs)
    return torch.nan_to_num(direction * change, nan=0.0) > 0


def monotonic_penalty(pred: Tensor, prev_obs: Tensor, direction: Tensor, keep: Tensor
                      ) -> Tensor:
    """Per-sample physical loss of eq. 14: ReLU(−direction_t · (ŷ_t − y_{t−1})) on kept days.

    A predicted change from the observed previous-day soil moisture that has the wrong
    sign is penalised by its size; right-signed changes and excluded days cost nothing.

    Args:
        pred: predicted soil moisture ŷ_t, m³ m⁻³ [...].
        prev_obs: observed soil moisture of the previous day y_{t−1}, m³ m⁻³ [...].
        direction: eq. 12 [...].
        keep: eq. 13 [...].

    Returns:
        Penalties, m³ m⁻³ [...] (zero where not kept). L_phy (eq. 14) is their mean over
        all N samples, as the RMSE of eq. 9 is.
    """
    wrong = torch.relu(-direction * (pred - torch.nan_to_num(prev_obs)))
    return torch.where(keep, wrong, torch.zeros_like(wrong))


def inconsistency(pred: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
    """Physical inconsistency of a predicted series, eq. 19.

    On day t the prediction is inconsistent when its change ŷ_t − ŷ_{t−1} and the change
    of ΔW have opposite signs (their product is negative); days where either does not
    change are not counted.

    Args:
        pred: predicted soil moisture, m³ m⁻³ [cells, time] (NaN: not predicted).
        direction: eq. 12 [cells, time].

    Returns:
        ``(inconsistent, counted)``: numbers of inconsistent and of counted days per cell
        [cells]; their ratio is the share of inconsistent days.
    """
    product = torch.nan_to_num(direction * _diff(pred), nan=0.0)
    return (product < 0).sum(1), (product != 0).sum(1)
