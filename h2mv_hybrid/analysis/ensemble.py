"""The analyses of an ensemble store (``h2mv cv``) against the input store it predicted.

The ensemble store holds every member's daily outputs on the predicted cells (the test
fold, or every modelled cell). :func:`predicted_cells` gathers those cells from both
stores into one ``cell`` dimension (in the same order), and the functions below compute:

- :func:`ensemble_performance`: Fig. 5: every metric per constraint, for the monthly
  values (daily targets averaged over their observed days), MSC and IAV, computed per
  cell over time and summarized by the median over the cells, for every member
  (:func:`member_range` gives min / mean / max over members);
- :func:`ensemble_msc`: mean seasonal cycles of prediction (per member) and observation,
  averaged over the cells where both exist;
- :func:`ensemble_patterns`: §3.2 maps averaged over members: evaporative fraction,
  runoff coefficient, T/ET, SM_max, baseflow index, Getirana TWS shares;
- :func:`ensemble_equifinality`: Fig. 8: eqs 10–12 per variable, over time at each
  cell, averaged over the cells (SM_max: over the cells, as it has no time axis);
- :func:`ensemble_spread`: Fig. 7 (see :mod:`h2mv_hybrid.analysis.spread`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from h2mv_hybrid.analysis.equifinality import equifinality
from h2mv_hybrid.analysis.metrics import performance
from h2mv_hybrid.analysis.patterns import (
    baseflow_index,
    evaporative_fraction,
    runoff_coefficient,
    transpiration_fraction,
    tws_decomposition,
)
from h2mv_hybrid.analysis.spread import area_mean, state_spread
from h2mv_hybrid.constraints import PAPER_CONSTRAINTS, Constraint, constraint_series
from h2mv_hybrid.data.schema import time_axis
from h2mv_hybrid.data.store import open_store, open_zarr
from process_layers.constants import LATENT_HEAT_VAPORISATION, W_M2_TO_MJ_M2_DAY

#: Variables of the equifinality table (Fig. 8), in the order plotted; ``tws_anomaly``
#: is TWS minus each member's own time mean at each cell.
EQUIFINALITY_VARIABLES: tuple[str, ...] = (
    "sm_max", "tws", "tws_anomaly", "sm", "gw", "swe",
    "Ei", "Es", "T", "ET",
    "r_soil", "r_gw", "q_surf", "q_base", "q_total",
    "r_soil_frac", "r_gw_frac", "q_surf_frac",
    "snow_acc", "snow_melt",
)
STATES = ("swe", "sm", "gw", "tws")


def open_ensemble(path: str | Path, store: str | Path | None = None
                  ) -> tuple[xr.Dataset, xr.Dataset]:
    """The ensemble store and its input store (``store``, else the one it records)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ensemble: expected a zarr store at {path}, found nothing "
                                f"(h2mv cv writes <root>/ensemble.zarr)")
    ens = open_zarr(path)
    if "member" not in ens.dims:
        raise ValueError(f"ensemble: expected a 'member' dimension in {path}, found dims "
                         f"{tuple(ens.dims)}")
    source = store if store is not None else ens.attrs.get("input_store")
    if source is None:
        raise ValueError(f"store: {path} records no input store; pass store=")
    return ens, open_store(source)


