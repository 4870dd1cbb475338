"""Skill of every daily output of a pure-learning head against the store it estimates.

The multi-task LSTM (Yan et al. 2026), the CNN-LSTM (Zhang et al. 2025) and the tree
baselines write daily outputs named after what they estimate: ``sm_layer<k>`` is layer k
of the store's ``sm_layers`` and any other name (``et_daily``) is the store variable of
that name. Per output, member and cell over the predicted period: Pearson R, RMSE, R²
(1 − SSE/SST), KGE, and the RMSE on the cell's driest days (observations below the cell's
10th percentile of the period: the drought end, where Yan et al. report the largest gain
of the physics constraint).

:func:`summarize_outputs` gives the median over cells per member, then the mean over
members, overall and by climate zone, one row per output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from h2mv_hybrid.analysis.climate import ZONES, climate_zones
from h2mv_hybrid.analysis.ensemble import predicted_cells
from h2mv_hybrid.analysis.metrics import kge, nse, pearson_r, rmse
from h2mv_hybrid.heads.multitask_lstm import balance_tasks, task_source
from process_layers.layered_balance import balance_residual

SKILL: tuple[str, ...] = ("R", "RMSE", "R2", "KGE", "RMSE_low")
#: Quantile of each cell's observations below which a day counts as dry (RMSE_low).
LOW_QUANTILE = 0.1


def observed(store: xr.Dataset, output: str) -> xr.DataArray:
    """The store's series an output estimates (time, cell), named after the output."""
    name, layer = task_source(output)
    if name not in store:
        raise ValueError(f"{output}: expected {name} in the input store, found none")
    x = store[name]
    if name == "sm_layers":
        x = x.isel(layer=layer - 1).drop_vars(["layer", "depth_top", "depth_bottom"],
                                              errors="ignore")
    return x.rename(output)


def daily_outputs(ens: xr.Dataset, store: xr.Dataset) -> list[str]:
    """The ensemble's daily outputs that have an observed counterpart in the store."""
    out = []
    for k, v in ens.data_vars.items():
        if v.dims[:2] != ("member", "time"):
            continue
        name, _ = task_source(str(k))
        if name in store:
            out.append(str(k))
    return sorted(out, key=lambda k: (task_source(k)[0] != "sm_layers", k))


def output_scores(ens: xr.Dataset, store: xr.Dataset, zones: xr.DataArray | None = None,
                  outputs: list[str] | None = None) -> xr.Dataset:
    """Scores per output, member and cell.

    Args:
        ens: an ensemble store (``h2mv cv`` or a tree baseline) of daily outputs.
        store: its input store.
        zones: :func:`~h2mv_hybrid.analysis.climate.climate_zones` of ``store``, when
            already computed.
        outputs: the outputs scored (default: every one with an observed counterpart).

    Returns:
        Dataset of :data:`SKILL` (output, member, cell) with ``zone``, ``lat``, ``lon``.
    """
    outputs = outputs or daily_outputs(ens, store)
    if not outputs:
        raise ValueError(f"ensemble: expected daily outputs observed in the store, found "
                         f"{list(ens.data_vars)}")
    zones = climate_zones(store) if zones is None else zones
    ens, cells = predicted_cells(ens, store.assign(zone=zones))
    per = []
    for name in outputs:
        pred = ens[name].load().transpose("member", "time", "cell")
        obs = observed(cells, name).sel(time=pred["time"]).load().transpose("time", "cell")
        low = obs.where(obs <= obs.quantile(LOW_QUANTILE, "time").drop_vars("quantile"))
        per.append(xr.Dataset({
            "R": pearson_r(pred, obs), "RMSE": rmse(pred, obs), "R2": nse(pred, obs),
            "KGE": kge(pred, obs), "RMSE_low": rmse(pred, low),
        }).expand_dims(output=[name]))
    out = xr.concat(per, "output")
    return out.assign_coords(zone=("cell", cells["zone"].values), lat=cells["lat"],
                             lon=cells["lon"], member=ens["member"])


