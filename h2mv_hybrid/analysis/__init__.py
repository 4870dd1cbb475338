"""Analysis of fitted models: performance metrics, equifinality, emergent patterns.

Every function takes and returns xarray objects, so it applies alike to one cell's series,
a grid, or an ensemble with a ``member`` dimension. ``ensemble_*`` read the store of
``h2mv cv``; :mod:`h2mv_hybrid.analysis.plots` draws each of them; ``h2mv analyze`` writes
them all (:mod:`h2mv_hybrid.analysis.report`).
"""

from h2mv_hybrid.analysis.ensemble import (
    ensemble_equifinality,
    ensemble_msc,
    ensemble_patterns,
    ensemble_performance,
    ensemble_spread,
    member_range,
    open_ensemble,
    predicted_cells,
)
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
    emergent_patterns,
    evaporative_fraction,
    runoff_coefficient,
    transpiration_fraction,
    tws_decomposition,
)
from h2mv_hybrid.analysis.spread import area_mean, state_spread

__all__ = [
    "METRICS",
    "area_mean",
    "ensemble_equifinality",
    "ensemble_msc",
    "ensemble_patterns",
    "ensemble_performance",
    "ensemble_spread",
    "member_range",
    "open_ensemble",
    "predicted_cells",
    "state_spread",
    "baseflow_index",
    "bias",
    "emergent_patterns",
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
