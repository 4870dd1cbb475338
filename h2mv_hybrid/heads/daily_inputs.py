"""Normalized daily inputs of the pure-learning heads: meteorology plus static features.

The LSTM heads (PHY-LSTM, multi-task LSTM, CNN-LSTM) read a daily series of schema
forcings and extra meteorology (``data.inputs``) next to the static features repeated on
every day. Each column is standardized with the DataModule's training statistics, kept
as buffers so that a checkpoint predicts with the statistics it was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.data.schema import FORCING_NAMES
from h2mv_hybrid.heads.base import require_stats

#: The meteorological inputs of Li et al. (§2.1) and Yan et al. (LandBench), as schema
#: variables.
PAPER_FORCINGS: tuple[str, ...] = ("prec", "lw_down", "sw_down", "q_air", "psurf", "tair",
                                   "wind")


def require_inputs(stats: Normalization | None, needed: Sequence[str]) -> Normalization:
    """The statistics, after checking that the DataModule serves every ``needed`` input."""
    stats = require_stats(stats)
    needed = [k for k in dict.fromkeys(needed)
              if k not in FORCING_NAMES and k not in stats.target_mean]
    missing = [k for k in needed if k not in stats.input_mean]
    if missing:
        raise ValueError(
            f"data.inputs: expected {', '.join(needed)} for this head, found "
            f"{', '.join(stats.input_mean) or 'none'}; add {', '.join(missing)} to data.inputs"
        )
    return stats


def column_stats(stats: Normalization, name: str, layer: int = 1) -> tuple[float, float]:
    """Training mean and standard deviation of one daily variable (a layer of a layered one).

    A schema forcing, a served input, or a daily constraint (``data.targets``, such as
    gauged runoff ``q``).
    """
    if name in FORCING_NAMES:
        i = FORCING_NAMES.index(name)
        return float(stats.forcing_mean[i]), float(stats.forcing_std[i])
    if name in stats.target_mean and name not in stats.input_mean:
        return float(stats.target_mean[name]), float(stats.target_std[name])
    return float(stats.input_mean[name][layer - 1]), float(stats.input_std[name][layer - 1])


def daily_column(batch: dict[str, Tensor], name: str) -> Tensor:
    """One daily variable of a batch [cells, days] (a schema forcing or a served input)."""
    if name in FORCING_NAMES:
        return batch["forcing"][..., FORCING_NAMES.index(name)]
    return batch[name]


class DailyInputs(nn.Module):
    """Standardized [cells, days, forcings + static features] from a DataModule batch.

    Args:
        stats: the DataModule's normalization statistics.
        forcings: daily variables (schema forcings or ``data.inputs``), in column order.
        static: append the static features (standardized) on every day.
    """

    def __init__(self, stats: Normalization, forcings: Sequence[str], static: bool = True):
        super().__init__()
        self.forcings = tuple(forcings)
        self.static = static
        pairs = [column_stats(stats, name) for name in self.forcings]
        self.register_buffer("x_mean", torch.tensor([m for m, _ in pairs]))
        self.register_buffer("x_std", torch.tensor([s for _, s in pairs]))
        self.register_buffer("s_mean", torch.tensor(stats.static_mean))
        self.register_buffer("s_std", torch.tensor(stats.static_std))

    @property
    def size(self) -> int:
        """Columns of the output."""
        return len(self.forcings) + (len(self.s_mean) if self.static else 0)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:  # noqa: D102
        x = torch.stack([daily_column(batch, n) for n in self.forcings], -1)
        x = (x - self.x_mean) / self.x_std
        if not self.static:
            return x
        s = (batch["static"] - self.s_mean) / self.s_std
        return torch.cat([x, s[:, None, :].expand(-1, x.shape[1], -1)], -1)
