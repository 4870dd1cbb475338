"""Small hand-made ensembles and input stores for the analysis and figure tests."""

import numpy as np
import pandas as pd
import xarray as xr

TIME = pd.date_range("2002-01-01", "2003-12-31", freq="D")
MONTHS = pd.date_range("2002-01-01", "2003-12-01", freq="MS")


def series(shape_members=2, cells=3, seed=0):
    rng = np.random.default_rng(seed)
    day = np.arange(len(TIME))
    base = 50 + 20 * np.sin(2 * np.pi * day / 365.25)
    return base[None, :, None] + rng.normal(0, 1, (shape_members, len(TIME), cells))


def small_stores(members=2, noise=0.0):
    """An ensemble and an input store on 2 × 2 grid cells, one of them not predicted."""
    lat, lon = [10.0, 50.0], [0.0, 20.0]
    rng = np.random.default_rng(1)
    shape = (members, len(TIME), 2, 2)
    day = np.arange(len(TIME))[None, :, None, None]
    et = 2 + np.sin(2 * np.pi * day / 365.25) + noise * rng.normal(size=shape)
    et = np.broadcast_to(et, shape).copy()
    et[:, :, 1, 1] = np.nan  # not predicted
    ens = xr.Dataset(
        {
            "ET": (("member", "time", "lat", "lon"), et, {"units": "mm day-1"}),
            "T": (("member", "time", "lat", "lon"), 0.5 * et),
            "q_total": (("member", "time", "lat", "lon"), 0.25 * et),
            "q_base": (("member", "time", "lat", "lon"), 0.1 * et),
            "swe": (("member", "time", "lat", "lon"), 0 * et),
            "sm": (("member", "time", "lat", "lon"), 10 * et),
            "gw": (("member", "time", "lat", "lon"), 10 * et + 5),
            "tws": (("member", "time", "lat", "lon"), 20 * et + 5),
            "sm_max": (("member", "lat", "lon"),
                       np.where(np.isnan(et[:, 0]), np.nan, 100.0 + np.arange(members)[:, None, None])),
        },
        coords={"member": np.arange(members), "time": TIME, "lat": lat, "lon": lon},
    )
    obs_et = ens["ET"].isel(member=0).resample(time="MS").mean().values
    store = xr.Dataset(
        {
            "et": (("month", "lat", "lon"), obs_et),
            "rn": (("time", "lat", "lon"), np.full((len(TIME), 2, 2), 100.0)),
            "prec": (("time", "lat", "lon"), np.full((len(TIME), 2, 2), 4.0)),
        },
        coords={"month": MONTHS, "time": TIME, "lat": lat, "lon": lon},
    )
    return ens, store
