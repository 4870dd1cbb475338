"""``h2mv identify``: which constraint pins down which process (leave-one-constraint-out).

For a hybrid config, the cross-validated ensemble is trained once with all its constraints
and once without each constraint named in ``drop`` (the same folds, members and seeds,
through ``h2mv cv``). Each ensemble is then scored on the shared test cells:

- **withheld skill**: the KGE (monthly values, median over the test cells, mean over
  members) of every constraint, the withheld one included, against the observations;
- **equifinality** of each latent quantity across members (paper eqs 10–12): SM_max, the
  storages, the fluxes behind the baseflow index and T/ET. If removing a constraint raises
  a latent's equifinality, that constraint was what pinned the latent down;
- **recovery** on a twin (a store with a ``truth`` group): Pearson r across test cells of the
  member-mean SM_max, baseflow index and T/ET against the true ones.

The result is one long table (``<root>/identifiability.csv``: variant, quantity, metric,
value), a pivot printed on screen, and a figure (``identifiability.png``): per latent, the
equifinality of every variant relative to the ensemble with all constraints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

#: Latent quantities whose equifinality is tabulated: maps (SM_max, and the baseflow index
#: and T/ET as ratios of totals over the period) and daily series of the ensemble store.
LATENTS = ("sm_max", "baseflow_index", "transpiration_fraction", "tws", "sm", "gw", "swe",
           "T", "Es", "q_base", "q_surf")
#: The maps whose recovery against a twin's truth is scored.
RECOVERED = ("sm_max", "baseflow_index", "transpiration_fraction")


def _maps(ds):
    """SM_max and the period's baseflow index and T/ET (ratios of totals) of a Dataset."""
    out = {}
    if "sm_max" in ds:
        out["sm_max"] = ds["sm_max"]
    if {"q_base", "q_total"} <= set(ds.data_vars):
        out["baseflow_index"] = ds["q_base"].sum("time") / ds["q_total"].sum("time")
    if {"T", "ET"} <= set(ds.data_vars):
        out["transpiration_fraction"] = ds["T"].sum("time") / ds["ET"].sum("time")
    return out


def _constraints(config: Path, overrides: Sequence[str]) -> list[dict[str, Any]]:
    """The constraints a hybrid config trains on (its own, or the hybrid's defaults)."""
    from dataclasses import asdict

    from h2mv_hybrid.model.module import H2MVHybrid

    cfg = yaml.safe_load(config.read_text()) or {}
    model = cfg.get("model") or {}
    if "H2MVHybrid" not in str(model.get("class_path", "")):
        raise ValueError(f"config: expected the H2MV hybrid (model.class_path …H2MVHybrid), "
                         f"found {model.get('class_path')!r}")
    if any(o.split("=", 1)[0] == "--model.init_args.constraints" for o in overrides):
        raise ValueError("overrides: expected no --model.init_args.constraints (identify "
                         "sets them per variant), found one")
    given = (model.get("init_args") or {}).get("constraints")
    return [asdict(c) for c in H2MVHybrid.declared_constraints(given)]


def _score(store_path: Path, drop: str | None) -> list[dict[str, Any]]:
    from h2mv_hybrid.analysis.ensemble import (
        cell_positions,
        ensemble_equifinality,
        ensemble_performance,
        open_ensemble,
        predicted_cells,
    )
    from h2mv_hybrid.constraints import PAPER_CONSTRAINTS

    ens, source = open_ensemble(store_path)
    e, s = predicted_cells(ens, source)
    variant = "all constraints" if drop is None else f"without {drop}"
    rows = []
    present = [c for c in PAPER_CONSTRAINTS if c.target in s and c.output in e]
    perf = ensemble_performance(e, s, present)
    for c in present:
        kge = float(perf["kge"].sel(constraint=c.target, component="monthly").mean("member"))
        rows.append({"variant": variant, "withheld": drop or "", "quantity": c.target,
                     "metric": "kge (monthly)", "value": kge})
    e = e.assign({k: v for k, v in _maps(e).items() if k != "sm_max"})
    latents = [v for v in LATENTS if v in e]
    eq = ensemble_equifinality(e, latents)
    for v in latents:
        rows.append({"variant": variant, "withheld": drop or "", "quantity": v,
                     "metric": "equifinality", "value": float(eq["total"].sel(variable=v))})
    truth_path = Path(ens.attrs.get("input_store", ""))
    if (truth_path / "truth").exists():
        from h2mv_hybrid.data.store import open_store

        truth = open_store(truth_path, group="truth")
        if "cell" not in truth.dims:
            truth = truth.stack(cell=("lat", "lon")).reset_index("cell")
        truth = truth.isel(cell=cell_positions(truth, e))
        if "time" in truth.dims:
            truth = truth.sel(time=e["time"])
        true_maps = _maps(truth)
        for name in RECOVERED:
            if name in true_maps and name in e:
                learned = e[name].mean("member").values
                true = np.asarray(true_maps[name].values, dtype=float)
                ok = np.isfinite(learned) & np.isfinite(true)
                r = float(np.corrcoef(learned[ok], true[ok])[0, 1]) if ok.sum() > 2 else np.nan
                rows.append({"variant": variant, "withheld": drop or "", "quantity": name,
                             "metric": "recovery r (twin)", "value": r})
    return rows


