"""Catchment evaluation: per-basin skill of daily runoff, the water balance, emergent patterns.

For point stores of gauged basins (``h2mv import camels``) and the ensemble stores of
``h2mv cv --predict all`` (every basin, every member, over the test period):

- :func:`basin_roles`: what each basin was to each member (``train``, ``val``, ``test``),
  from the ensemble's ``fold`` (member k validates on fold k; fold −1 is the shared test
  fold);
- :func:`doy_climatology`: the day-of-year mean runoff of the training period, the
  benchmark a useful model must beat;
- :func:`skill_groups`: NSE, KGE and KGE′ per basin, for the *temporal test* (basins a member
  trained on, scored on later years; median over those members), the *spatial test*
  (the test fold's basins, never trained on; median over members) and the
  *cross-validated* held-out basins (each basin scored by the one member that left it
  out of training, where it only stopped the training);
- :func:`water_balance`: P − ET − Q − ΔS of the fitted model per basin and member;
- :func:`emergent_patterns`: ET / P, Q / P, the baseflow index and SM_max per basin next
  to the CAMELS attributes that describe the same things, and their correlations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from h2mv_hybrid.analysis.metrics import kge, kge_prime, nse
from h2mv_hybrid.analysis.patterns import baseflow_index, runoff_coefficient
from h2mv_hybrid.atomic import atomic_file
from h2mv_hybrid.data.folds import EVERY_STAGE, TEST_FOLD
from h2mv_hybrid.signatures import baseflow_index as observed_baseflow_index
from process_layers.parameters import names

ROLES = ("train", "val", "test")
#: score groups of :func:`skill_groups` and the roles they come from
GROUPS = {"temporal": "train", "spatial": "test", "cross-validated": "val"}


#: The runoff a gauge sees, by preference: routed, the bucket's, an LSTM head's.
RUNOFF_NAMES = ("q_routed", "q_total", "q")
#: The per-basin forcing corrections an ensemble may hold.
CORRECTION_NAMES = names("forcing")
#: The per-basin share of the groundwater outflow that leaves the basin, where learned.
EXCHANGE_NAMES = names("exchange")


def basin_roles(ens: xr.Dataset) -> xr.DataArray:
    """``train`` / ``val`` / ``test`` for every (member, cell) of an ensemble store.

    A temporal split's basins (fold ``EVERY_STAGE``) were trained on by every member in
    earlier years: ``train``, scored in the *temporal* group.
    """
    fold = ens["fold"].values
    member = ens["member"].values
    out = np.where(fold[None, :] == TEST_FOLD, "test",
                   np.where(fold[None, :] == member[:, None], "val", "train"))
    out = np.where((fold[None, :] < TEST_FOLD) & (fold[None, :] != EVERY_STAGE), "", out)
    return xr.DataArray(out, dims=("member", "cell"), coords={"member": member})


def doy_climatology(q: xr.DataArray, start: str, end: str, days: pd.DatetimeIndex
                    ) -> xr.DataArray:
    """Mean runoff of each day of the year over [start, end], laid over ``days``.

    Args:
        q: observed daily runoff (time, cell), NaN where missing.
        start: first day of the training period.
        end: last day of the training period.
        days: the days to lay it over (the test period).
    """
    train = q.sel(time=slice(start, end))
    # every day of the year, NaN for one the period lacks (day 366 without a leap year)
    clim = train.groupby("time.dayofyear").mean("time").reindex(dayofyear=np.arange(1, 367))
    doy = xr.DataArray(pd.DatetimeIndex(days).day_of_year.to_numpy(), dims="time",
                       coords={"time": days})
    out = clim.sel(dayofyear=doy).drop_vars("dayofyear")
    out.attrs = {"units": q.attrs.get("units", "mm day-1"),
                 "long_name": f"day-of-year climatology of {start} … {end}"}
    return out


def basin_skill(pred: xr.DataArray, obs: xr.DataArray) -> xr.Dataset:
    """NSE, KGE and KGE′ of daily runoff per basin (and member, if ``pred`` has one)."""
    obs = obs.sel(time=pred["time"])
    return xr.Dataset({"nse": nse(pred, obs), "kge": kge(pred, obs),
                       "kge_prime": kge_prime(pred, obs)})


def skill_groups(scores: xr.Dataset, roles: xr.DataArray) -> xr.Dataset:
    """Per-basin scores of each group (:data:`GROUPS`), NaN for basins outside a group.

    ``scores`` has dims (member, cell); each basin's score in a group is the median over
    the members it had that group's role in.
    """
    parts = []
    for role in GROUPS.values():
        parts.append(scores.where(roles == role).median("member"))
    return xr.concat(parts, dim=xr.DataArray(list(GROUPS), dims="group", name="group"))


def ensemble_mean_groups(pred: xr.DataArray, obs: xr.DataArray, roles: xr.DataArray
                         ) -> xr.Dataset:
    """Per-basin scores of the member-mean series, in each group (:data:`GROUPS`).

    A basin belongs to a group only where every member had that role (all of a temporal
    split's basins; a spatial split's test fold): the mean of members that trained on a
    basin is no held-out prediction of it.
    """
    scores = basin_skill(pred.mean("member"), obs).load()
    shared = roles.isel(member=0).where((roles == roles.isel(member=0)).all("member"), "")
    parts = [scores.where(shared == role) for role in GROUPS.values()]
    return xr.concat(parts, dim=xr.DataArray(list(GROUPS), dims="group", name="group"))


def summarize(groups: xr.Dataset) -> pd.DataFrame:
    """Median and quartiles over basins of every score and group (rows: group, score)."""
    rows = []
    for g in groups["group"].values:
        for score in groups.data_vars:
            x = groups[score].sel(group=g).values
            x = x[np.isfinite(x)]
            if len(x) == 0:
                continue
            q25, med, q75 = np.percentile(x, [25, 50, 75])
            rows.append({"group": str(g), "score": score, "basins": len(x), "median": med,
                         "q25": q25, "q75": q75})
    return pd.DataFrame(rows)


def water_balance(ens: xr.Dataset) -> xr.Dataset:
    """P − ET − Q − ΔS of the fitted model per member and basin over the period, mm.

    P = rainfall + snowfall, Q = total runoff (at the outlet, routed, where the model
    routes) and, where the model exports groundwater out of the basin, that export; ΔS the
    change of TWS (snow + soil + groundwater, and the water in transit to the outlet where
    routed) from the first to the last day; fluxes from the second day on, as the first
    day's storage already holds the first day's fluxes. ``relative`` divides the residual
    by ΣP.
    """
    routed = "q_routed" in ens
    storage = ens["tws"] + ens["routing_store"] if routed else ens["tws"]
    # with a groundwater export, the water that leaves the basin underground
    out = _runoff(ens) + ens["q_export"] if "q_export" in ens else _runoff(ens)
    flux = (ens["rainfall"] + ens["snow_acc"] - ens["ET"] - out).isel(
        time=slice(1, None)).sum("time")
    change = storage.isel(time=-1) - storage.isel(time=0)
    prec = (ens["rainfall"] + ens["snow_acc"]).isel(time=slice(1, None)).sum("time")
    residual = (flux - change).load()
    return xr.Dataset({"residual": residual.assign_attrs(units="mm"),
                       "relative": (residual / prec).assign_attrs(units="1"),
                       "prec": prec.assign_attrs(units="mm")})


def emergent_patterns(ens: xr.Dataset, store: xr.Dataset, attrs: xr.Dataset
                      ) -> pd.DataFrame:
    """Per basin: the model's ET/P, Q/P, BFI, SM_max (member means) and CAMELS' own.

    With forcing corrections also the learned precipitation factor c_P and temperature
    offset δ_T (member means), set beside the observed runoff ratio (a basin whose gauge
    sees more water than its forcing brings needs c_P > 1) and CAMELS' snow fraction;
    with elevation bands the spread σ_T of their temperatures, beside CAMELS' mean slope
    and elevation (a basin's relief, which the spread stands for); with a groundwater
    export its learned share f_ex.

    Args:
        ens: hybrid ensemble store (every basin).
        store: the CAMELS store (for P and observed Q over the same days).
        attrs: the store's ``attributes`` group (CAMELS aridity, baseflow_index,
            runoff_ratio …).
    """
    prec = store["prec"].sel(time=ens["time"])
    et, p_sum = ens["ET"].sum("time"), prec.sum("time")
    model = xr.Dataset({
        "et_over_p": et / p_sum,
        "runoff_ratio": runoff_coefficient(ens["q_total"], prec),
        "bfi": baseflow_index(ens["q_base"], ens["q_total"]),
        "ef_et_over_pet": et / store["pet"].sel(time=ens["time"]).sum("time"),
        "sm_max": ens["sm_max"],
        # the per-basin forcing corrections and groundwater export, where learned
        **{k: ens[k] for k in (*CORRECTION_NAMES, *EXCHANGE_NAMES) if k in ens},
    }).mean("member").load()
    q_obs = store["q"].sel(time=ens["time"])
    seen = np.isfinite(q_obs)
    observed_ratio = (q_obs.where(seen).sum("time") / prec.where(seen).sum("time")).load()
    out = pd.DataFrame({
        "gauge_id": [str(g) for g in store["gauge_id"].values],
        "lat": store["lat"].values, "lon": store["lon"].values,
        **{f"model_{k}": model[k].values for k in model.data_vars},
        "observed_runoff_ratio": observed_ratio.values,
        # the Lyne–Hollick BFI of the observed runoff over the same days (signatures.py)
        "observed_bfi": observed_baseflow_index(q_obs.transpose("cell", "time").values),
    })
    for name in ("aridity", "baseflow_index", "runoff_ratio", "frac_snow", "p_mean",
                 "pet_mean", "max_water_content", "soil_depth_pelletier", "root_depth_99",
                 "slope_mean", "elev_mean"):
        if name in attrs:
            out[f"camels_{name}"] = attrs[name].values
    return out


#: pairs of (model column, CAMELS column) that describe the same thing
PAIRS = (("model_bfi", "camels_baseflow_index"),
         ("model_bfi", "observed_bfi"),
         ("model_runoff_ratio", "camels_runoff_ratio"),
         ("model_runoff_ratio", "observed_runoff_ratio"),
         ("model_et_over_p", "camels_aridity"),
         ("model_sm_max", "camels_max_water_content"),
         ("model_sm_max", "camels_root_depth_99"),
         ("model_precip_factor", "observed_runoff_ratio"),
         ("model_gw_export", "camels_runoff_ratio"),
         ("model_temperature_offset", "camels_frac_snow"),
         ("model_temperature_spread", "camels_slope_mean"),
         ("model_temperature_spread", "camels_elev_mean"))


def pattern_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Pearson r and Spearman ρ across basins for each of :data:`PAIRS` present."""
    rows = []
    for a, b in PAIRS:
        if a in table and b in table:
            x = table[[a, b]].dropna()
            rows.append({"model": a, "reference": b, "basins": len(x),
                         "pearson_r": x[a].corr(x[b]),
                         "spearman_rho": x[a].corr(x[b], method="spearman"),
                         "median_abs_error": float((x[a] - x[b]).abs().median())
                         if len(x) else float("nan")})
    return pd.DataFrame(rows)


