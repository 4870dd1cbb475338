"""How far each predicted cell lies from the cells a model was trained on.

A map predicted by a hybrid is trustworthy where the cells resemble those it learned
from, and less so where it extrapolates. For every member and predicted cell this module
computes an **extrapolation index**:

- the features of a cell are its static features and its climate over the predicted
  period: mean precipitation, air temperature and energy forcing (``rn``, or PET);
- they are standardized by the mean and standard deviation of the member's training cells;
- the distance of a cell is its mean Euclidean distance to its ``k`` nearest training cells
  (a training cell's own zero distance left out);
- the index divides it by the median of that distance over the training cells. An index
  of 1 is as close to the training data as a typical training cell is; cells at 2 or more
  lie in a part of the feature space the member saw little of.

This is the nearest-neighbour "area of applicability" of Meyer and Pebesma (2021, Methods
Ecol. Evol. 12, 1620–1633) without their variable weighting. :func:`skill_by_extrapolation`
then groups each member's per-cell skill by the index: how far the map can be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import Tensor

from h2mv_hybrid.data.folds import member_split

#: Bins of the index in the skill table (the last is open).
BINS = (0.0, 1.0, 1.5, 2.0, 3.0, np.inf)


def cell_features(store: xr.Dataset, time: xr.DataArray | None = None
                  ) -> tuple[np.ndarray, list[str]]:
    """[cells, features] of a store reduced to a ``cell`` dim, and the features' names.

    Static features, then mean precipitation, air temperature and energy forcing over
    ``time`` (default: the whole store).
    """
    climate = store[["prec", "tair", "rn"]]
    if time is not None:
        climate = climate.sel(time=time)
    means = climate.mean("time").compute()
    static = np.asarray(store["static"].transpose("cell", "feature").values, dtype=np.float64)
    names = [f"static {f}" for f in store["feature"].values]
    columns = [static] + [np.asarray(means[v].values, np.float64)[:, None]
                          for v in ("prec", "tair", "rn")]
    return np.concatenate(columns, axis=1), names + ["mean prec", "mean tair", "mean rn"]


def _knn_mean_distance(query: Tensor, ref: Tensor, k: int, exclude_self: bool) -> Tensor:
    out = []
    for start in range(0, len(query), 2048):  # chunks: cells × training cells stays small
        d = torch.cdist(query[start:start + 2048], ref)
        kk = min(k + int(exclude_self), ref.shape[0])
        near = d.topk(kk, largest=False).values
        out.append((near[:, 1:] if exclude_self else near).mean(1))
    return torch.cat(out)


def extrapolation_index(features: np.ndarray, train: np.ndarray, k: int = 5) -> np.ndarray:
    """The index of every cell (see the module doc) for one set of training cells.

    Args:
        features: [cells, features].
        train: [cells] booleans, the training cells (at least 2).
        k: neighbours averaged; with ``k`` or fewer training cells (a few basins), one
            less than their number, since a training cell's own distance is left out.
    """
    train = np.asarray(train, bool)
    if train.sum() < 2:
        raise ValueError(f"train: expected at least 2 training cells, found "
                         f"{int(train.sum())}")
    k = min(k, int(train.sum()) - 1)
    x = torch.as_tensor(features, dtype=torch.float64)
    ref = x[torch.as_tensor(train)]
    mean, std = ref.mean(0), ref.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature adds nothing
    z, zref = (x - mean) / std, (ref - mean) / std
    dist = _knn_mean_distance(z, zref, k, exclude_self=False)
    own = _knn_mean_distance(zref, zref, k, exclude_self=True)
    dist[torch.as_tensor(train)] = own  # a training cell is not its own neighbour
    return (dist / own.median()).numpy()


def ensemble_extrapolation(ens: xr.Dataset, store: xr.Dataset, cells: xr.Dataset,
                           k: int = 5) -> xr.Dataset:
    """The index per member of the predicted cells of an ensemble.

    Args:
        ens: the ensemble store (every cell: its ``fold`` map gives each member's training
            cells; in a temporal split every modelled cell trains every member).
        store: its input store.
        cells: the predicted cells (``predicted_cells`` of both), which the index is for.
        k: neighbours averaged.

    A member trained on a single cell (one basin, in a temporal split) has no index: its
    row is NaN.
    """
    from h2mv_hybrid.analysis.ensemble import cell_positions
    from h2mv_hybrid.data.folds import NOT_MODELLED

    if "fold" not in ens:
        raise ValueError("ensemble: expected its fold map ('fold'), found none")
    if "cell" not in ens.dims:
        ens = ens.stack(cell=("lat", "lon")).reset_index("cell")
        store = store.stack(cell=("lat", "lon")).reset_index("cell")
    modelled = np.flatnonzero(np.asarray(ens["fold"].values) != NOT_MODELLED)
    ens, store = ens.isel(cell=modelled), store.isel(cell=modelled)
    features, names = cell_features(store, ens["time"])
    folds = np.asarray(ens["fold"].values)
    pick = cell_positions(ens, cells)
    if (pick < 0).any():
        raise ValueError("cells: expected predicted cells among the ensemble's modelled "
                         "cells, found others")
    rows = []
    for m in ens["member"].values:
        train = member_split(folds, int(m)).train
        # One training cell (a single basin's fit) gives no distance scale: no index.
        rows.append(extrapolation_index(features, train, k)[pick] if train.sum() >= 2
                    else np.full(len(pick), np.nan))
    out = xr.Dataset({"extrapolation_index": (("member", "cell"), np.stack(rows))},
                     coords={"member": ens["member"].values,
                             **{c: cells[c] for c in ("lat", "lon") if c in cells.coords}})
    out["extrapolation_index"].attrs.update(
        units="1", long_name="extrapolation index: distance to the training cells",
        definition=f"mean distance to the {k} nearest training cells (n − 1 if only n ≤ "
                   f"{k}) in standardized features, over the median of the same among "
                   f"training cells; features: {', '.join(names)}; NaN for a member "
                   f"trained on fewer than 2 cells")
    return out


def skill_by_extrapolation(index: xr.DataArray, skill: xr.DataArray,
                           bins: Sequence[float] = BINS) -> pd.DataFrame:
    """Median skill of member-cells grouped by their extrapolation index.

    Args:
        index: [member, cell] extrapolation index.
        skill: [member, cell] (or [cell], the same for every member) per-cell score.
        bins: edges of the index classes.

    Returns:
        One row per class: ``index`` (the class), ``member_cells``, ``median`` and the
        quartiles of the score.
    """
    skill = skill.broadcast_like(index)
    df = pd.DataFrame({"index": index.values.ravel(), "skill": skill.values.ravel()})
    df = df.dropna()
    labels = [f"{a:g}–{b:g}" if np.isfinite(b) else f"≥ {a:g}" for a, b in
              zip(bins[:-1], bins[1:], strict=True)]
    df["class"] = pd.cut(df["index"], list(bins), labels=labels, right=False)
    table = df.groupby("class", observed=False)["skill"].agg(
        member_cells="size", median="median", q25=lambda s: s.quantile(0.25),
        q75=lambda s: s.quantile(0.75))
    return table.reset_index().rename(columns={"class": "index"})


def ensemble_skill_by_extrapolation(ens: xr.Dataset, store: xr.Dataset, index: xr.Dataset,
                                    constraints=None) -> pd.DataFrame:
    """Per-cell KGE of every constraint (monthly values), grouped by extrapolation index.

    Anomaly constraints (TWS) are scored without KGE's bias ratio, as in
    :func:`~h2mv_hybrid.analysis.ensemble.ensemble_performance`.

    Args:
        ens: the ensemble store reduced by
            :func:`~h2mv_hybrid.analysis.ensemble.predicted_cells`.
        store: the input store reduced the same way.
        index: :func:`ensemble_extrapolation` of them.
        constraints: which outputs are compared with which targets (default: the paper's
            five, those present in the input store).
    """
    from h2mv_hybrid.analysis.metrics import kge
    from h2mv_hybrid.constraints import PAPER_CONSTRAINTS, constraint_series
    from h2mv_hybrid.data.schema import time_axis

    rows = []
    for c in constraints or PAPER_CONSTRAINTS:
        if c.target not in store or c.output not in ens:
            continue
        pred, obs = constraint_series(ens, store, c)
        if time_axis(store, c.target) != "month":  # daily targets scored on monthly means
            pred = pred.where(np.isfinite(obs)).resample(time="MS").mean()
            obs = obs.resample(time="MS").mean()
        # anomalies (TWS) have μ_obs ≈ 0: their KGE leaves the bias ratio out, as in
        # ensemble_performance (Fig. 5)
        score = kge(pred, obs, bias_term=not c.anomaly).compute()
        table = skill_by_extrapolation(index["extrapolation_index"], score)
        table.insert(0, "constraint", c.target)
        rows.append(table)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
