"""Tree baselines of the CNN-LSTM comparison: Random Forest and XGBoost on the same inputs.

Zhang et al. (2025) compare their PGDL-CNN-LSTM with Random Forest and XGBoost estimating
the deeper layers' soil moisture from the same surface soil moisture, meteorology and
terrain. Trees see no sequence, so the inputs' memory is given to them as features of
each (cell, day) (:func:`tabular_features`): the surface layer on the day, its lags and
running means, its mean over the k × k patch, the day's meteorology, running sums of rain
and a running mean of temperature, and the static features.

:func:`fit_baseline` fits one model per CV member on a random sample of the member's
training (cell, day) rows (the DataModule of the experiment config: same store, folds,
periods and ``train_fraction``), saves it (``member_<k>/model.joblib``; a rerun skips
fitted members), estimates the shared test cells over the test period and writes
``<root>/ensemble.zarr`` in the layout of ``h2mv cv``'s ensemble store, atomically, so the
comparison scores both alike. Needs the ``baselines`` extra (scikit-learn, xgboost).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
import yaml
from torch import Tensor

from h2mv_hybrid.atomic import atomic_directory
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.store import consolidate, to_zarr
from h2mv_hybrid.heads.cnn_lstm import CNN_FORCINGS
from h2mv_hybrid.heads.daily_inputs import daily_column

#: Lags (days) and running windows (days) of the surface layer; windows of rain sums.
LAGS: tuple[int, ...] = (1, 2, 3, 7)
WINDOWS: tuple[int, ...] = (7, 30)
#: Days of history the features need before a row can be used.
HISTORY = max(*LAGS, *WINDOWS)
#: Training rows drawn per member (the trees' cost grows with it).
MAX_ROWS = 100_000


def _running_mean(x: Tensor, n: int) -> Tensor:
    """Mean over the last ``n`` days, day included [cells, days] (NaN for the first n − 1)."""
    c = torch.cumsum(torch.nan_to_num(x.double()), 1)
    out = torch.full_like(c, float("nan"))
    out[:, n - 1:] = c[:, n - 1:] - torch.cat([torch.zeros_like(c[:, :1]), c[:, :-n]], 1)
    return (out / n).to(x.dtype)


def _lag(x: Tensor, n: int) -> Tensor:
    out = torch.full_like(x, float("nan"))
    out[:, n:] = x[:, :-n]
    return out


def tabular_features(batch: dict[str, Tensor], features: Sequence[str],
                     surface_layer: int = 1, forcings: Sequence[str] = CNN_FORCINGS
                     ) -> tuple[Tensor, list[str]]:
    """Features of every (cell, day) of a batch [cells, days, F] and their names."""
    s = batch["sm_layers"][..., surface_layer - 1]
    cols, names = [s], ["sm_surface"]
    for n in LAGS:
        cols.append(_lag(s, n))
        names.append(f"sm_surface_lag{n}")
    for n in WINDOWS:
        cols.append(_running_mean(s, n))
        names.append(f"sm_surface_mean{n}")
    if "sm_layers_patch" in batch:
        patch = batch["sm_layers_patch"][:, :, surface_layer - 1]
        cols.append(torch.nanmean(patch.flatten(-2), -1))
        names.append("sm_surface_patch_mean")
    for name in forcings:
        cols.append(daily_column(batch, name))
        names.append(name)
    prec = daily_column(batch, "prec")
    for n in WINDOWS:
        cols.append(n * _running_mean(prec, n))
        names.append(f"prec_sum{n}")
    cols.append(_running_mean(daily_column(batch, "tair"), WINDOWS[-1]))
    names.append(f"tair_mean{WINDOWS[-1]}")
    static = batch["static"][:, None, :].expand(-1, s.shape[1], -1)
    x = torch.cat([torch.stack(cols, -1), static], -1)
    return x, [*names, *features]


def _model(kind: str, seed: int) -> Any:
    if kind == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=60, min_samples_leaf=5, max_features=0.5,
                                     n_jobs=-1, random_state=seed)
    if kind == "xgboost":
        from xgboost import XGBRegressor

        return XGBRegressor(n_estimators=300, max_depth=6, learning_rate=0.1, subsample=0.8,
                            colsample_bytree=0.8, tree_method="hist", random_state=seed,
                            n_jobs=os.cpu_count())
    raise ValueError(f"baseline: expected random_forest or xgboost, found {kind!r}")


def _settings(config: Path, overrides: Sequence[str]) -> tuple[dict, dict]:
    """The config's data and model arguments, with ``--data.*`` / ``--model.*`` overrides."""
    raw = yaml.safe_load(config.read_text()) or {}
    data = dict(raw.get("data") or {})
    model = dict((raw.get("model") or {}).get("init_args") or {})
    for arg in overrides:
        key, _, value = arg.lstrip("-").partition("=")
        if key.startswith("data."):
            data[key[5:]] = yaml.safe_load(value)
        elif key.startswith("model.init_args."):
            model[key[16:]] = yaml.safe_load(value)
    return data, model