# -- the report (``h2mv catchments``) ----------------------------------------------------
def _train_period(ens: xr.Dataset) -> tuple[str, str]:
    """The training period of the ensemble's config (``data.train_start/train_end``)."""
    import yaml

    data = (yaml.safe_load(ens.attrs.get("config", "")) or {}).get("data", {})
    for o in yaml.safe_load(ens.attrs.get("config_overrides", "[]")) or []:
        for key in ("train_start", "train_end"):
            if str(o).startswith(f"--data.{key}="):
                data[key] = str(o).split("=", 1)[1]
    if not data.get("train_start") or not data.get("train_end"):
        raise ValueError("ensemble: expected data.train_start and data.train_end in its "
                         "config, found none; pass --train_start and --train_end")
    return str(data["train_start"]), str(data["train_end"])


def _runoff(ens: xr.Dataset) -> xr.DataArray:
    """The runoff a gauge sees: routed where the model routes, else the bucket's."""
    for name in RUNOFF_NAMES:
        if name in ens:
            return ens[name]
    raise ValueError(f"ensemble: expected daily runoff (q_total or q), found "
                     f"{', '.join(map(str, ens.data_vars))}")


#: What the report reads of an ensemble store: runoff, the water balance's terms and the
#: emergent patterns' (those the store has).
REPORT_VARIABLES = ("fold", *RUNOFF_NAMES, "q_base", "q_export", "rainfall", "snow_acc", "ET",
                    "tws", "routing_store", "sm_max", *CORRECTION_NAMES, *EXCHANGE_NAMES)


