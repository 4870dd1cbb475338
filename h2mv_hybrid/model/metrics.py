"""Validation metrics that are safe under DDP: a NaN-aware Pearson r and a share of counts.

Both keep sums reduced by summation, and every rank updates them on every batch, even
with no observed entry, so the collective calls of all ranks match (a rank that skipped
an update would leave the others waiting in the all-gather).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


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
