"""Scores of soil-moisture forecasts (the PHY-LSTM heads) against the store they forecast.

Per member and cell, over the predicted period (Li et al. §2.5): Pearson R, RMSE
(m³ m⁻³), R² as the coefficient of determination 1 − SSE / SST (the paper's R² values
lie below R², so it is this form, not r²), KGE (Gupta et al. 2009), and the physical
inconsistency of eq. 19 (share of days whose predicted change and the change of ΔW
disagree in sign) against ΔW of eq. 10 and ΔW^s of eq. 11. The same inconsistency of the
observed series is the reference: a perfect forecast has exactly that.

:func:`summarize` gives the median over cells per member, overall and by Köppen-like
zone (:mod:`h2mv_hybrid.analysis.climate`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from h2mv_hybrid.analysis.climate import ZONES, climate_zones
from h2mv_hybrid.analysis.ensemble import predicted_cells
from h2mv_hybrid.analysis.metrics import kge, nse, pearson_r, rmse
from process_layers import monotonic

SCORES: tuple[str, ...] = ("R", "RMSE", "R2", "KGE", "inconsistency", "inconsistency_deep",
                           "inconsistency_level")


def water_directions(store: xr.Dataset, time: pd.DatetimeIndex, layer: int = 1
                     ) -> tuple[xr.DataArray, ...]:
    """Observed soil moisture and the eq. 12 directions of ΔW (eq. 10) and ΔW^s (eq. 11).

    Args:
        store: the input store on a ``cell`` dim (see :func:`predicted_cells`).
        time: the predicted days; the two days before them are read too, since ΔW and its
            change look back two days.
        layer: the forecast layer (1: surface); the deeper ones make ΔW^s.

    Returns:
        ``(sm, direction, direction_deep, direction_level)``, each (time, cell) on
        ``time``; the last is sign(ΔW_t) of eq. 10 (``mode="level"``).
    """
    t0 = pd.Timestamp(time[0]) - pd.Timedelta(days=2)
    s = store.sel(time=slice(t0, pd.Timestamp(time[-1])))
    names = ["prec", "et_daily", "q_surf_daily", "swe_daily", "sm_layers"]
    missing = [n for n in names if n not in s]
    if missing:
        raise ValueError(f"store: expected {', '.join(missing)} for the soil-moisture scores, "
                         f"found none")
    as_t = lambda a: torch.as_tensor(np.asarray(a.transpose("cell", "time").values,  # noqa: E731
                                                np.float64))
    theta = s["sm_layers"].load()
    thickness = torch.as_tensor(1000.0 * (s["depth_bottom"] - s["depth_top"]).values)
    dw = monotonic.surface_water_change(as_t(s["prec"]), as_t(s["et_daily"]),
                                        as_t(s["q_surf_daily"]), as_t(s["swe_daily"]))
    deep = monotonic.deep_storage(
        torch.as_tensor(theta.transpose("cell", "time", "layer").values, dtype=torch.float64),
        thickness, layer)
    dws = monotonic.surface_water_change_deep(dw, deep)
    sm = theta.isel(layer=layer - 1).drop_vars(["layer", "depth_top", "depth_bottom"],
                                               errors="ignore")

    def wrap(x: torch.Tensor) -> xr.DataArray:
        da = xr.DataArray(x.numpy().T, dims=("time", "cell"), coords={"time": s["time"]})
        return da.isel(time=slice(2, None))

    directions = (wrap(monotonic.expected_direction(dw)),
                  wrap(monotonic.expected_direction(dws)),
                  wrap(monotonic.expected_direction(dw, "level")))
    sm = sm.transpose("time", "cell").isel(time=slice(2, None))
    return sm, *directions


def _inconsistency(pred: xr.DataArray, direction: xr.DataArray) -> xr.DataArray:
    """Eq. 19 per cell (and member): inconsistent days / counted days."""
    p = torch.as_tensor(pred.transpose(..., "cell", "time").values.astype(np.float64))
    d = torch.as_tensor(direction.transpose("cell", "time").values)
    shape = p.shape
    bad, counted = monotonic.inconsistency(p.reshape(-1, shape[-1]),
                                           d.repeat(int(np.prod(shape[:-2])), 1))
    share = (bad.double() / counted.clamp(min=1).double()).reshape(shape[:-1]).numpy()
    dims = [d for d in pred.transpose(..., "cell", "time").dims if d != "time"]
    return xr.DataArray(np.where(counted.reshape(shape[:-1]).numpy() > 0, share, np.nan),
                        dims=dims)


def soil_moisture_scores(ens: xr.Dataset, store: xr.Dataset, output: str | None = None,
                         layer: int = 1, zones: xr.DataArray | None = None) -> xr.Dataset:
    """Scores per member and cell of one forecast soil-moisture output.

    Args:
        ens: the ensemble store (``h2mv cv``) of a soil-moisture head.
        store: its input store.
        output: the forecast variable (default: the only ``sm_layer*`` variable).
        layer: the layer it forecasts.
        zones: :func:`~h2mv_hybrid.analysis.climate.climate_zones` of ``store``, when
            already computed (it reads the whole store's temperature and precipitation).

    Returns:
        Dataset of :data:`SCORES` (member, cell), ``observed_inconsistency`` and
        ``observed_inconsistency_deep`` (cell), and ``zone`` (cell) with lat / lon.
    """
    if output is None:
        found = [k for k in ens.data_vars if str(k).startswith("sm_layer")]
        if len(found) != 1:
            raise ValueError(f"output: expected one sm_layer* variable in the ensemble store, "
                             f"found {found or 'none'}")
        output = str(found[0])
    zones = climate_zones(store) if zones is None else zones
    ens, cells = predicted_cells(ens, store.assign(zone=zones))
    pred = ens[output].load()
    obs, direction, direction_deep, level = water_directions(cells, pred.indexes["time"],
                                                             layer)
    pred = pred.transpose("member", "time", "cell")
    out = xr.Dataset({
        "R": pearson_r(pred, obs), "RMSE": rmse(pred, obs), "R2": nse(pred, obs),
        "KGE": kge(pred, obs),
        "inconsistency": _inconsistency(pred, direction),
        "inconsistency_deep": _inconsistency(pred, direction_deep),
        "inconsistency_level": _inconsistency(pred, level),
        "observed_inconsistency": _inconsistency(obs, direction),
        "observed_inconsistency_deep": _inconsistency(obs, direction_deep),
        "observed_inconsistency_level": _inconsistency(obs, level),
    })
    out = out.assign_coords(zone=("cell", cells["zone"].values), lat=cells["lat"],
                            lon=cells["lon"], member=ens["member"])
    out["RMSE"].attrs["units"] = "m3 m-3"
    for k in ("inconsistency", "inconsistency_deep", "inconsistency_level"):
        out[k].attrs["long_name"] = f"share of days inconsistent with ΔW (eq. 19, {k})"
    return out


def summarize(scores: xr.Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Median over cells, then mean over members: overall, and by climate zone.

    Returns:
        ``(overall, by_zone)``: one row of :data:`SCORES` plus the observed reference
        inconsistencies, and one row per zone with its number of cells.
    """
    names = [*SCORES, *(f"observed_{k}" for k in SCORES if k.startswith("inconsistency"))]
    overall = {k: float(scores[k].median("cell").mean()) for k in names}
    overall["cells"] = scores.sizes["cell"]
    overall["members"] = scores.sizes["member"]
    rows = []
    for code, zone in enumerate(ZONES):
        sel = scores.where(scores["zone"] == code, drop=True)
        if sel.sizes.get("cell", 0) == 0:
            continue
        row = {"zone": zone, "cells": sel.sizes["cell"]}
        row.update({k: float(sel[k].median("cell").mean()) for k in names})
        rows.append(row)
    return pd.DataFrame([overall]), pd.DataFrame(rows)