def summarize_outputs(scores: xr.Dataset, names: tuple[str, ...] = SKILL
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Median over cells, then mean over members, per output: overall and by zone.

    ``<score>_sd`` is the standard deviation over members of the median over cells (NaN
    for one member): the spread of training folds, against which differences between
    variants are read.
    """
    def rows(sel: xr.Dataset, extra: dict) -> list[dict]:
        per_member = sel[list(names)].median("cell")
        med = per_member.mean("member")
        sd = (per_member.std("member", ddof=1) if sel.sizes["member"] > 1
              else xr.full_like(med, np.nan))
        return [{**extra, "output": str(o), "cells": sel.sizes["cell"],
                 "members": sel.sizes["member"],
                 **{k: float(med[k].sel(output=o)) for k in names},
                 **{f"{k}_sd": float(sd[k].sel(output=o)) for k in names}}
                for o in sel["output"].values]

    overall = rows(scores, {})
    by_zone = []
    for code, zone in enumerate(ZONES):
        sel = scores.where(scores["zone"] == code, drop=True)
        if sel.sizes.get("cell", 0):
            by_zone += rows(sel, {"zone": zone})
    return pd.DataFrame(overall), pd.DataFrame(by_zone)


def balance_closure(ens: xr.Dataset, store: xr.Dataset, runoff: str = "q_surf_daily"
                    ) -> xr.Dataset:
    """Mean |P − ET − R − ΔS| per member and cell (mm day⁻¹) of the outputs and of the store.

    Needs ``et_daily`` and every layer's ``sm_layer<k>`` in ``ens``; ``prediction`` uses
    them, ``observed`` the store's own (not zero: snow and drainage to groundwater are
    outside the formula). Returns an empty Dataset when the outputs do not cover them.

    With the learned residual ε (``wb_residual``, Yan et al. 2026) in ``ens``, also:
    ``residual_closure``, the mean |P − ET − R − ΔS − ε| of the outputs, and
    ``residual_r``, Pearson R between ε and the store's own P − ET − R − ΔS, i.e. whether
    ε, which has no target, tracks the terms the fixed formula leaves out (member, cell).
    """
    n_layers = store.sizes.get("layer", 0)
    if n_layers == 0 or any(k not in ens for k in balance_tasks(n_layers)):
        return xr.Dataset()
    ens, cells = predicted_cells(ens, store)
    time = ens["time"]
    s = cells.sel(time=time)
    thick = torch.as_tensor(1000.0 * (store["depth_bottom"] - store["depth_top"]).values)
    as_t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    p = as_t(s["prec"].transpose("cell", "time").values)
    r = as_t(s[runoff].transpose("cell", "time").values)

    def balance(e: xr.Dataset, theta: np.ndarray) -> torch.Tensor:
        return balance_residual(p, as_t(e["et_daily"].transpose("cell", "time").values), r,
                             as_t(theta), thick)

    b_obs = balance(s, s["sm_layers"].transpose("cell", "time", "layer").values)
    b_obs_da = xr.DataArray(b_obs.numpy(), dims=("cell", "time"))
    pred, closure, corr = [], [], []
    for m in range(ens.sizes["member"]):
        e = ens.isel(member=m)
        theta = np.stack([e[f"sm_layer{k}"].transpose("cell", "time").values
                          for k in range(1, n_layers + 1)], -1)
        b = balance(e, theta)
        pred.append(b.abs().mean(1).numpy())
        if "wb_residual" in ens:
            eps = e["wb_residual"].transpose("cell", "time").values[:, 1:]
            closure.append((b - as_t(eps)).abs().mean(1).numpy())
            corr.append(pearson_r(xr.DataArray(eps, dims=("cell", "time")), b_obs_da).values)
    out = xr.Dataset({"prediction": (("member", "cell"), np.stack(pred)),
                      "observed": ("cell", b_obs.abs().mean(1).numpy())},
                     coords={"member": ens["member"]})
    if closure:
        out["residual_closure"] = (("member", "cell"), np.stack(closure))
        out["residual_r"] = (("member", "cell"), np.stack(corr))
    return out