def _report_variables(ens: xr.Dataset) -> xr.Dataset:
    """The report's variables of an ensemble store, in memory."""
    return ens[[k for k in REPORT_VARIABLES if k in ens]].load()


def catchment_scores(store: xr.Dataset, runs: dict[str, xr.Dataset], clim: xr.DataArray
                     ) -> tuple[xr.Dataset, pd.DataFrame]:
    """Per-basin groups of every run and of the climatology, and their summary table.

    ``clim`` is the DOY climatology over the runs' days (:func:`doy_climatology`).
    """
    first = next(iter(runs.values()))
    roles = {"climatology": basin_roles(first)}
    for name, ens in runs.items():
        # a per-basin calibration (h2mv gr4j: every basin temporal) sits beside any split
        calibrated = bool((ens["fold"].values == EVERY_STAGE).all())
        if not calibrated and not np.array_equal(ens["fold"].values, first["fold"].values):
            raise ValueError(f"{name}: expected the same folds as the other runs, found others")
        roles[name] = basin_roles(ens)
    obs = store["q"]
    tables, groups = [], {}
    members = {}
    for name, ens in runs.items():
        members[name] = _runoff(ens)
        if ens.sizes.get("member", 1) > 1:
            members[f"{name} (ensemble mean)"] = None
    for name, pred in {**members, "climatology": None}.items():
        if name == "climatology":
            g = skill_groups(basin_skill(clim.expand_dims(member=first["member"].values),
                                         obs).load(), roles[name])
        elif pred is None:  # the member-mean series of the run before it
            run = name.removesuffix(" (ensemble mean)")
            g = ensemble_mean_groups(members[run], obs, roles[run])
        else:
            g = skill_groups(basin_skill(pred, obs).load(), roles[name])
        groups[name] = g
        t = summarize(g)
        t.insert(0, "model", name)
        tables.append(t)
    out = xr.concat(list(groups.values()), dim=xr.DataArray(list(groups), dims="model",
                                                              name="model"))
    return out, pd.concat(tables, ignore_index=True)