def identify(config: str | os.PathLike, drop: Sequence[str], folds: int = 10,
             members: Sequence[int] | None = None, root: str | os.PathLike | None = None,
             overrides: Sequence[str] = (), device: str = "auto") -> pd.DataFrame:
    """Train the all-constraints ensemble and one without each of ``drop``; tabulate.

    Args:
        config: a hybrid experiment config (``experiments/<name>.yaml``).
        drop: the constraint targets to withhold, one ensemble each (e.g. tws et q fapar swe).
        folds: K of the spatial-block CV.
        members: which members (default all K); the same for every variant.
        root: where the variants' CV roots go (default ``h2mv_outputs/identify/<config>``).
        overrides: LightningCLI options for every fit.
        device: device of the ensemble predictions.

    Returns:
        The long table, also written to ``<root>/identifiability.csv``.
    """
    from h2mv_hybrid.atomic import write_text
    from h2mv_hybrid.ensemble.cv import cross_validate

    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"config: expected an experiment YAML file, found nothing at "
                                f"{config}")
    overrides = list(overrides)
    declared = _constraints(config, overrides)
    targets = [c["target"] for c in declared]
    drop = list(dict.fromkeys(drop))
    unknown = [d for d in drop if d not in targets]
    if not drop or unknown:
        raise ValueError(f"drop: expected some of the config's constraints ({', '.join(targets)})"
                         f", found {', '.join(unknown) if unknown else 'none'}")
    if len(drop) == len(targets) and len(targets) == 1:
        raise ValueError("drop: expected at least one constraint left to train on")
    root = Path(root) if root is not None else Path("h2mv_outputs/identify") / config.stem
    rows = []
    for withheld in [None, *drop]:
        kept = [c for c in declared if c["target"] != withheld]
        slug = "all" if withheld is None else f"without_{withheld}"
        print(f"\n=== identify: {slug} ({', '.join(c['target'] for c in kept)})")
        extra = [f"--model.init_args.constraints={json.dumps(kept)}"] if withheld else []
        result = cross_validate(config, folds, members, root / slug, [*overrides, *extra],
                                predict="test", device=device,
                                ensemble_of="all" if members is None else "these")
        if result["ensemble"] is None:
            raise RuntimeError(f"{slug}: the ensemble store was not written (members still "
                               f"training elsewhere); run h2mv identify again")
        rows += _score(Path(result["ensemble"]), withheld)
    table = pd.DataFrame(rows)
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / "identifiability.csv", table.to_csv(index=False, float_format="%.4g"))
    pivot = table.pivot_table(index=["metric", "quantity"], columns="variant", values="value",
                              sort=False)
    pivot = pivot[[c for c in ["all constraints", *[f"without {d}" for d in drop]]
                   if c in pivot.columns]]
    print(f"\nidentifiability ({root}): KGE of each constraint on the test cells, "
          f"equifinality of each latent across members (higher: less pinned down)")
    print(pivot.to_string(float_format=lambda v: f"{v:8.3f}"))
    try:
        from h2mv_hybrid.analysis import plots

        path = plots.save(plots.plot_identifiability(table), root / "identifiability.png")
        print(f"figure: {path}")
    except ImportError:  # matplotlib is the plots extra
        pass
    return table
