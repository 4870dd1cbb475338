"""``h2mv gr4j``: calibrate GR4J per basin on a catchment store's training period.

Each basin's six parameters (:data:`~h2mv_hybrid.conceptual.gr4j.PARAMETERS`) maximize the
NSE of daily runoff over the training days with observations, found by differential
evolution (Storn and Price 1997, scipy's implementation; a global search, as SCE-UA is in
conceptual-model practice) and polished by L-BFGS-B. The simulation runs over the whole
store from its first day, so the training period starts from stores that have run for
as long as the store allows before it.

The output is a zarr store shaped like an ensemble of ``h2mv cv --predict all`` (one
member; every basin in the temporal role, fold ``EVERY_STAGE``), so that ``h2mv
catchments --conceptual`` scores it beside the hybrid and the LSTM over the same days.
It also holds each basin's parameters and training NSE.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xarray as xr

from h2mv_hybrid.conceptual.gr4j import BOUNDS, PARAMETERS, UNITS, runner, simulate
from h2mv_hybrid.data.folds import EVERY_STAGE

#: What the catchment store must hold.
NEEDED = ("prec", "pet", "tair", "q")


def nse_of(sim: np.ndarray, obs: np.ndarray) -> float:
    """NSE over the days with an observation (NaN where fewer than two or no variance)."""
    ok = np.isfinite(obs)
    o, s = obs[ok], sim[ok]
    if len(o) < 2 or not o.var() > 0:
        return float("nan")
    return float(1.0 - np.sum((s - o) ** 2) / np.sum((o - o.mean()) ** 2))


def calibrate_basin(prec: np.ndarray, pet: np.ndarray, tair: np.ndarray, q: np.ndarray,
                    train: np.ndarray, seed: int = 0, maxiter: int = 60, popsize: int = 12
                    ) -> tuple[dict[str, float], float]:
    """The parameters that maximize the training NSE of one basin, and that NSE.

    Args:
        prec: precipitation [T], mm day⁻¹.
        pet: potential evaporation [T], mm day⁻¹.
        tair: air temperature [T], °C.
        q: observed runoff [T], mm day⁻¹, NaN where missing.
        train: bool [T], the training days.
        seed: seed of ``scipy.optimize.differential_evolution``.
        maxiter: its generations.
        popsize: its population per parameter.
    """
    try:
        from scipy.optimize import differential_evolution
    except ImportError as err:
        raise ImportError("h2mv gr4j calibrates with scipy: pip install "
                          "'h2mv-hybrid[baselines]'") from err

    obs = _training_obs(q, train)
    run = runner(prec, pet, tair)

    def loss(x: np.ndarray) -> float:
        return -nse_of(run(x)[0], obs)

    res = differential_evolution(loss, [BOUNDS[n] for n in PARAMETERS], seed=seed,
                                 maxiter=maxiter, popsize=popsize, tol=1e-6, polish=True)
    return dict(zip(PARAMETERS, map(float, res.x), strict=True)), float(-res.fun)


def _training_obs(q: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``q`` on the training days, NaN elsewhere; at least 30 of them observed."""
    obs = np.where(train, q, np.nan)
    if np.isfinite(obs).sum() < 30:
        raise ValueError(f"q: expected at least 30 observed training days, found "
                         f"{int(np.isfinite(obs).sum())}")
    return obs


def _celsius(tair: xr.DataArray) -> np.ndarray:
    units = tair.attrs.get("units", "K")
    return tair.values - 273.15 if units == "K" else tair.values


