"""Validation metrics that are safe under DDP: Pearson r, a share of counts, per-basin skill.

Both keep sums reduced by summation, and every rank updates them on every batch, even
with no observed entry, so the collective calls of all ranks match (a rank that skipped
an update would leave the others waiting in the all-gather).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class NanPearson(Metric):
    """Pearson r over the entries where the target is observed (not NaN)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("n", "sx", "sy", "sxx", "syy", "sxy"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64),
                           dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:  # noqa: D102
        ok = ~torch.isnan(target)
        x = torch.where(ok, pred, 0).double()
        y = torch.where(ok, target, 0).double()
        self.n += ok.sum()
        self.sx += x.sum()
        self.sy += y.sum()
        self.sxx += (x * x).sum()
        self.syy += (y * y).sum()
        self.sxy += (x * y).sum()

    def compute(self) -> Tensor:  # noqa: D102
        n = self.n.clamp(min=1)
        cov = self.sxy / n - self.sx * self.sy / n**2
        vx = self.sxx / n - (self.sx / n) ** 2
        vy = self.syy / n - (self.sy / n) ** 2
        r = cov / torch.sqrt(vx * vy)
        return torch.where((self.n > 1) & (vx > 0) & (vy > 0), r, torch.nan).float()


class Share(Metric):
    """A ratio of two sums (e.g. inconsistent days / counted days), reduced over ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("num", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("den", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, num: Tensor, den: Tensor) -> None:  # noqa: D102
        self.num += num.sum().double()
        self.den += den.sum().double()

    def compute(self) -> Tensor:  # noqa: D102
        return (self.num / self.den.clamp(min=1)).float()


#: Scores of :class:`BasinSkill`.
SKILL_SCORES: tuple[str, ...] = ("nse", "kge", "kge_prime")


def skill_from_sums(n: Tensor, sp: Tensor, so: Tensor, spp: Tensor, soo: Tensor,
                    spo: Tensor) -> dict[str, Tensor]:
    """NSE, KGE and KGE′ of each row of sums over observed days (float64, [rows]).

    NSE = 1 − Σ(p − o)² / Σ(o − ō)² (Nash and Sutcliffe 1970); KGE = 1 − √((r − 1)² +
    (α − 1)² + (β − 1)²) with α = σ_p/σ_o, β = μ_p/μ_o (Gupta et al. 2009); KGE′ puts the
    ratio of the coefficients of variation γ = (σ_p/μ_p)/(σ_o/μ_o) in place of α (Kling
    et al. 2012). Population moments; fewer than two observed days give NaN.
    """
    mp, mo = sp / n, so / n
    vp, vo = spp / n - mp**2, soo / n - mo**2
    cov = spo / n - mp * mo
    r = cov / torch.sqrt(vp * vo)
    alpha = torch.sqrt(vp / vo)
    beta = mp / mo
    gamma = alpha / beta
    out = {
        "nse": 1 - (spp - 2 * spo + soo) / (n * vo),
        "kge": 1 - torch.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2),
        "kge_prime": 1 - torch.sqrt((r - 1) ** 2 + (gamma - 1) ** 2 + (beta - 1) ** 2),
    }
    return {k: torch.where(n > 1, v, torch.nan) for k, v in out.items()}


class BasinSkill(Metric):
    """NSE, KGE and KGE′ of each cell's daily series over the epoch, DDP-safe.

    Each batch adds, per cell (``cell_index``), the sums of the days observed; ``compute``
    adds the rows of a cell (a cell may come in several batches or ranks) and returns
    ``{"cell": [cells], "nse": …, "kge": …, "kge_prime": …}`` sorted by cell.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("cells", default=[], dist_reduce_fx="cat")
        self.add_state("sums", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, obs: Tensor, cell_index: Tensor) -> None:  # noqa: D102
        ok = ~torch.isnan(obs)
        p = torch.where(ok, pred, 0).double()
        o = torch.where(ok, obs, 0).double()
        self.cells.append(cell_index.to(torch.int64))
        self.sums.append(torch.stack([ok.sum(1).double(), p.sum(1), o.sum(1), (p * p).sum(1),
                                      (o * o).sum(1), (p * o).sum(1)], 1))

    def compute(self) -> dict[str, Tensor]:  # noqa: D102
        cells = dim_zero_cat(self.cells)
        sums = dim_zero_cat(self.sums)
        ids, where = torch.unique(cells, return_inverse=True)
        total = sums.new_zeros(len(ids), sums.shape[1]).index_add(0, where, sums)
        return {"cell": ids, **skill_from_sums(*total.unbind(1))}
