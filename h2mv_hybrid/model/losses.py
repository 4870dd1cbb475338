"""The multi-constraint loss (paper eq. 9 and §2.3.3), with constraints declared as data.

The loss of one constraint (:class:`~h2mv_hybrid.constraints.Constraint`) is the MSE
between z-scored prediction and z-scored observation over the observed entries only,
after the constraint's own rules (aggregation, anomalies, saturation; see
:mod:`h2mv_hybrid.constraints`); a batch without observations of a constraint
contributes zero, not NaN.

Two other kinds of terms (fields of the constraint): ``loss: nse_star``, the
basin-normalized squared error of Kratzert et al. (2019) (:func:`nse_star`), and
``signature``, a signature of the observed series against the model's
(:mod:`h2mv_hybrid.signatures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from h2mv_hybrid.constraints import NSE_STAR_EPS, Constraint, comparable
from h2mv_hybrid.options import check_choice
from h2mv_hybrid.signatures import modelled_signature, signature_loss

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


def _basin_scale(basin_std: Tensor, std: float, eps: float) -> tuple[Tensor, Tensor]:
    """(σ_b + ε σ) [cells, 1], 1 where σ_b is unknown, and where it is known [cells, 1]."""
    scale = (basin_std + eps * std)[:, None]
    known = torch.isfinite(scale)
    return torch.where(known, scale, torch.ones_like(scale)), known


def nse_star(pred: Tensor, obs: Tensor, basin_std: Tensor, std: float,
             eps: float = NSE_STAR_EPS) -> tuple[Tensor, Tensor]:
    """``(loss, count)``: the NSE* loss of Kratzert et al. (2019, HESS 23, 5089, eq. 3).

    The mean over observed entries of (pred − obs)² / (σ_b + ε σ)²: each cell's squared
    error scaled by its own standard deviation σ_b over the training period (plus ε times
    the training cells' σ, so that a near-constant basin does not dominate). Over a
    basin's whole training period it equals (1 − NSE_b) · σ_b² / (σ_b + ε σ)², so that
    minimizing it maximizes the basins' NSE with every basin weighed alike.

    Args:
        pred: prediction [cells, steps] on the observation's axis.
        obs: observation [cells, steps], NaN where unobserved.
        basin_std: σ_b [cells], in the unit of ``obs`` (NaN: a cell without training
            observations, which is left out).
        std: σ of the training cells.
        eps: ε, a share of ``std``.
    """
    scale, known = _basin_scale(basin_std, std, eps)
    observed = ~torch.isnan(obs) & known
    err = (pred - torch.where(observed, obs, torch.zeros_like(obs))) / scale
    sq = torch.where(observed, err * err, torch.zeros_like(err))
    count = observed.sum()
    return sq.sum() / count.clamp(min=1), count


def fdc_star(pred: Tensor, obs: Tensor, basin_std: Tensor, std: float,
             eps: float = NSE_STAR_EPS) -> tuple[Tensor, Tensor]:
    """``(loss, count)``: the basin-normalized distance between two flow duration curves.

    Each cell's predicted and observed values over its observed steps are sorted, and the
    sorted series are compared like :func:`nse_star`: the mean of (p₍ᵢ₎ − o₍ᵢ₎)² / (σ_b +
    ε σ)² over ranks i. The flow duration curve is the sorted series (Vogel & Fennessey
    1994, J. Water Resour. Plann. Manage. 120, 485); calibrating on it fits the
    distribution of flows whatever their timing (Westerberg et al. 2011, HESS 15, 2205;
    Yilmaz et al. 2008, WRR 44, W09417 for its high- and low-flow segments). The sum of
    squared differences of the sorted values is the squared 2-Wasserstein distance
    between the two empirical distributions, so it is zero exactly when they agree, and
    its gradient reaches every day through the sort's permutation.

    Unobserved steps are set, in both series, to one value below all others, so that they
    take the lowest ranks of both and pair with each other (zero error): each cell's own
    observed days are compared, whatever the gaps.

    Args:
        pred: prediction [cells, steps] on the observation's axis.
        obs: observation [cells, steps], NaN where unobserved.
        basin_std: σ_b [cells] (NaN: a cell without training observations, left out).
        std: σ of the training cells.
        eps: ε, a share of ``std``.
    """
    scale, known = _basin_scale(basin_std, std, eps)
    observed = ~torch.isnan(obs) & known
    o = torch.where(observed, obs, torch.zeros_like(obs))
    low = torch.minimum(pred.detach().min(), o.min()) - 1.0
    p_sorted = torch.where(observed, pred, low).sort(dim=1).values
    o_sorted = torch.where(observed, o, low).sort(dim=1).values
    err = (p_sorted - o_sorted) / scale
    count = observed.sum()
    return (err * err).sum() / count.clamp(min=1), count


def kge_loss(pred: Tensor, obs: Tensor) -> tuple[Tensor, Tensor]:
    """``(loss, count)``: the mean over cells of 1 − KGE.

    Gupta et al. (2009, J. Hydrol. 377, 80, eq. 9): KGE = 1 − √((r − 1)² + (α − 1)² +
    (β − 1)²) of each cell over its observed steps, α = σ_pred / σ_obs, β = μ_pred /
    μ_obs. Cells with fewer than two observed steps, or a constant or zero-mean
    observation, are left out; ``count`` is the number of cells averaged. Small
    constants keep the square roots' gradients finite at a perfect fit.
    """
    ok = ~torch.isnan(obs)
    w = ok.to(pred.dtype)
    n = w.sum(1)
    o = torch.where(ok, obs, torch.zeros_like(obs))
    p = torch.where(ok, pred, torch.zeros_like(pred))
    safe_n = n.clamp(min=1)
    mo, mp = o.sum(1) / safe_n, p.sum(1) / safe_n
    do, dp = (o - mo[:, None]) * w, (p - mp[:, None]) * w
    vo, vp = (do * do).sum(1) / safe_n, (dp * dp).sum(1) / safe_n
    tiny = torch.finfo(pred.dtype).eps
    usable = (n >= 2) & (vo > tiny) & (mo.abs() > tiny)
    vo = torch.where(usable, vo, torch.ones_like(vo))
    mo = torch.where(usable, mo, torch.ones_like(mo))
    sp = torch.sqrt(vp + tiny)
    r = (do * dp).sum(1) / safe_n / (torch.sqrt(vo) * sp)
    alpha = sp / torch.sqrt(vo)
    beta = mp / mo
    ed = torch.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2 + tiny)
    count = usable.sum()
    return torch.where(usable, ed, torch.zeros_like(ed)).sum() / count.clamp(min=1), count


def constraint_term(c: Constraint, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor],
                    std: Mapping[str, float]) -> Tensor:
    """The loss of one constraint on a batch (before its weight)."""
    if c.signature is not None:
        q = outputs["q_total"]
        prec = batch["forcing"][:, -q.shape[1]:, 1].to(q.dtype)
        observed = batch[c.target]
        mask = (~torch.isnan(observed) if observed.shape == q.shape
                else torch.ones_like(q, dtype=torch.bool))
        pred = modelled_signature(c.signature, outputs, prec, mask)
        return signature_loss(pred, batch[f"{c.target}_{c.signature}"].to(q.dtype))[0]
    pred, obs = c.pair(outputs[c.output], batch[c.target], batch["month_of_day"])
    if c.loss == "nse_star":
        return nse_star(pred, obs, batch[f"{c.target}_basin_std"].to(pred.dtype),
                        std[c.target])[0]
    if c.loss == "kge":
        return kge_loss(pred, obs)[0]
    if c.loss == "fdc":
        return fdc_star(pred, obs, batch[f"{c.target}_basin_std"].to(pred.dtype),
                        std[c.target])[0]
    return masked_mse(pred, obs, std[c.target])[0]


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
            batch: the DataModule batch (targets, ``month_of_day``, and the per-cell
                ``<target>_basin_std`` and ``<target>_<signature>`` the constraints use).
            std: z-scoring standard deviation per target (training cells).
        """
        parts: dict[str, Tensor] = {}
        total = None
        for i, c in enumerate(self.constraints):
            if c.signature is None and c.output not in outputs:
                raise KeyError(f"constraint {c.target}: the model has no output {c.output!r}; "
                               f"valid: {', '.join(sorted(outputs))}")
            if c.target not in batch:
                raise KeyError(f"constraint {c.target}: the batch has no target {c.target!r}; "
                               f"add it to the DataModule's constraints")
            loss = constraint_term(c, outputs, batch, std)
            parts[c.name] = loss
            if self.weighting == "uncertainty":
                term = 0.5 * torch.exp(-self.log_var[i]) * loss + 0.5 * self.log_var[i]
            else:
                term = c.weight * loss
            total = term if total is None else total + term
        assert total is not None
        return total, parts
