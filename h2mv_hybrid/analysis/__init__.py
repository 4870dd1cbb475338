"""Analysis of fitted models: performance metrics, equifinality, emergent patterns.

Every function takes and returns xarray objects, so it applies alike to one cell's series,
a grid, or an ensemble with a ``member`` dimension.
"""

from h2mv_hybrid.analysis.equifinality import equifinality
from h2mv_hybrid.analysis.metrics import (
    METRICS,
    bias,
    iav,
    kge,
    msc,
    nse,
    pearson_r,
    performance,
    rmse,
    sdr,
)
from h2mv_hybrid.analysis.patterns import (
    baseflow_index,
    evaporative_fraction,
    runoff_coefficient,
    transpiration_fraction,
    tws_decomposition,
)

__all__ = [
    "METRICS",
    "baseflow_index",
    "bias",
    "equifinality",
    "evaporative_fraction",
    "iav",
    "kge",
    "msc",
    "nse",
    "pearson_r",
    "performance",
    "rmse",
    "runoff_coefficient",
    "sdr",
    "transpiration_fraction",
    "tws_decomposition",
]