def plot_hydrographs(store: xr.Dataset, runs: dict[str, xr.Dataset], clim: xr.DataArray,
                     basins: list[int], year: str):
    """Observed and modelled daily runoff of a few basins over one water year."""
    from h2mv_hybrid.analysis.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(len(basins), 1, figsize=(10, 2.4 * len(basins)), sharex=True,
                             squeeze=False)
    period = slice(f"{int(year) - 1}-10-01", f"{year}-09-30")
    for ax, cell in zip(axes[:, 0], basins, strict=True):
        obs = store["q"].isel(cell=cell).sel(time=period)
        ax.plot(obs["time"], obs, color="k", lw=1.2, label="observed")
        ax.plot(obs["time"], clim.isel(cell=cell).sel(time=period), color="0.6", lw=0.8,
                label="DOY climatology")
        for (name, ens), color in zip(runs.items(), ("C0", "C3", "C2", "C1"), strict=False):
            q = _runoff(ens).isel(cell=cell).sel(time=period).mean("member")
            ax.plot(q["time"], q, color=color, lw=0.9, label=f"{name} (member mean)")
        ax.set_ylabel("Q, mm day⁻¹")
        ax.set_title(f"{str(store['gauge_id'].values[cell])} "
                     f"({float(store['lat'][cell]):.1f}° N, {float(store['lon'][cell]):.1f}° E)",
                     fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    return fig


def plot_score_maps(store: xr.Dataset, groups: xr.Dataset, models: list[str],
                    score: str = "nse"):
    """Per-basin scores on a lon/lat map: one panel per model (temporal, else spatial)."""
    from h2mv_hybrid.analysis.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 3.4), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        g = groups[score].sel(model=m)
        x = g.sel(group="temporal").fillna(g.sel(group="spatial")).values
        test = np.isfinite(g.sel(group="spatial").values)
        sc = ax.scatter(store["lon"], store["lat"], c=np.clip(x, -0.5, 1), cmap="RdYlBu",
                        vmin=-0.5, vmax=1, s=45, edgecolors=np.where(test, "k", "none"))
        ax.set_title(f"{m}: {score.upper()} of daily Q, test period", fontsize=9)
        ax.set_xlabel("lon")
        ax.set_ylabel("lat")
    fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.8,
                 label=f"{score.upper()} (black edge: test-fold basin)")
    return fig


