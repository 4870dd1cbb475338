"""``h2mv analyze``: every analysis of an ensemble store, as tables, maps and figures.

Writes into one directory (built under a temporary name and renamed into place):

- ``performance.csv``: constraint × component × metric, min / mean / max over members
  (Fig. 5); ``equifinality.csv``: variable × phase / bias / variance / total (Fig. 8);
  ``state_spread.csv``: each state's time mean per member (Fig. 7b, c);
- ``analysis.zarr``: the same as xarray objects, with the emergent-pattern maps
  (group ``patterns``), the mean seasonal cycles (``msc``) and the state anomalies
  (``spread``);
- ``skill_by_extrapolation.csv``: per-cell KGE of each constraint grouped by the
  extrapolation index (distance to each member's training cells; group
  ``extrapolation`` of ``analysis.zarr`` holds the index per member and cell);
- ``figures/*.png``: performance, msc, equifinality, state_spread, patterns,
  tws_decomposition, sm_max, folds, extrapolation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import xarray as xr

from h2mv_hybrid.analysis import plots
from h2mv_hybrid.analysis.ensemble import (
    ensemble_equifinality,
    ensemble_msc,
    ensemble_patterns,
    ensemble_performance,
    ensemble_spread,
    member_range,
    open_ensemble,
    predicted_cells,
)
from h2mv_hybrid.analysis.extrapolation import (
    ensemble_extrapolation,
    ensemble_skill_by_extrapolation,
)
from h2mv_hybrid.atomic import atomic_directory
from h2mv_hybrid.data.store import consolidate, to_zarr


def performance_table(perf: xr.Dataset) -> pd.DataFrame:
    """Long table: constraint, component, metric, min, mean, max (over members)."""
    stats = member_range(perf)
    rows = []
    for metric in perf.data_vars:
        df = stats[metric].to_dataframe().reset_index()
        df = df.pivot_table(index=["constraint", "component"], columns="stat",
                            values=metric, sort=False).reset_index()
        df.insert(2, "metric", metric)
        rows.append(df[["constraint", "component", "metric", "min", "mean", "max"]])
    return pd.concat(rows, ignore_index=True)


def analyze_ensemble(ensemble: str | os.PathLike, store: str | os.PathLike | None = None,
                     sensitivity: bool = False, device: str = "cpu",
                     batch_size: int = 32) -> dict[str, xr.Dataset]:
    """Every analysis of an ensemble store, as xarray objects (no files written).

    Args:
        ensemble: the ensemble store.
        store: its input store (default: the one it records).
        sensitivity: also the forcing sensitivities (:mod:`~h2mv_hybrid.analysis.sensitivity`)
            of every member, from the checkpoints the store records, over its cells.
        device: where the sensitivities run.
        batch_size: cells per batch of the sensitivities.

    Returns:
        ``performance`` (metric × constraint × component × member), ``msc``,
        ``patterns`` (maps), ``equifinality`` (variable), ``spread`` (Fig. 7),
        ``extrapolation`` and ``skill_by_extrapolation`` where the ensemble has folds,
        ``sensitivity`` if asked.
    """
    ens, source = open_ensemble(ensemble, store)
    e, s = predicted_cells(ens, source)
    results = {
        "performance": ensemble_performance(e, s),
        "msc": ensemble_msc(e, s),
        "patterns": ensemble_patterns(e, s, ens),
        "equifinality": ensemble_equifinality(e),
        "spread": ensemble_spread(e),
        "folds": ens[["fold"]] if "fold" in ens else xr.Dataset(),
    }
    index = None
    if "extrapolation_index" in e:  # stored by the ensemble writer
        index = e[["extrapolation_index"]].compute()
    elif "fold" in ens:  # an ensemble store written before the index was stored
        index = ensemble_extrapolation(ens, source, e)
    if index is not None:
        results["extrapolation"] = index
        results["skill_by_extrapolation"] = ensemble_skill_by_extrapolation(e, s, index)
    if sensitivity:
        results["sensitivity"] = _sensitivity(ens, store, device, batch_size)
    return results


def _sensitivity(ens: xr.Dataset, store: str | os.PathLike | None, device: str,
                 batch_size: int) -> xr.Dataset:
    """The sensitivities of the members an ensemble store was predicted from."""
    import json

    from h2mv_hybrid.analysis.sensitivity import members_sensitivity

    records = json.loads(ens.attrs.get("member_checkpoints", "[]"))
    if not records:
        raise ValueError("ensemble: expected the members' checkpoints in its attributes "
                         "(member_checkpoints), found none; run h2mv sensitivity --ensemble "
                         "ROOT instead")
    missing = [r["checkpoint"] for r in records if not Path(r["checkpoint"]).is_file()]
    if missing:
        raise FileNotFoundError(f"ensemble: expected the members' checkpoints, found nothing "
                                f"at {', '.join(missing)}")
    cells = "all" if ens.attrs.get("predicted_cells") == "all" else "test"
    return members_sensitivity({int(r["member"]): r["checkpoint"] for r in records},
                               store or ens.attrs.get("input_store"), cells, batch_size,
                               device)


def _write(results: dict[str, xr.Dataset], tmp: Path, figures: bool) -> None:
    performance_table(results["performance"]).to_csv(tmp / "performance.csv", index=False,
                                                      float_format="%.4g")
    eq = results["equifinality"]
    eq[["phase", "bias", "variance", "total"]].to_dataframe().to_csv(
        tmp / "equifinality.csv", float_format="%.4g")
    spread = results["spread"]
    means = spread["mean"].to_pandas().T
    means.columns = [f"{c}_mean_mm" for c in means.columns]
    means.to_csv(tmp / "state_spread.csv", float_format="%.4g")
    if "skill_by_extrapolation" in results:
        results["skill_by_extrapolation"].to_csv(tmp / "skill_by_extrapolation.csv",
                                                 index=False, float_format="%.4g")
    if "sensitivity" in results:
        from h2mv_hybrid.analysis.sensitivity import sensitivity_table

        sensitivity_table(results["sensitivity"]).to_csv(tmp / "sensitivity.csv", index=False,
                                                         float_format="%.4g")
    zarr_path = tmp / "analysis.zarr"
    groups = ("performance", "equifinality", "patterns", "msc", "spread", "extrapolation",
              "sensitivity")
    for i, name in enumerate(g for g in groups if g in results):
        ds = results[name].copy()
        ds.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, (int, float, str))}
        to_zarr(ds, zarr_path, group=name, mode="w" if i == 0 else "a")
    consolidate(zarr_path)
    if not figures:
        return
    fig_dir = tmp / "figures"
    maps = results["patterns"]
    plots.save(plots.plot_performance(results["performance"]), fig_dir / "performance.png")
    plots.save(plots.plot_msc(results["msc"]), fig_dir / "msc.png")
    plots.save(plots.plot_equifinality(eq), fig_dir / "equifinality.png")
    plots.save(plots.plot_state_spread(spread), fig_dir / "state_spread.png")
    plots.save(plots.plot_patterns(maps, ["evaporative_fraction", "runoff_coefficient",
                                          "transpiration_fraction", "baseflow_index"]),
               fig_dir / "patterns.png")
    plots.save(plots.plot_tws_decomposition(
        maps[[k for k in maps.data_vars if str(k).startswith("tws_share_")]]),
        fig_dir / "tws_decomposition.png")
    members = maps.attrs.get("members")
    plots.save(plots.plot_patterns(maps, ["sm_max", "sm_max_spread"], title=(
        f"Learned soil capacity SM_max, {members} members" if members else "Learned SM_max")),
        fig_dir / "sm_max.png")
    if "skill_by_extrapolation" in results and len(results["skill_by_extrapolation"]):
        plots.save(plots.plot_extrapolation(results["extrapolation"],
                                            results["skill_by_extrapolation"]),
                   fig_dir / "extrapolation.png")
    if "sensitivity" in results:
        plots.save(plots.plot_sensitivity(results["sensitivity"]), fig_dir / "sensitivity.png")
    if "fold" in results["folds"] and bool((results["folds"]["fold"] >= 0).any()):
        # a temporal split has no folds to draw: every cell is in every stage
        plots.save(plots.plot_folds(results["folds"]["fold"].load()), fig_dir / "folds.png")


def analyze(ensemble: str, out: str | None = None, store: str | None = None,
            figures: bool = True, overwrite: bool = False, sensitivity: bool = False,
            device: str = "cpu", batch_size: int = 32) -> str:
    """Write the metric and equifinality tables, the pattern maps and the figures.

    Args:
        ensemble: the ensemble store written by ``h2mv cv``.
        out: output directory (default: ``analysis`` beside the ensemble store).
        store: the input store (default: the one the ensemble records).
        figures: write the PNG figures.
        overwrite: replace an existing output directory.
        sensitivity: also the forcing sensitivities of every member (one backward pass
            per output and season through each member: minutes per member on a CPU);
            group ``sensitivity`` of ``analysis.zarr``, ``sensitivity.csv``,
            ``figures/sensitivity.png``.
        device: cpu or cuda, for the sensitivities.
        batch_size: cells per batch of the sensitivities.
    """
    t0 = time.perf_counter()
    out_path = Path(out) if out is not None else Path(ensemble).parent / "analysis"
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"out: {out_path} exists; pass --overwrite true to replace it")
    results = analyze_ensemble(ensemble, store, sensitivity, device, batch_size)
    with atomic_directory(out_path) as tmp:
        _write(results, tmp, figures)
    table = performance_table(results["performance"])
    wide = table[table["metric"].isin(["r", "kge"])].pivot_table(
        index=["constraint", "metric"], columns="component", values="mean", sort=False)
    eq = results["equifinality"][["phase", "bias", "variance", "total"]].to_dataframe()
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print("performance on the test cells (median over cells, mean over members):")
        print(wide.to_string())
        print("\nequifinality (mean over member pairs and cells):")
        print(eq.to_string())
    if "sensitivity" in results:
        from h2mv_hybrid.analysis.sensitivity import summary

        print("\n" + summary(results["sensitivity"]))
    print(f"\nanalysis: {out_path} ({time.perf_counter() - t0:.0f} s)")
    return str(out_path)
