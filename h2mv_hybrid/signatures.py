"""Hydrological signatures: what an observed runoff series says about the quick/slow split.

With runoff as a model's only data the split between quick flow and baseflow is not
identified: many splits fit the hydrograph about equally (Baghirov et al. 2024 saw the
same equifinality for the partitioning). A hydrologist pins it down with signatures of
the observed series itself (Addor et al. 2018, WRR 54, 8792; McMillan 2020, Hydrol.
Process. 34, 1393). Two are used as constraints (:class:`~h2mv_hybrid.constraints.Constraint`
with ``signature``):

- ``baseflow_index``: Σ baseflow / Σ runoff, the baseflow separated from the observed
  hydrograph by the Lyne–Hollick digital filter (Lyne & Hollick 1979) in the form and with
  the settings of Ladson et al. (2013, Aust. J. Water Resour. 17, 25): α = 0.925, three
  passes (forward, backward, forward), 30 days reflected at both ends. CAMELS'
  ``baseflow_index`` (Addor et al. 2017) was computed the same way. The model's value is
  Σ q_base / Σ q_total of its bucket over the same observed days.
- ``runoff_ratio``: Σ Q / Σ P over the observed days, observed and modelled (Sawicz et al.
  2011, HESS 15, 2895).

The observed side is numpy (computed once per stage by the DataModule); the modelled side
is torch (differentiable, in the loss).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

Signature = Literal["baseflow_index", "runoff_ratio"]
SIGNATURES: tuple[str, ...] = ("baseflow_index", "runoff_ratio")
#: Lyne–Hollick filter parameter and passes (Ladson et al. 2013).
LH_ALPHA = 0.925
LH_PASSES = 3
LH_REFLECT = 30
#: An error of this size in a signature (a fraction) weighs as much as one training
#: standard deviation of the daily runoff in the z-scored loss.
SIGNATURE_SCALE = 0.1


def _fill_gaps(q: np.ndarray) -> np.ndarray:
    """Linear interpolation over the NaN days of each series [cells, days] (ends held)."""
    out = q.copy()
    days = np.arange(q.shape[-1])
    for row in out:
        ok = np.isfinite(row)
        if ok.any() and not ok.all():
            row[:] = np.interp(days, days[ok], row[ok])
    return out


def _lh_pass(q: np.ndarray, alpha: float) -> np.ndarray:
    """One forward pass of the Lyne–Hollick filter: the baseflow of ``q`` [cells, days].

    Quick flow f_t = α f_{t−1} + (1 + α)/2 (q_t − q_{t−1}), kept within [0, q_t];
    baseflow b_t = q_t − f_t (Ladson et al. 2013, eq. 1; f_0 = 0). Vectorized over cells,
    a loop over days.
    """
    b = np.empty_like(q)
    f = np.zeros(q.shape[0])
    b[:, 0] = q[:, 0]
    for t in range(1, q.shape[1]):
        f = alpha * f + 0.5 * (1.0 + alpha) * (q[:, t] - q[:, t - 1])
        f = np.minimum(np.maximum(f, 0.0), q[:, t])
        b[:, t] = q[:, t] - f
    return b


def lyne_hollick(q: np.ndarray, alpha: float = LH_ALPHA, passes: int = LH_PASSES,
                 reflect: int = LH_REFLECT) -> np.ndarray:
    """Baseflow of daily runoff series by the Lyne–Hollick filter.

    Args:
        q: daily runoff [days] or [cells, days], any unit (mm day⁻¹); NaN gaps are
            interpolated for the filter and NaN again in the result.
        alpha: filter parameter (0.925, Ladson et al. 2013).
        passes: odd number of passes, alternately forward and backward.
        reflect: days mirrored at both ends to damp the start-up of each pass.

    Returns:
        Baseflow in the unit and shape of ``q``, 0 ≤ b ≤ q, NaN where ``q`` is NaN (and
        for a series without any observation).
    """
    q = np.asarray(q, dtype=np.float64)
    if passes < 1 or passes % 2 == 0:
        raise ValueError(f"passes: expected an odd number ≥ 1, found {passes}")
    x = _fill_gaps(np.atleast_2d(q))
    n = min(reflect, x.shape[1] - 1)
    if n > 0:
        x = np.concatenate([x[:, n:0:-1], x, x[:, -2:-n - 2:-1]], axis=1)
    for k in range(passes):
        x = _lh_pass(x, alpha) if k % 2 == 0 else _lh_pass(x[:, ::-1], alpha)[:, ::-1]
    b = x[:, n:n + q.shape[-1]].reshape(q.shape)
    return np.where(np.isfinite(q), b, np.nan)


def baseflow_index(q: np.ndarray) -> np.ndarray | float:
    """Σ baseflow / Σ runoff over the observed days of each series.

    [days] → a float, [cells, days] → [cells]; NaN where nothing is observed or flows.
    """
    q = np.asarray(q, dtype=np.float64)
    base = np.nansum(lyne_hollick(q), axis=-1)
    total = np.nansum(q, axis=-1)
    seen = np.isfinite(q).any(axis=-1) & (total > 0)
    out = np.where(seen, base / np.where(seen, total, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def runoff_ratio(q: np.ndarray, prec: np.ndarray) -> float:
    """Σ Q / Σ P over the days Q is observed (NaN: none, or no precipitation)."""
    q, prec = np.asarray(q, dtype=np.float64), np.asarray(prec, dtype=np.float64)
    ok = np.isfinite(q) & np.isfinite(prec)
    p = prec[ok].sum()
    return float(q[ok].sum() / p) if ok.any() and p > 0 else float("nan")


def observed_signature(name: str, q: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """One signature of every cell: ``q`` and ``prec`` [cells, days] → [cells]."""
    if name == "baseflow_index":
        return np.atleast_1d(baseflow_index(q))
    if name == "runoff_ratio":
        return np.array([runoff_ratio(x, p) for x, p in zip(q, prec, strict=True)])
    raise ValueError(f"signature: expected one of {', '.join(SIGNATURES)}, found {name!r}")


def modelled_signature(name: str, daily: dict[str, Tensor], prec: Tensor,
                       observed: Tensor) -> Tensor:
    """The model's value of a signature per cell [cells], over the ``observed`` days.

    Args:
        name: ``baseflow_index`` (Σ q_base / Σ q_total) or ``runoff_ratio``
            (Σ q_total / Σ P).
        daily: the bucket's daily outputs [cells, days] (``q_base``, ``q_total``), mm day⁻¹.
        prec: precipitation of the same days [cells, days], mm day⁻¹.
        observed: where the runoff is observed [cells, days] (bool).

    Returns:
        The signature [cells]; 0/0 (no runoff) gives 0 with a finite gradient.
    """
    w = observed.to(prec.dtype)
    if name == "baseflow_index":
        num, den = (daily["q_base"] * w).sum(1), (daily["q_total"] * w).sum(1)
    elif name == "runoff_ratio":
        num, den = (daily["q_total"] * w).sum(1), (prec * w).sum(1)
    else:
        raise ValueError(f"signature: expected one of {', '.join(SIGNATURES)}, found {name!r}")
    return num / den.clamp(min=torch.finfo(den.dtype).tiny ** 0.5)


def signature_loss(pred: Tensor, obs: Tensor) -> tuple[Tensor, Tensor]:
    """``(loss, count)``: mean of ((pred − obs) / :data:`SIGNATURE_SCALE`)².

    Over the cells with an observed signature (0 with a zero gradient when none).
    """
    ok = torch.isfinite(obs)
    err = torch.where(ok, (pred - torch.nan_to_num(obs)) / SIGNATURE_SCALE, 0.0)
    count = ok.sum()
    return (err * err).sum() / count.clamp(min=1), count