def predicted_cells(ens: xr.Dataset, store: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """Both stores reduced to the predicted cells along one ``cell`` dimension.

    Grid stores are stacked (lat, lon) → cell, with ``lat`` and ``lon`` kept as plain
    coordinates of each cell; the cells kept are those where member 0 has an SM_max (or,
    for heads without one, a first-day value of its first daily output). The
    two results share the cell coordinate, so they align exactly.
    """
    if "cell" not in ens.dims:
        ens = ens.stack(cell=("lat", "lon")).reset_index("cell")
        store = store.stack(cell=("lat", "lon")).reset_index("cell")
    if "sm_max" in ens:
        probe, what = ens["sm_max"].isel(member=0), "sm_max"
    else:  # heads without SM_max: the first daily output on the first day
        what = next(k for k, v in ens.data_vars.items() if v.dims[:2] == ("member", "time"))
        probe = ens[what].isel(member=0, time=0)
    keep = np.flatnonzero(np.isfinite(probe.values))
    if len(keep) == 0:
        raise ValueError(f"ensemble: expected predicted cells (finite {what}), found none")
    return ens.isel(cell=keep), store.isel(cell=keep)


def cell_positions(among: xr.Dataset, cells: xr.Dataset) -> np.ndarray:
    """Position in ``among`` of each cell of ``cells`` (−1 where absent), by lat/lon.

    Both have a ``cell`` dim with ``lat`` and ``lon`` coordinates.
    """
    where = pd.MultiIndex.from_arrays([among["lat"].values, among["lon"].values])
    return where.get_indexer(pd.MultiIndex.from_arrays([cells["lat"].values,
                                                         cells["lon"].values]))


def ensemble_performance(ens: xr.Dataset, store: xr.Dataset,
                         constraints: Sequence[Constraint] = PAPER_CONSTRAINTS) -> xr.Dataset:
    """Every metric of every constraint, per member (median over the cells; Fig. 5).

    Args:
        ens: the ensemble store reduced by :func:`predicted_cells`.
        store: the input store reduced the same way.
        constraints: which outputs are compared with which targets.

    Returns:
        Dataset with one variable per metric, dims (constraint, component, member), and
        the outputs' ``units`` along ``constraint``. Every component is of monthly
        values: daily targets are averaged over the observed days of each month first.
    """
    parts = []
    for c in constraints:
        pred, obs = constraint_series(ens, store, c)
        if time_axis(store, c.target) != "month":
            # daily targets (SWE) are scored on monthly means of the jointly observed days,
            # so that every constraint's "monthly" component means the same thing
            pred = pred.where(np.isfinite(obs)).resample(time="MS").mean()
            obs = obs.resample(time="MS").mean()
        parts.append(performance(pred, obs, anomaly=c.anomaly).median("cell"))
    names = [c.target for c in constraints]
    out = xr.concat(parts, dim=xr.DataArray(names, dims="constraint", name="constraint"),
                    combine_attrs="drop_conflicts")
    units = [str(ens[c.output].attrs.get("units", "")) for c in constraints]
    out = out.assign_coords(units=("constraint", units))
    out.attrs["aggregation"] = "per-cell metric over time, median over the predicted cells"
    return out


def member_range(ds: xr.Dataset, member: str = "member") -> xr.Dataset:
    """min, mean and max over members along a new ``stat`` dimension."""
    return xr.concat([ds.min(member), ds.mean(member), ds.max(member)],
                     dim=xr.DataArray(["min", "mean", "max"], dims="stat", name="stat"))


def ensemble_msc(ens: xr.Dataset, store: xr.Dataset,
                 constraints: Sequence[Constraint] = PAPER_CONSTRAINTS) -> xr.Dataset:
    """Mean seasonal cycle of each constraint: ``<target>_pred`` (member, month), ``_obs``.

    Both are averaged (area-weighted) over the cells and steps where the observation
    exists, so gaps affect them alike.
    """
    out = {}
    for c in constraints:
        pred, obs = constraint_series(ens, store, c)
        pred = pred.where(np.isfinite(obs))
        units = ens[c.output].attrs.get("units", "")
        out[f"{c.target}_pred"] = area_mean(pred, ["cell"]).groupby("time.month").mean(
            "time").assign_attrs(units=units)
        out[f"{c.target}_obs"] = area_mean(obs, ["cell"]).groupby("time.month").mean(
            "time").assign_attrs(units=units)
    return xr.Dataset(out)


def _to_map(x: xr.DataArray, like: xr.Dataset) -> xr.DataArray:
    """Predicted cells back onto the full grid of ``like`` (NaN elsewhere)."""
    if "cell" in like.dims or "cell" not in x.dims or "lat" not in x.coords:
        return x
    return x.set_index(cell=["lat", "lon"]).unstack("cell").reindex(lat=like["lat"],
                                                                     lon=like["lon"])


def ensemble_patterns(ens: xr.Dataset, store: xr.Dataset, grid: xr.Dataset | None = None
                      ) -> xr.Dataset:
    """Emergent patterns averaged over members (§3.2), as maps on ``grid``'s lat/lon.

    Args:
        ens: the ensemble store reduced by :func:`predicted_cells`.
        store: the input store reduced the same way (``rn`` and ``prec`` over the period).
        grid: the unreduced ensemble store, whose lat/lon the maps are put back on.
    """
    forcing = store[["rn", "prec"]].sel(time=ens["time"])
    rn_mm = (forcing["rn"] * (W_M2_TO_MJ_M2_DAY / LATENT_HEAT_VAPORISATION)).clip(min=0)
    parts = {
        "evaporative_fraction": evaporative_fraction(ens["ET"], rn_mm),
        "runoff_coefficient": runoff_coefficient(ens["q_total"], forcing["prec"]),
        "transpiration_fraction": transpiration_fraction(ens["T"], ens["ET"]),
        "baseflow_index": baseflow_index(ens["q_base"], ens["q_total"]),
    }
    decomposition = tws_decomposition({k: ens[k] for k in ("swe", "sm", "gw")})
    for k in decomposition:
        parts[f"tws_share_{k}"] = decomposition[k]
    out = {}
    for name, x in parts.items():
        attrs = x.attrs
        out[name] = x.mean("member").compute().assign_attrs(attrs)
    out["sm_max"] = ens["sm_max"].mean("member").compute().assign_attrs(
        units="mm", long_name="SM_max (mean over members)")
    out["sm_max_spread"] = (ens["sm_max"].max("member") - ens["sm_max"].min("member")
                            ).compute().assign_attrs(units="mm",
                                                     long_name="SM_max range across members")
    maps = xr.Dataset({k: _to_map(v, grid if grid is not None else ens) for k, v in
                       out.items()})
    maps.attrs["members"] = int(ens.sizes["member"])
    return maps


def ensemble_equifinality(ens: xr.Dataset,
                          variables: Sequence[str] = EQUIFINALITY_VARIABLES) -> xr.Dataset:
    """Phase, bias and variance terms per variable (Fig. 8), dims (variable,).

    Each daily variable's terms are computed over time at every cell and averaged over
    the cells where they are defined (a variable constant at a cell, such as SWE in the
    tropics, has no variance there and is left out); a map without time (SM_max, a
    baseflow index) over the cells.
    """
    rows = []
    for name in variables:
        if name in ens and "time" not in ens[name].dims:  # a map (SM_max, BFI …): over cells
            rows.append(equifinality(ens[name].load(), dim="cell"))
            continue
        source = "tws" if name == "tws_anomaly" else name
        if source not in ens:
            raise ValueError(f"variables: expected {source!r} in the ensemble store, found "
                             f"{', '.join(sorted(ens.data_vars))}")
        x = ens[source].load()
        if name == "tws_anomaly":
            x = x - x.mean("time")
        rows.append(equifinality(x, dim="time").mean("cell"))
    out = xr.concat(rows, dim=xr.DataArray(list(variables), dims="variable", name="variable"),
                    combine_attrs="drop_conflicts")
    out.attrs["aggregation"] = "per cell over time, mean over cells (sm_max: over cells)"
    return out


def ensemble_spread(ens: xr.Dataset, states: Sequence[str] = STATES) -> xr.Dataset:
    """Fig. 7 on the predicted cells: see :func:`h2mv_hybrid.analysis.spread.state_spread`."""
    return state_spread({k: ens[k].load() for k in states}, space=("cell",))
