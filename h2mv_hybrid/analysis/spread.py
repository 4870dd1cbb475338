"""Spread of the water states across ensemble members (paper Fig. 7, §3.3).

Each member's storages are first averaged over the cells (area-weighted by cos(latitude)
where a ``lat`` coordinate exists), giving one series per member and storage. Then:

- anomalies: each series minus its own time mean (Fig. 7a), and their range across
  members at every time step (the thickness of the band);
- means: each series' time mean (Fig. 7b: the mean of the means, and their min and max
  across members);
- SM mean against TWS mean across members (Fig. 7c): least-squares slope, intercept and
  Pearson r.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr


def area_mean(x: xr.DataArray, dims: Sequence[str]) -> xr.DataArray:
    """Mean over ``dims`` weighted by cos(latitude) when ``x`` has a ``lat`` coordinate.

    NaN entries (cells not predicted or unobserved) are left out of the weights.
    """
    dims = [d for d in dims if d in x.dims]
    if "lat" in x.coords and any(d in x["lat"].dims for d in dims):
        w = np.cos(np.deg2rad(x["lat"])).clip(min=0)
        return x.weighted(w.fillna(0)).mean(dims)
    return x.mean(dims)


def state_spread(states: Mapping[str, xr.DataArray], space: Sequence[str] = ("cell",),
                 member: str = "member", dim: str = "time") -> xr.Dataset:
    """Anomalies, their range and the means of each storage across members (Fig. 7).

    Args:
        states: storages (mm) by name, e.g. ``{"swe": …, "sm": …, "gw": …, "tws": …}``,
            each with ``member``, ``dim`` and the spatial dims ``space``.
        space: dims to average over (``cell``, or ``lat`` and ``lon``).
        member: ensemble dimension.
        dim: time dimension.

    Returns:
        Dataset with ``anomaly`` [state, member, time], ``anomaly_range`` [state, time]
        (max − min across members), ``mean`` [state, member] (mm) and, when ``sm`` and
        ``tws`` are among the states, attributes ``sm_tws_slope``, ``sm_tws_intercept``
        (mm) and ``sm_tws_r`` of TWS mean regressed on SM mean across members.
    """
    if not states:
        raise ValueError("states: expected at least one storage, found none")
    series = {}
    for name, x in states.items():
        for d in (member, dim):
            if d not in x.dims:
                raise ValueError(f"{name}: expected a {d!r} dimension, found dims {x.dims}")
        series[name] = area_mean(x, space)
    names = list(series)
    s = xr.concat([series[n] for n in names], dim=xr.DataArray(names, dims="state",
                                                               name="state"))
    mean = s.mean(dim)
    anomaly = s - mean
    out = xr.Dataset({
        "anomaly": anomaly.assign_attrs(units="mm", long_name="state minus its time mean"),
        "anomaly_range": (anomaly.max(member) - anomaly.min(member)).assign_attrs(
            units="mm", long_name="range of the anomalies across members"),
        "mean": mean.assign_attrs(units="mm", long_name="time mean of the state"),
    })
    if "sm" in series and "tws" in series and s.sizes[member] >= 2:
        x = mean.sel(state="sm").values
        y = mean.sel(state="tws").values
        slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (np.nan, np.nan)
        r = np.corrcoef(x, y)[0, 1] if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
        out.attrs.update(sm_tws_slope=float(slope), sm_tws_intercept=float(intercept),
                         sm_tws_r=float(r))
    return out