def _rows(dm: H2MVDataModule, stage: str, layers: Sequence[int], surface: int,
          forcings: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Features and targets of every (cell, day) of a stage's period, tile by tile.

    Returns ``(x [cells, days, F], y [cells, days, layers], names, positions)``.
    """
    data = dm.batches(stage)
    xs, ys, pos = [], [], []
    for tile in dm.tiles(data):
        batch = data[tile]
        x, names = tabular_features(batch, dm.stats.features, surface, forcings)
        start = int(batch["spinup_days"])
        if start < HISTORY:
            raise ValueError(f"data.spinup_years: expected at least {HISTORY} days before "
                             f"the period for the baselines' features, found {start}")
        xs.append(x[:, start:].numpy())
        ys.append(batch["sm_layers"][:, start:][..., [k - 1 for k in layers]].numpy())
        pos.append(np.sort(tile))
    return np.concatenate(xs), np.concatenate(ys), names, np.concatenate(pos)


def fit_baseline(config: str | os.PathLike, kind: str, folds: int,
                 members: Sequence[int] | None, root: str | os.PathLike,
                 overrides: Sequence[str] = ()) -> Path:
    """Fit (or reuse) one tree model per member, estimate the test cells, write the store.

    Args:
        config: an experiment config whose ``data`` section (and the model's ``layers``,
            ``surface_layer`` and ``forcings``, if given) sets the problem.
        kind: ``random_forest`` or ``xgboost``.
        folds: K of the spatial-block CV.
        members: the members fitted (default: all K).
        root: directory of the members' models and the ensemble store.
        overrides: ``--data.<key>=<value>`` / ``--model.init_args.<key>=<value>`` arguments.

    Returns:
        Path of ``<root>/ensemble.zarr``.
    """
    import joblib

    config, root = Path(config), Path(root)
    data, model = _settings(config, overrides)
    layers = list(model.get("layers") or [2, 3])
    surface = int(model.get("surface_layer", 1))
    forcings = list(model.get("forcings") or CNN_FORCINGS)
    data.update(n_folds=folds, create_twin=False)
    ids = list(range(folds)) if members is None else sorted({int(m) for m in members})
    preds, time, dm = [], None, None
    for m in ids:
        dm = H2MVDataModule(**{**data, "member": m})
        dm.setup()
        path = root / f"member_{m}" / "model.joblib"
        if path.exists():
            fitted = joblib.load(path)
        else:
            x, y, names, _ = _rows(dm, "train", layers, surface, forcings)
            x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
            ok = np.isfinite(y).all(1)
            idx = np.flatnonzero(ok)
            rng = np.random.default_rng(m)
            idx = rng.choice(idx, min(MAX_ROWS, len(idx)), replace=False)
            fitted = _model(kind, m).fit(x[idx], y[idx])
            path.parent.mkdir(parents=True, exist_ok=True)
            joblib.dump(fitted, path)
            (path.parent / "done.json").write_text(json.dumps(
                {"baseline": kind, "rows": len(idx), "features": names, "layers": layers}))
            print(f"member {m}: {kind} fitted on {len(idx)} (cell, day) rows, "
                  f"{len(names)} features")
        x, _, _, pos = _rows(dm, "test", layers, surface, forcings)
        est = fitted.predict(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], len(layers))
        preds.append((pos, est))
        w = dm.window("test")
        time = dm.dataset["time"].values[w.start_day:w.end_day]
    return _write(root / "ensemble.zarr", dm, ids, time, preds, layers, kind, config, overrides)


def _write(out: Path, dm: H2MVDataModule, ids: list[int], time: np.ndarray,
           preds: list[tuple[np.ndarray, np.ndarray]], layers: Sequence[int], kind: str,
           config: Path, overrides: Sequence[str]) -> Path:
    """The members' estimates in the layout of the CV ensemble store (member, time, space)."""
    ds = dm.dataset
    spatial = ds["mask"].dims
    shape = tuple(ds.sizes[d] for d in spatial)
    idx = np.argwhere(dm.cells("test"))
    out_vars = {}
    for i, k in enumerate(layers):
        a = np.full((len(ids), len(time), int(np.prod(shape))), np.nan, np.float32)
        for j, (pos, est) in enumerate(preds):
            flat = np.ravel_multi_index(tuple(idx[pos].T), shape)
            a[j][:, flat] = est[..., i].T
        out_vars[f"sm_layer{k}"] = xr.DataArray(
            a.reshape(len(ids), len(time), *shape), dims=("member", "time", *spatial),
            attrs={"units": "m3 m-3", "long_name": f"estimated volumetric soil moisture, "
                                                   f"layer {k}", "equation": f"{kind} baseline"})
    coords = {"member": np.array(ids), "time": time, **{c: ds[c] for c in ("lat", "lon")}}
    attrs = {"source": f"h2mv compare ({kind} baseline, one model per CV member)",
             "config_file": str(config), "config_overrides": json.dumps(list(overrides)),
             "input_store": str(Path(dm.store_path).resolve()), "n_members": len(ids),
             "predicted_cells": "test"}
    with atomic_directory(out) as tmp:
        to_zarr(xr.Dataset(out_vars, coords=coords, attrs=attrs), tmp, mode="w")
        consolidate(tmp)
    print(f"ensemble store: {out} ({len(ids)} members × {len(idx)} cells × {len(time)} days)")
    return out
