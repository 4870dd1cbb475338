"""The multi-constraint loss (paper eq. 9 and §2.3.3), with constraints declared as data.

The loss of one constraint (:class:`~h2mv_hybrid.constraints.Constraint`) is the MSE
between z-scored prediction and z-scored observation over the observed entries only,
after the constraint's own rules (aggregation, anomalies, saturation; see
:mod:`h2mv_hybrid.constraints`); a batch without observations of a constraint
contributes zero, not NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from h2mv_hybrid.constraints import Constraint, comparable
from h2mv_hybrid.options import check_choice

Weighting = Literal["fixed", "uncertainty"]


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
    return masked_mse(*comparable(pred, obs, anomaly=anomaly, saturation=saturation), std)


def masked_mse(pred: Tensor, obs: Tensor, std: float) -> tuple[Tensor, Tensor]:
    """``(loss, count)`` of series already made comparable (:func:`comparable`).

    The mean of ((pred − obs) / std)² over the entries where ``obs`` is not NaN (0 when
    there are none, with a zero gradient), and the number of those entries.
    """
    observed = ~torch.isnan(obs)
    err = (pred - torch.where(observed, obs, torch.zeros_like(obs))) / std
    sq = torch.where(observed, err * err, torch.zeros_like(err))
    count = observed.sum()
    return sq.sum() / count.clamp(min=1), count


class MultiConstraintLoss(nn.Module):
    """Sum of the constraints' losses, weighted fixed or by learned task uncertainty.

    With ``weighting="uncertainty"`` (Kendall et al. 2018) each constraint c has a learned
    log-variance s_c and contributes ½ exp(−s_c) L_c + ½ s_c, so the balance between
    constraints is learned rather than set by hand.
    """

    def __init__(self, constraints: Sequence[Constraint], weighting: Weighting = "fixed"):
        super().__init__()
        check_choice("weighting", weighting, Weighting)
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
            pred, obs = c.pair(outputs[c.output], batch[c.target], batch["month_of_day"])
            loss, _ = masked_mse(pred, obs, std[c.target])
            parts[c.target] = loss
            if self.weighting == "uncertainty":
                term = 0.5 * torch.exp(-self.log_var[i]) * loss + 0.5 * self.log_var[i]
            else:
                term = c.weight * loss
            total = term if total is None else total + term
        assert total is not None
        return total, parts