def calibrate_store(store: xr.Dataset, train_start: str, train_end: str,
                    predict_start: str | None = None, predict_end: str | None = None,
                    seed: int = 0, maxiter: int = 60, popsize: int = 12,
                    log=print) -> xr.Dataset:
    """Calibrate every basin of ``store`` and simulate it: an ensemble-shaped dataset.

    The simulated runoff ``q_total`` covers [predict_start, predict_end] (default: the
    whole store); ``x1`` … ``tt`` and ``nse_train`` are per basin.
    """
    missing = [v for v in NEEDED if v not in store]
    if missing:
        raise ValueError(f"store: expected {', '.join(NEEDED)} (a catchment store of h2mv "
                         f"import camels|basins), found no {', '.join(missing)}")
    time_ = store["time"].values
    train = (time_ >= np.datetime64(train_start)) & (time_ <= np.datetime64(train_end))
    if not train.any():
        raise ValueError(f"train_start, train_end: expected days of the store "
                         f"({str(time_[0])[:10]} … {str(time_[-1])[:10]}), found none in "
                         f"{train_start} … {train_end}")
    keep = slice(predict_start, predict_end)
    n_cells = store.sizes["cell"]
    prec, pet, q = (store[v].transpose("time", "cell").values for v in ("prec", "pet", "q"))
    tair = _celsius(store["tair"].transpose("time", "cell"))
    params = {n: np.full(n_cells, np.nan) for n in PARAMETERS}
    score = np.full(n_cells, np.nan)
    sims = np.full((n_cells, len(time_)), np.nan, dtype=np.float32)
    names = store["gauge_id"].values if "gauge_id" in store.coords else np.arange(n_cells)
    for c in range(n_cells):  # every basin's forcing checked before any calibration
        try:
            runner(prec[:, c], pet[:, c], tair[:, c])
            _training_obs(q[:, c], train)
        except ValueError as err:
            raise ValueError(f"basin {names[c]}: {err}") from err
    for c in range(n_cells):
        t0 = time.perf_counter()
        best, score[c] = calibrate_basin(prec[:, c], pet[:, c], tair[:, c], q[:, c], train,
                                         seed, maxiter, popsize)
        for n in PARAMETERS:
            params[n][c] = best[n]
        sims[c] = simulate(prec[:, c], pet[:, c], tair[:, c], best)
        log(f"  {names[c]}: training NSE {score[c]:.3f} "
            f"({', '.join(f'{n} {best[n]:.3g}' for n in PARAMETERS)}; "
            f"{time.perf_counter() - t0:.1f} s)")
    coords = {k: v for k, v in store.coords.items() if v.dims == ("cell",)}
    out = xr.Dataset(
        {"q_total": (("member", "cell", "time"), sims[None],
                     {"units": "mm day-1", "long_name": "GR4J runoff"}),
         "fold": ("cell", np.full(n_cells, EVERY_STAGE)),
         "nse_train": ("cell", score, {"long_name": "NSE over the training days"}),
         **{n: ("cell", params[n], {"units": UNITS[n]}) for n in PARAMETERS}},
        coords={"member": [0], "time": time_, **coords})
    out = out.sel(time=keep)
    out.attrs = {
        "model": "GR4J (Perrin et al. 2003) with a degree-day snow store",
        "calibration": f"differential evolution (seed {seed}, maxiter {maxiter}, popsize "
                       f"{popsize}), NSE of daily runoff",
        # read by h2mv catchments for the climatology's period, as an ensemble's config
        "config": f"data:\n  train_start: '{train_start}'\n  train_end: '{train_end}'\n",
    }
    return out


def gr4j(store: str, out: str, train_start: str, train_end: str,
         predict_start: str | None = None, predict_end: str | None = None, seed: int = 0,
         maxiter: int = 60, popsize: int = 12, overwrite: bool = False) -> str:
    """Calibrate GR4J per basin of a catchment store and write its runoff (``h2mv gr4j``).

    Args:
        store: the catchment store (``h2mv import camels`` or ``h2mv import basins``).
        out: zarr store to write, atomically (an ensemble's layout, one member).
        train_start: first day of the calibration period.
        train_end: last day of the calibration period.
        predict_start: first day of the written series (default: the store's first).
        predict_end: last day of the written series (default: the store's last).
        seed: seed of the differential evolution.
        maxiter: its generations.
        popsize: its population per parameter.
        overwrite: replace an existing ``out``.
    """
    from h2mv_hybrid.atomic import atomic_directory
    from h2mv_hybrid.data.store import consolidate, open_store, to_zarr

    path = Path(out)
    if path.exists() and not overwrite:
        raise FileExistsError(f"out: {path} exists; pass --overwrite true to replace it")
    ds_in = open_store(store, dask=False)
    t0 = time.perf_counter()
    ds = calibrate_store(ds_in, train_start, train_end, predict_start, predict_end, seed,
                         maxiter, popsize)
    with atomic_directory(path) as tmp:
        to_zarr(ds, tmp, mode="w")
        consolidate(tmp)
    print(f"wrote {path}: {ds.sizes['cell']} basins calibrated on {train_start} … "
          f"{train_end}, median training NSE {float(np.nanmedian(ds['nse_train'])):.3f} "
          f"({time.perf_counter() - t0:.0f} s)")
    return str(path)
