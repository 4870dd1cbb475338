"""The multi-constraint loss (paper eq. 9 and §2.3.3), with constraints declared as data.

Each constraint names the store variable it compares with (``target``), the model output
that predicts it (``output``: a flux of the process layer, or ``fapar``), how the daily
prediction is aggregated to the target's resolution, whether anomalies are compared, an
optional saturation threshold, and a weight. The loss of one constraint is the MSE
between z-scored prediction and z-scored observation over the observed entries only; a
batch without observations of a constraint contributes zero, not NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Aggregation = Literal["daily", "monthly", "8day"]
Weighting = Literal["fixed", "uncertainty"]


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
    """

    target: str
    output: str
    aggregation: Aggregation = "monthly"
    anomaly: bool = False
    saturation: float | None = None
    weight: float = 1.0


# Checkpoints keep the constraints in their hyperparameters (plain data).
torch.serialization.add_safe_globals([Constraint])

#: The paper's five constraints (§2.3.3): TWS anomalies, ET, runoff and fAPAR monthly,
#: SWE daily with a 100 mm saturation threshold.
PAPER_CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint("tws", "tws", "monthly", anomaly=True),
    Constraint("et", "ET", "monthly"),
    Constraint("q", "q_total", "monthly"),
    Constraint("fapar", "fapar", "monthly"),
    Constraint("swe", "swe", "daily", saturation=100.0),
)


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


def constraint_loss(
    pred: Tensor, obs: Tensor, std: float, *, anomaly: bool = False,
    saturation: float | None = None,
) -> tuple[Tensor, Tensor]:
    """NaN-aware MSE of z-scored values on one constraint's axis.

    Prediction and observation are z-scored with the same training statistics, so the
    mean cancels in their difference and only the standard deviation matters.

    Args:
        pred: prediction [cells, steps], aggregated to the observation's axis.
        obs: observation [cells, steps], NaN where unobserved.
        std: standard deviation used for z-scoring (training cells).
        anomaly: subtract each cell's mean over its observed steps, from both.
        saturation: both above it counts as a match (zero error).

    Returns:
        ``(loss, count)``: the mean squared error over observed entries (0 when there are
        none, with a zero gradient) and the number of entries it averaged.
    """
    observed = ~torch.isnan(obs)
    obs = torch.where(observed, obs, torch.zeros_like(obs))
    count = observed.sum()
    if anomaly:
        pred, obs = anomalies(pred, obs, observed)
    err = (pred - obs) / std
    if saturation is not None:
        err = torch.where((pred > saturation) & (obs > saturation), torch.zeros_like(err), err)
    sq = torch.where(observed, err * err, torch.zeros_like(err))
    return sq.sum() / count.clamp(min=1), count


class MultiConstraintLoss(nn.Module):
    """Sum of the constraints' losses, weighted fixed or by learned task uncertainty.

    With ``weighting="uncertainty"`` (Kendall et al. 2018) each constraint c has a learned
    log-variance s_c and contributes ½ exp(−s_c) L_c + ½ s_c, so the balance between
    constraints is learned rather than set by hand.
    """

    def __init__(self, constraints: Sequence[Constraint], weighting: Weighting = "fixed"):
        super().__init__()
        if weighting not in ("fixed", "uncertainty"):
            raise ValueError(f"weighting: expected fixed or uncertainty, found {weighting!r}")
        if not constraints:
            raise ValueError("constraints: expected at least one constraint, found none")
        self.constraints = tuple(constraints)
        self.weighting = weighting
        if weighting == "uncertainty":
            self.log_var = nn.Parameter(torch.zeros(len(self.constraints)))

    def forward(
        self,
        outputs: Mapping[str, Tensor],
        batch: Mapping[str, Tensor],
        std: Mapping[str, float],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and each constraint's (unweighted) loss.

        Args:
            outputs: daily model outputs [cells, period days] keyed by output name.
            batch: the DataModule batch (targets, ``month_of_day``).
            std: z-scoring standard deviation per target (training cells).
        """
        parts: dict[str, Tensor] = {}
        total = None
        for i, c in enumerate(self.constraints):
            if c.output not in outputs:
                raise KeyError(f"constraint {c.target}: the model has no output {c.output!r}; "
                               f"valid: {', '.join(sorted(outputs))}")
            if c.target not in batch:
                raise KeyError(f"constraint {c.target}: the batch has no target {c.target!r}; "
                               f"add it to the DataModule's constraints")
            pred, obs = align(outputs[c.output], batch[c.target].to(outputs[c.output].dtype),
                              c.aggregation, batch["month_of_day"])
            loss, _ = constraint_loss(pred, obs, std[c.target],
                                      anomaly=c.anomaly, saturation=c.saturation)
            parts[c.target] = loss
            if self.weighting == "uncertainty":
                term = 0.5 * torch.exp(-self.log_var[i]) * loss + 0.5 * self.log_var[i]
            else:
                term = c.weight * loss
            total = term if total is None else total + term
        assert total is not None
        return total, parts
