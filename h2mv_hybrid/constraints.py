"""Observational constraints: what comparing a prediction with a target means, written once.

A :class:`Constraint` names the store variable it compares with (``target``), the model
output that predicts it (``output``), how the daily prediction is brought to the target's
resolution (``aggregation``), whether anomalies are compared (``anomaly``), an optional
saturation threshold and a weight. The rules those fields stand for live here and only
here, in two array languages:

- torch, for the loss (:mod:`h2mv_hybrid.model.losses`) and the validation metrics
  (:meth:`Constraint.pair`, built from :func:`align` and :func:`comparable`);
- xarray, for the DataModule's normalization statistics (:meth:`Constraint.as_compared`:
  the target as the loss sees it) and the analysis of ensemble stores
  (:func:`constraint_series`).

Adding a rule (an aggregation, say) means adding it to both halves of this module; the
tests hold the two halves to the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from h2mv_hybrid.options import check_choice
from h2mv_hybrid.signatures import SIGNATURES, Signature

Aggregation = Literal["daily", "monthly", "8day"]
ConstraintLoss = Literal["mse", "nse_star", "kge", "fdc"]
#: ε of the NSE* loss, as a share of the target's training standard deviation
#: (Kratzert et al. 2019: 0.1 on normalized discharge).
NSE_STAR_EPS = 0.1


@dataclass(frozen=True)
class Constraint:
    """One observational constraint of the loss.

    Args:
        target: the store variable (``tws``, ``et``, ``q``, ``fapar``, ``swe`` or any
            variable the store holds with a time or month axis).
        output: the model output compared with it (a process-layer flux such as ``ET``,
            ``q_total``, ``tws``, ``swe``, or ``fapar``).
        aggregation: ``daily`` (compare day by day), ``monthly`` (monthly means of the
            daily prediction, for targets on the ``month`` axis, or of both for a daily
            target, over its observed days) or ``8day`` (means over consecutive 8-day
            blocks from the start of the period).
        anomaly: compare anomalies from each cell's mean over the observed entries (TWS).
        saturation: where observation and prediction both exceed it, count a match
            (snow products saturate); None for no saturation.
        weight: the fixed weight of this constraint (ignored with uncertainty weighting).
        loss: ``mse`` (z-scored squared error, the paper's) or ``nse_star``, the
            basin-normalized squared error of Kratzert et al. (2019, HESS 23, 5089, eq. 3):
            each cell's squared error divided by (σ_b + ε σ)², σ_b the cell's standard
            deviation of the target over the training period, σ the training cells' and
            ε = 0.1, so that every basin weighs alike whatever its flow variability; or
            ``kge``, 1 − KGE of each cell over the batch's observed steps (Gupta et al.
            2009, J. Hydrol. 377, 80), averaged over cells: correlation, variability and
            bias weigh alike, where a squared error lets the variability shrink; or
            ``fdc``, the squared distance between the flow duration curves of prediction
            and observation over each cell's observed steps of the batch, scaled per basin
            like ``nse_star`` (:func:`~h2mv_hybrid.model.losses.fdc_star`): a second
            constraint on the same target beside ``nse_star``, which keeps the
            distribution of flows (their variability, the floods and the low flows) that
            a squared error alone shrinks towards the mean.
        signature: compare a signature of the target series rather than the series
            (``baseflow_index`` or ``runoff_ratio``, :mod:`h2mv_hybrid.signatures`):
            observed from the target over each stage's period, modelled from the bucket's
            outputs over the observed days; ``output`` and ``aggregation`` are then unused.
    """

    target: str
    output: str
    aggregation: Aggregation = "monthly"
    anomaly: bool = False
    saturation: float | None = None
    weight: float = 1.0
    loss: ConstraintLoss = "mse"
    signature: Signature | None = None

    def __post_init__(self):
        check_choice("aggregation", self.aggregation, Aggregation)
        check_choice("loss", self.loss, ConstraintLoss)
        if self.signature is not None and self.signature not in SIGNATURES:
            raise ValueError(f"constraint {self.target}: signature expected one of "
                             f"{', '.join(SIGNATURES)} or None, found {self.signature!r}")
        if self.weight < 0:
            raise ValueError(f"constraint {self.target}: weight expected ≥ 0, found "
                             f"{self.weight}")

    @property
    def name(self) -> str:
        """How the loss and the logs call it: target, ``<target>_<signature>``, ``<target>_fdc``."""
        if self.signature is not None:
            return f"{self.target}_{self.signature}"
        return f"{self.target}_fdc" if self.loss == "fdc" else self.target

    @property
    def scores_series(self) -> bool:
        """Whether the validation scores (r, NSE …) read this constraint's pair.

        Not for a signature or a flow duration curve, which compare distributions, not days.
        """
        return self.signature is None and self.loss != "fdc"

    # -- torch: the loss and the metrics ---------------------------------------------------
    def pair(self, pred: Tensor, obs: Tensor, month_of_day: Tensor, *, saturate: bool = True
             ) -> tuple[Tensor, Tensor]:
        """A daily prediction and this constraint's observation as the loss compares them.

        Args:
            pred: daily prediction [cells, days].
            obs: observation [cells, days] or [cells, steps], NaN where unobserved.
            month_of_day: month index of every day [days].
            saturate: apply the saturation (the loss does; the validation r reads the
                unsaturated series).

        Returns:
            ``(pred, obs)`` on the constraint's axis, anomalies where asked; ``obs`` is NaN
            where unobserved.
        """
        pred, obs = align(pred, obs.to(pred.dtype), self.aggregation, month_of_day)
        return comparable(pred, obs, anomaly=self.anomaly,
                          saturation=self.saturation if saturate else None)

    # -- xarray: the statistics and the analysis --------------------------------------------
    def as_compared(self, obs: xr.DataArray, dim: str) -> xr.DataArray:
        """The observation as the loss compares it (anomalies where asked), lazily.

        The DataModule's z-scoring statistics are those of this series, so that the loss's
        standard deviation is that of what it compares.
        """
        return deviations(obs, dim) if self.anomaly else obs


# Checkpoints keep the constraints in their hyperparameters (plain data). The second
# name is where the class lived before 0.2, so that older checkpoints still load.
torch.serialization.add_safe_globals([Constraint,
                                      (Constraint, "h2mv_hybrid.model.losses.Constraint")])

#: The paper's five constraints (§2.3.3): TWS anomalies, ET, runoff and fAPAR monthly,
#: SWE daily with a 100 mm saturation threshold.
PAPER_CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint("tws", "tws", "monthly", anomaly=True),
    Constraint("et", "ET", "monthly"),
    Constraint("q", "q_total", "monthly"),
    Constraint("fapar", "fapar", "monthly"),
    Constraint("swe", "swe", "daily", saturation=100.0),
)


def as_constraints(given: Sequence[Constraint | Mapping[str, Any]] | None
                   ) -> tuple[Constraint, ...]:
    """Constraints given as records or as mappings (a config, a checkpoint's settings)."""
    return tuple(c if isinstance(c, Constraint) else Constraint(**c) for c in given or ())


#: The default constraint of a target none is declared for: the paper's five, and the
#: snow-covered fraction of a snow-cover product against the model's, daily.
DEFAULT_CONSTRAINTS: dict[str, Constraint] = {
    **{c.target: c for c in PAPER_CONSTRAINTS},
    "sca": Constraint("sca", "snow_cover", "daily"),
}


def default_constraints(targets: Sequence[str]) -> tuple[Constraint, ...]:
    """The constraint of each target when none is declared (:data:`DEFAULT_CONSTRAINTS`).

    Any other target gets a plain constraint: the model output of the same name, monthly,
    without anomaly or saturation.
    """
    return tuple(DEFAULT_CONSTRAINTS.get(t, Constraint(t, t)) for t in targets)


def aggregate(pred: Tensor, how: Aggregation, month_of_day: Tensor) -> Tensor:
    """Daily prediction [cells, days] → the constraint's axis.

    ``monthly`` averages the days of each month (``month_of_day`` [days] gives each day's
    month index); ``8day`` averages consecutive blocks of 8 days (the last one may be
    shorter); ``daily`` returns the input.
    """
    if how == "daily":
        return pred
    if how == "8day":
        index = torch.arange(pred.shape[1], device=pred.device) // 8
    elif how == "monthly":
        index = month_of_day.to(pred.device)
    else:
        raise ValueError(f"aggregation: expected daily, monthly or 8day, found {how!r}")
    n = int(index.max()) + 1
    sums = pred.new_zeros(pred.shape[0], n).index_add(1, index, pred)
    counts = torch.bincount(index, minlength=n).to(pred.dtype)
    return sums / counts


def align(pred: Tensor, obs: Tensor, how: Aggregation, month_of_day: Tensor
          ) -> tuple[Tensor, Tensor]:
    """Daily prediction and an observation → both on the constraint's axis.

    An observation already on that axis (monthly products) is returned as is, with the
    prediction aggregated by :func:`aggregate`. A daily observation (gauged runoff) under
    a coarser aggregation is averaged too, over its observed days only, and the
    prediction over the same days, so that gaps bias neither; a step without any
    observed day is NaN.

    Args:
        pred: daily prediction [cells, days].
        obs: observation [cells, days] or [cells, steps], NaN where unobserved.
        how: the constraint's aggregation.
        month_of_day: month index of every day [days].
    """
    if how == "daily" or obs.shape[1] != pred.shape[1]:
        return aggregate(pred, how, month_of_day), obs
    ok = ~torch.isnan(obs)
    w = ok.to(pred.dtype)
    count = aggregate(w, how, month_of_day)
    seen = count > 0
    safe = torch.where(seen, count, torch.ones_like(count))
    p = aggregate(pred * w, how, month_of_day) / safe
    o = aggregate(torch.where(ok, obs, torch.zeros_like(obs)).to(pred.dtype), how,
                  month_of_day) / safe
    return p, torch.where(seen, o, torch.full_like(o, float("nan")))


def anomalies(pred: Tensor, obs: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
    """Deviations of prediction and observation from each cell's mean over its observed steps.

    ``obs`` must hold zeros (not NaN) where ``observed`` is False; both means are taken over
    the same observed steps, so an offset between product and model cancels.
    """
    n = observed.sum(1, keepdim=True).clamp(min=1)
    return (pred - (pred * observed).sum(1, keepdim=True) / n,
            obs - (obs * observed).sum(1, keepdim=True) / n)


def comparable(pred: Tensor, obs: Tensor, *, anomaly: bool = False,
               saturation: float | None = None) -> tuple[Tensor, Tensor]:
    """Prediction and observation on one axis → the two series the loss compares.

    Args:
        pred: prediction [cells, steps].
        obs: observation [cells, steps], NaN where unobserved.
        anomaly: subtract each cell's mean over its observed steps, from both.
        saturation: where both exceed it, the prediction is set to the observation (a
            match: zero error, zero gradient).

    Returns:
        ``(pred, obs)``, ``obs`` NaN where unobserved.
    """
    observed = ~torch.isnan(obs)
    obs = torch.where(observed, obs, torch.zeros_like(obs))
    if anomaly:
        pred, obs = anomalies(pred, obs, observed)
    if saturation is not None:
        pred = torch.where((pred > saturation) & (obs > saturation), obs, pred)
    return pred, torch.where(observed, obs, torch.full_like(obs, float("nan")))


def deviations(x: xr.DataArray, dim: str, where: xr.DataArray | None = None
               ) -> xr.DataArray:
    """X minus its mean along ``dim`` over the steps ``where`` holds (default: finite ones).

    The xarray form of :func:`anomalies`: NaN steps are skipped by the mean.
    """
    return x - (x if where is None else x.where(where)).mean(dim)


def constraint_series(ens: xr.Dataset, store: xr.Dataset, c: Constraint
                      ) -> tuple[xr.DataArray, xr.DataArray]:
    """Prediction (member, time, cell) and observation (time, cell) of one constraint.

    The daily prediction is averaged to months for monthly targets; daily targets are
    compared day by day. Anomaly constraints (TWS) subtract from both each cell's mean
    over the steps observed; where both exceed a constraint's saturation (snow products)
    the prediction is set to the observation, as the loss counts a match there.
    """
    from h2mv_hybrid.data.schema import time_axis

    if c.output not in ens:
        raise ValueError(f"constraint {c.target}: expected output {c.output!r} in the "
                         f"ensemble store, found {', '.join(sorted(ens.data_vars))}")
    if c.target not in store:
        raise ValueError(f"constraint {c.target}: expected variable {c.target!r} in the "
                         f"input store, found none")
    pred = ens[c.output]
    if time_axis(store, c.target) == "month":
        pred = pred.resample(time="MS").mean()
        obs = store[c.target].rename(month="time").sel(time=pred["time"])
    else:
        obs = store[c.target].sel(time=pred["time"])
    pred, obs = pred.load(), obs.load()
    observed = np.isfinite(obs)
    if c.anomaly:
        obs = deviations(obs, "time", observed)
        pred = deviations(pred, "time", observed)
    if c.saturation is not None:
        both = (pred > c.saturation) & (obs > c.saturation)
        pred = pred.where(~both, obs)
    return pred, obs.where(observed)
