"""Observation operators: what a product observes, computed from the hybrid's states.

Some observations are not a flux or storage of the bucket but a function of one: a
snow-cover product sees the snow-covered fraction of a basin, not its SWE. An observer
is a small module with its own learned global constants (a row of the coefficient table,
group ``observation``); the hybrid builds the observers its constraints name and adds
their outputs to the daily outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import process_layers.snow as snow
from process_layers.parameters import BY_NAME

#: Initial k of the snow-covered fraction, mm.
SNOW_COVER_SCALE_INIT = 30.0


class SnowCover(nn.Module):
    """The snow-covered fraction 1 − exp(−SWE / k), k learned.

    See :func:`process_layers.snow.snow_covered_fraction`.
    """

    coefficient = BY_NAME[("observation", "snow_cover_scale")]

    def __init__(self, init_mm: float = SNOW_COVER_SCALE_INIT):
        super().__init__()
        self.raw = nn.Parameter(torch.tensor(self.coefficient.inverse(init_mm)))

    def constants(self) -> dict[str, Tensor]:
        """``snow_cover_scale``: k, mm."""
        return {"snow_cover_scale": self.coefficient.activate(self.raw)}

    def forward(self, daily: dict[str, Tensor]) -> Tensor:
        """Snow-covered fraction [cells, days] from the daily SWE (mm)."""
        swe = daily["swe"]
        return snow.snow_covered_fraction(swe, self.constants()["snow_cover_scale"].to(swe.dtype))


#: Observers by the output name a constraint uses.
OBSERVERS: dict[str, type[nn.Module]] = {"snow_cover": SnowCover}
