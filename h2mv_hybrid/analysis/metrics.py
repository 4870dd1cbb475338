"""Performance of predictions against observations (paper Fig. 5), NaN-aware, on xarray.

Each metric reduces over ``dim`` (default ``time``) using only the entries where both
prediction and observation are finite; a series with fewer than two such entries gives
NaN. The formulas are short enough that xarray expresses them directly; a metrics library
(e.g. xskillscore) would add SciPy and more for six reductions.

- Pearson r; RMSE; standard-deviation ratio SDR = σ_pred / σ_obs; bias = mean(pred − obs);
- NSE = 1 − Σ(pred − obs)² / Σ(obs − mean(obs))²  (Nash and Sutcliffe 1970);
- KGE = 1 − √((r − 1)² + (σ_pred/σ_obs − 1)² + (μ_pred/μ_obs − 1)²)  (Gupta et al. 2009);
- KGE′ = 1 − √((r − 1)² + (γ − 1)² + (β − 1)²), γ = (σ_pred/μ_pred)/(σ_obs/μ_obs), the ratio of
  the coefficients of variation, so that bias and variability do not cross-correlate
  (Kling et al. 2012).

Standard deviations are population ones (ddof 0), as in Gupta et al. (2009).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xarray as xr


def _paired(pred: xr.DataArray, obs: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    pred, obs = xr.align(pred, obs, join="exact")
    both = np.isfinite(pred) & np.isfinite(obs)
    return pred.where(both), obs.where(both)


def _enough(x: xr.DataArray, dim: str) -> xr.DataArray:
    return x.count(dim) >= 2


def _ratio(num: xr.DataArray, den: xr.DataArray) -> xr.DataArray:
    """The ratio num / den, NaN where den is 0.

    A cell without data (ocean, no observation) gives 0 / 0, which numpy reports as
    "invalid value" at every compute of a dask array.
    """
    return num / den.where(den != 0)


def _mean(x: xr.DataArray, dim: str) -> xr.DataArray:
    """Mean over the finite entries; NaN where there are none.

    dask's own mean and std divide 0 by 0 there, with a warning.
    """
    return _ratio(x.sum(dim), x.count(dim))


def _std(x: xr.DataArray, dim: str) -> xr.DataArray:
    """Population standard deviation (ddof 0) over the finite entries, as :func:`_mean`."""
    return np.sqrt(_mean((x - _mean(x, dim)) ** 2, dim))


def pearson_r(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Pearson correlation over ``dim``."""
    p, o = _paired(pred, obs)
    dp, do = p - _mean(p, dim), o - _mean(o, dim)
    r = _ratio((dp * do).sum(dim), np.sqrt((dp**2).sum(dim) * (do**2).sum(dim)))
    return r.where(_enough(p, dim))


def rmse(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Root-mean-square error over ``dim``, in the variables' unit."""
    p, o = _paired(pred, obs)
    return np.sqrt(_mean((p - o) ** 2, dim)).where(_enough(p, dim))


def sdr(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Standard-deviation ratio σ_pred / σ_obs over ``dim``."""
    p, o = _paired(pred, obs)
    return _ratio(_std(p, dim), _std(o, dim)).where(_enough(p, dim))


def bias(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Mean of pred − obs over ``dim``, in the variables' unit."""
    p, o = _paired(pred, obs)
    return _mean(p - o, dim).where(_enough(p, dim))


def nse(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Nash–Sutcliffe efficiency over ``dim`` (1 is perfect; 0 is the observed mean)."""
    p, o = _paired(pred, obs)
    return (1 - _ratio(((p - o) ** 2).sum(dim), ((o - _mean(o, dim)) ** 2).sum(dim))).where(
        _enough(p, dim))


def kge(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time",
        bias_term: bool = True) -> xr.DataArray:
    """Kling–Gupta efficiency over ``dim`` (Gupta et al. 2009, eq. 9; 1 is perfect).

    ``bias_term=False`` leaves out (μ_pred/μ_obs − 1)², for series whose mean is removed
    by construction (anomalies, IAV): there μ_obs ≈ 0 and the ratio is meaningless.
    """
    p, o = _paired(pred, obs)
    r = pearson_r(p, o, dim)
    alpha = _ratio(_std(p, dim), _std(o, dim))
    if not bias_term:
        return 1 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2)
    beta = _ratio(_mean(p, dim), _mean(o, dim))
    return 1 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2)


def kge_prime(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Modified Kling–Gupta efficiency KGE′ over ``dim`` (Kling et al. 2012, eq. 3)."""
    p, o = _paired(pred, obs)
    r = pearson_r(p, o, dim)
    beta = _ratio(_mean(p, dim), _mean(o, dim))
    gamma = _ratio(_ratio(_std(p, dim), _mean(p, dim)), _ratio(_std(o, dim), _mean(o, dim)))
    return 1 - np.sqrt((r - 1) ** 2 + (gamma - 1) ** 2 + (beta - 1) ** 2)


Metric = Callable[[xr.DataArray, xr.DataArray, str], xr.DataArray]
#: The metrics of :func:`performance`, by name.
METRICS: dict[str, Metric] = {"r": pearson_r, "rmse": rmse, "sdr": sdr, "kge": kge,
                              "nse": nse, "bias": bias}


def msc(x: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Mean seasonal cycle: the mean of each calendar month over the years (``month`` 1–12)."""
    return x.groupby(f"{dim}.month").mean(dim)


def iav(x: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Interannual variability: each month's departure from its mean seasonal cycle."""
    return (x.groupby(f"{dim}.month") - msc(x, dim)).drop_vars("month")


def performance(pred: xr.DataArray, obs: xr.DataArray, dim: str = "time",
                anomaly: bool = False) -> xr.Dataset:
    """Every metric for monthly values, the mean seasonal cycle and the interannual variability.

    Args:
        pred: predictions on a monthly ``dim`` (datetime coordinate); any other dims (cell,
            member …) are kept.
        obs: observations on the same coordinates; NaN where missing.
        dim: the monthly time dimension.
        anomaly: the series are anomalies (their means removed, as for TWS): KGE leaves
            out its bias ratio for every component; the IAV's KGE always does.

    Returns:
        A Dataset with one variable per metric name, each with a new ``component``
        dimension (``monthly``, ``msc``, ``iav``). The MSC is taken over the entries where
        both are observed, so gaps affect prediction and observation alike.
    """
    p, o = _paired(pred, obs)
    parts = {"monthly": (p, o, dim), "msc": (msc(p, dim), msc(o, dim), "month"),
             "iav": (iav(p, dim), iav(o, dim), dim)}
    out = {}
    for name, fn in METRICS.items():
        values = []
        for component, (a, b, d) in parts.items():
            if name == "kge" and (anomaly or component == "iav"):
                values.append(kge(a, b, d, bias_term=False))
            else:
                values.append(fn(a, b, d))
        out[name] = xr.concat(values, dim=xr.DataArray(list(parts), dims="component",
                                                       name="component"))
    result = xr.Dataset(out)
    result["kge"].attrs["note"] = (
        "without the bias ratio for the IAV" + (" and every component (anomalies)"
                                                 if anomaly else ""))
    return result