def plot_patterns_vs_camels(table: pd.DataFrame):
    """Modelled vs CAMELS baseflow index and runoff ratio, one point per basin."""
    from h2mv_hybrid.analysis.plots import _plt

    plt = _plt()
    pairs = [("model_bfi", "camels_baseflow_index", "baseflow index"),
             ("model_runoff_ratio", "camels_runoff_ratio", "runoff ratio"),
             ("model_et_over_p", "camels_aridity", "ET / P vs aridity (PET / P)")]
    pairs = [p for p in pairs if p[0] in table and p[1] in table]
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 3.6), squeeze=False)
    for ax, (a, b, title) in zip(axes[0], pairs, strict=True):
        ax.scatter(table[b], table[a], s=18)
        r = table[a].corr(table[b])
        if "aridity" not in b:
            lim = [0, max(float(table[[a, b]].max().max()), 1e-3) * 1.05]
            ax.plot(lim, lim, color="0.6", lw=0.8)
        ax.set_xlabel(f"CAMELS {b.removeprefix('camels_')}")
        ax.set_ylabel(f"model {a.removeprefix('model_')}")
        ax.set_title(f"{title} (r = {r:.2f})", fontsize=9)
    fig.tight_layout()
    return fig


def catchment_report(store: str, hybrid: str, out: str, lstm: str | None = None,
                     hybrid_monthly: str | None = None, conceptual: str | None = None,
                     train_start: str | None = None, train_end: str | None = None,
                     hydrograph_year: str = "2005", figures: bool = True) -> str:
    """Scores, water balance and emergent patterns of CAMELS fits (``h2mv catchments``).

    Args:
        store: the catchment store (``h2mv import camels``).
        hybrid: ensemble store of the hybrid (``h2mv cv --predict all``).
        out: folder for the tables (CSV, and report.txt) and figures (PNG).
        lstm: ensemble store of the LSTM head (same folds), if any.
        hybrid_monthly: ensemble store of the hybrid trained on monthly runoff, if any.
        conceptual: GR4J calibrated per basin (``h2mv gr4j``), if any: scored over the
            hybrid's days, every basin in the temporal group.
        train_start: first day of the climatology's period (default: the config's).
        train_end: last day of that period (default: the config's).
        hydrograph_year: water year (October–September) of the hydrograph figure.
        figures: also draw the figures (needs matplotlib, the ``plots`` extra).
    """
    from pathlib import Path

    from h2mv_hybrid.data.store import open_store, open_zarr

    # Everything is read into memory first: a catchment store and the report's variables
    # of its ensembles are small (basins × days), and dask's graphs for the day-of-year
    # groups and the label selections cost minutes and GiB even for one basin.
    ds = open_store(store).load()
    attrs = open_store(store, group="attributes").load()
    paths = {"hybrid": hybrid, "hybrid (monthly loss)": hybrid_monthly, "LSTM": lstm}
    runs = {k: _report_variables(open_zarr(v)) for k, v in paths.items() if v}
    first = runs["hybrid"]
    if "cell" not in first.dims or first.sizes["cell"] != ds.sizes["cell"]:
        raise ValueError(f"hybrid: expected every basin of {store} (h2mv cv --predict all), "
                         f"found dims {dict(first.sizes)}")
    if conceptual:
        gr4j = open_zarr(conceptual)
        days = pd.DatetimeIndex(first["time"].values)
        lacking = days.difference(pd.DatetimeIndex(gr4j["time"].values))
        if gr4j.sizes.get("cell") != ds.sizes["cell"] or len(lacking):
            raise ValueError(f"conceptual: expected every basin of {store} over the hybrid's "
                             f"days {days[0]:%Y-%m-%d} … {days[-1]:%Y-%m-%d}, found "
                             f"{gr4j.sizes.get('cell')} basins and {len(lacking)} of those "
                             f"days missing")
        runs["GR4J"] = _report_variables(gr4j.sel(time=first["time"]))
    default = _train_period(first)
    train = (train_start or default[0], train_end or default[1])
    clim = doy_climatology(ds["q"], *train, pd.DatetimeIndex(first["time"].values))
    groups, table = catchment_scores(ds, runs, clim)
    balance = water_balance(first)
    patterns = emergent_patterns(first, ds, attrs)
    corr = pattern_correlations(patterns)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    per_basin = groups.to_dataframe().reset_index()
    per_basin["gauge_id"] = [str(ds["gauge_id"].values[c]) for c in per_basin["cell"]]
    for name, frame in {"skill": table, "patterns": patterns, "pattern_correlations": corr,
                        "skill_per_basin": per_basin,
                        "water_balance": balance.to_dataframe().reset_index()}.items():
        with atomic_file(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    lines = [f"# Catchment report: {store}", "",
             f"test period {str(first['time'].values[0])[:10]} … "
             f"{str(first['time'].values[-1])[:10]}; climatology of {train[0]} … {train[1]}",
             "", table.round(3).to_string(index=False), "",
             "water balance of the hybrid, P − ET − Q "
             f"{'− groundwater export ' if 'q_export' in first else ''}− ΔS per basin and member: "
             f"max |residual| {float(abs(balance['residual']).max()):.3g} mm, "
             f"max |relative| {float(abs(balance['relative']).max()):.2e} of ΣP", "",
             corr.round(3).to_string(index=False), ""]
    with atomic_file(folder / "report.txt") as tmp:
        tmp.write_text("\n".join(lines))
    if figures:
        from h2mv_hybrid.analysis.plots import save

        score = groups["nse"].sel(model="hybrid", group="temporal").values
        order = [int(i) for i in np.argsort(np.nan_to_num(score, nan=-9))]
        picks = sorted({order[-1], order[len(order) // 2], order[max(len(order) // 5, 0)]})
        save(plot_hydrographs(ds, runs, clim, picks, hydrograph_year),
             folder / "hydrographs.png")
        models = [m for m in ("hybrid", "LSTM", "climatology") if m in groups["model"]]
        save(plot_score_maps(ds, groups, models), folder / "nse_maps.png")
        save(plot_patterns_vs_camels(patterns), folder / "patterns_vs_camels.png")
    print("\n".join(lines))
    return str(folder)
