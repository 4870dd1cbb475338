"""``h2mv compare``: train several model variants through the CV and tabulate their scores.

A comparison spec (YAML, in ``experiments/``) names the variants, each an experiment
config plus optional overrides, and the CV set-up they share::

    root: h2mv_outputs/phy_lstm/comparison   # one CV root per variant below it
    folds: 10                                 # K of the spatial-block CV
    members: [0, 1, 2]                        # the members trained (default: all K)
    overrides: []                             # LightningCLI arguments for every variant
    variants:
      - {name: LSTM, config: experiments/phy_lstm/lstm.yaml}
      - {name: PHY-LSTM 1:9, config: experiments/phy_lstm/phy_lstm.yaml,
         overrides: [--model.init_args.w_data=0.1, --model.init_args.w_phy=0.9]}

Each variant is an ordinary ``h2mv cv`` root (``<root>/<variant>``): its members are
trained, resumed or skipped as there, and its ensemble store holds the chosen members'
forecasts on the shared test cells. A variant with ``baseline: random_forest`` or
``baseline: xgboost`` is a tree model (:mod:`h2mv_hybrid.ensemble.baselines`) fitted on
the same members' training cells with the data section of its config.

``scores`` picks what is scored:

- ``monotonic`` (default; the PHY-LSTM heads): R, RMSE, R², KGE and the eq. 19
  inconsistencies of the forecast layer (:mod:`h2mv_hybrid.analysis.soil_moisture`);
- ``outputs`` (the multi-task LSTM): R, RMSE, R², KGE and the dry-day RMSE of every daily
  output, and the water-balance closure |P − ET − R − ΔS| where a variant has every layer
  and ET; with a learned residual ε also |P − ET − R − ΔS − ε| and the correlation of ε
  with the store's own P − ET − R − ΔS (:mod:`h2mv_hybrid.analysis.skill`);
- ``richards`` (the CNN-LSTM): the same skill, and the share of Richards-equation
  residuals of the estimated profile above a tolerance
  (:mod:`h2mv_hybrid.analysis.soil_profile`).

The scores of every variant go into ``<root>/comparison.csv`` (overall) and
``<root>/by_zone.csv`` (by climate zone), written atomically, and the table is printed.
With several members, the per-output tables also hold ``<score>_sd``, the spread of the
members' scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from h2mv_hybrid.atomic import atomic_file
from h2mv_hybrid.options import parse_record

Scores = Literal["monotonic", "outputs", "richards"]
Baseline = Literal["random_forest", "xgboost"]
#: Columns of the per-output table: (column, header, format).
OUTPUT_TABLE = (("R", "R", "{:.3f}"), ("RMSE", "RMSE", "{:.4f}"), ("R2", "R²", "{:.3f}"),
                ("KGE", "KGE", "{:.3f}"), ("RMSE_low", "RMSE dry", "{:.4f}"))
#: Columns of the printed table: (column, header, format).
TABLE = (("R", "R", "{:.3f}"), ("RMSE", "RMSE", "{:.4f}"), ("R2", "R²", "{:.3f}"),
         ("KGE", "KGE", "{:.3f}"), ("inconsistency", "incons. ΔW", "{:.1%}"),
         ("inconsistency_deep", "incons. ΔWs", "{:.1%}"),
         ("inconsistency_level", "sign(ΔW)", "{:.1%}"))


@dataclass
class Variant:
    """One row of the comparison: an experiment config and its overrides.

    Args:
        name: the row's name in the tables (its CV root is named after it).
        config: the experiment config (``experiments/…yaml``).
        overrides: LightningCLI arguments of this variant's fits.
        baseline: a tree model fitted instead of the config's model (``random_forest``,
            ``xgboost``), on the same members' training cells.
    """

    name: str
    config: Path
    overrides: list[str] = field(default_factory=list)
    baseline: Baseline | None = None

    @property
    def slug(self) -> str:
        """Directory name of the variant's CV root."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.name).strip("_").lower()


@dataclass
class Spec:
    """A comparison spec (see the module docstring).

    Args:
        variants: the rows of the comparison.
        root: directory of the comparison (default ``h2mv_outputs/compare/<spec name>``).
        folds: K of the spatial-block CV.
        members: the members trained (default: all K).
        overrides: LightningCLI arguments of every variant's fits.
        layer: the scored soil layer (``scores: monotonic``).
        scores: what is scored: ``monotonic``, ``outputs`` or ``richards``.
        richards: settings of the Richards inconsistency (``scores: richards``).
    """

    variants: list[Variant]
    root: Path | None = None
    folds: int = 10
    members: list[int] | None = None
    overrides: list[str] = field(default_factory=list)
    layer: int = 1
    scores: Scores = "monotonic"
    richards: dict[str, Any] = field(default_factory=dict)


def load_spec(path: str | Path) -> Spec:
    """Read and check a comparison spec; errors name the key, the expected and the found."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spec: expected a comparison YAML file, found nothing at {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if isinstance(raw, dict) and "richards" in raw and raw["richards"] is None:
        del raw["richards"]  # an empty ``richards:`` key: the defaults
    spec = parse_record(Spec, raw, str(path))
    if not spec.variants:
        raise ValueError(f"{path}: variants: expected a non-empty list, found none")
    for i, v in enumerate(spec.variants):
        if not v.config.is_file():
            raise FileNotFoundError(f"variants[{i}] ({v.name}): config {v.config} not found")
    slugs = [v.slug for v in spec.variants]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"{path}: variants: expected distinct names, found {slugs}")
    if spec.root is None:
        spec.root = Path(f"h2mv_outputs/compare/{path.stem}")
    return spec


def format_table(overall: pd.DataFrame) -> str:
    """The comparison table as fixed-width text, one row per variant."""
    width = max(len("variant"), *(len(str(v)) for v in overall["variant"]))
    head = f"{'variant':<{width}}" + "".join(f" {h:>11}" for _, h, _ in TABLE)
    lines = [head, "-" * len(head)]
    for _, row in overall.iterrows():
        cells = "".join(f" {fmt.format(row[c]):>11}" for c, _, fmt in TABLE)
        lines.append(f"{row['variant']:<{width}}{cells}")
    ref = overall.iloc[0]
    lines.append(f"{'observed':<{width}}" + f" {'':>11}" * 4 + "".join(
        f" {ref['observed_' + c]:>11.1%}" for c, _, _ in TABLE if c.startswith("incons")))
    return "\n".join(lines)


def format_output_table(overall: pd.DataFrame) -> str:
    """The per-output table as fixed-width text: one row per variant and output."""
    extra = [(c, h, f) for c, h, f in (("balance_mae", "|P−ET−R−ΔS|", "{:.3f}"),
                                        ("residual_mae", "|…−ε|", "{:.3f}"),
                                        ("residual_r", "R(ε,B obs)", "{:.3f}"),
                                        ("inconsistency", "incons.", "{:.1%}"))
             if c in overall]
    columns = (*OUTPUT_TABLE, *extra)
    width = max(len("variant"), *(len(str(v)) for v in overall["variant"]))
    out_w = max(len("output"), *(len(str(v)) for v in overall["output"]))
    head = f"{'variant':<{width}} {'output':<{out_w}}" + "".join(
        f" {h:>11}" for _, h, _ in columns)
    lines = [head, "-" * len(head)]
    for _, row in overall.iterrows():
        cells = "".join(f" {'':>11}" if pd.isna(row[c]) else f" {fmt.format(row[c]):>11}"
                        for c, _, fmt in columns)
        lines.append(f"{row['variant']:<{width}} {row['output']:<{out_w}}{cells}")
    for c, h, fmt in extra:
        ref = overall.get(f"observed_{c}")
        if ref is not None and ref.notna().any():
            lines.append(f"observed {h}: {fmt.format(float(ref.dropna().iloc[0]))}")
    return "\n".join(lines)


def _score(s: Spec, ens, inputs, zones) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score one variant's ensemble store the way the spec asks."""
    if s.scores == "monotonic":
        from h2mv_hybrid.analysis.soil_moisture import soil_moisture_scores, summarize

        return summarize(soil_moisture_scores(ens, inputs, layer=s.layer, zones=zones))
    from h2mv_hybrid.analysis.skill import balance_closure, output_scores, summarize_outputs

    one, by_zone = summarize_outputs(output_scores(ens, inputs, zones))
    if s.scores == "outputs":
        closure = balance_closure(ens, inputs)
        if closure.data_vars:
            one["balance_mae"] = float(closure["prediction"].median("cell").mean())
            one["observed_balance_mae"] = float(closure["observed"].median("cell"))
            if "residual_r" in closure:
                one["residual_mae"] = float(closure["residual_closure"].median("cell").mean())
                one["residual_r"] = float(closure["residual_r"].median("cell").mean())
    else:
        from h2mv_hybrid.analysis.soil_profile import profile_inconsistency

        share = profile_inconsistency(ens, inputs, **s.richards)
        one["inconsistency"] = float(share["prediction"].median("cell").mean())
        one["observed_inconsistency"] = float(share["observed"].median("cell"))
    return one, by_zone


def compare(spec: str | Path, overrides: Sequence[str] = (), device: str = "auto"
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or resume, or skip) every variant's CV members, forecast, score, tabulate.

    The ``h2mv compare`` command; its LightningCLI options (``--trainer.max_epochs=3`` …)
    are ``overrides`` of every variant's fits.

    Args:
        spec: the comparison YAML.
        overrides: extra LightningCLI arguments for every variant (after the spec's own).
        device: device of the ensemble forecasts.

    Returns:
        ``(overall, by_zone)`` tables, also written to ``<root>/comparison.csv`` and
        ``<root>/by_zone.csv``.
    """
    from h2mv_hybrid.analysis.climate import climate_zones
    from h2mv_hybrid.analysis.ensemble import open_ensemble
    from h2mv_hybrid.ensemble.cv import cross_validate
    from h2mv_hybrid.ensemble.store import predict_ensemble

    s = load_spec(spec)
    overall, zones = [], []
    store_zones = {}  # input store → its climate zones (variants usually share one store)
    for v in s.variants:
        vroot = s.root / v.slug
        print(f"\n=== {v.name}: {v.baseline or ''} {v.config} {' '.join(v.overrides)} → "
              f"{vroot}")
        every = [*s.overrides, *v.overrides, *overrides]
        if v.baseline is not None:
            from h2mv_hybrid.ensemble.baselines import fit_baseline

            store = fit_baseline(v.config, v.baseline, s.folds, s.members, vroot, every)
        else:
            cross_validate(v.config, s.folds, s.members, vroot, every, predict="none")
            store = predict_ensemble(vroot, cells="test", device=device, members=s.members)
        ens, inputs = open_ensemble(store)
        key = ens.attrs.get("input_store")
        if key not in store_zones:
            store_zones[key] = climate_zones(inputs)
        one, by_zone = _score(s, ens, inputs, store_zones[key])
        one.insert(0, "variant", v.name)
        by_zone.insert(0, "variant", v.name)
        overall.append(one)
        zones.append(by_zone)
    overall_df = pd.concat(overall, ignore_index=True)
    zone_df = pd.concat(zones, ignore_index=True)
    s.root.mkdir(parents=True, exist_ok=True)
    for name, df in (("comparison.csv", overall_df), ("by_zone.csv", zone_df)):
        with atomic_file(s.root / name) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    members = overall_df["members"].iloc[0]
    if s.scores != "monotonic":
        print(f"\ntest cells ({overall_df['cells'].iloc[0]}), median over cells, mean over "
              f"{members} member(s); RMSE dry: RMSE on each cell's days below its 10th "
              f"percentile")
        print(format_output_table(overall_df))
        print(f"\ntables: {s.root / 'comparison.csv'}, {s.root / 'by_zone.csv'}")
        return overall_df, zone_df
    print(f"\ntest cells ({overall_df['cells'].iloc[0]}), median over cells, mean over "
          f"{members} member(s); inconsistency: share of days whose forecast change "
          f"disagrees in sign with the change of ΔW (eq. 19: ΔW of eq. 10, ΔWs of eq. 11) "
          f"or with ΔW itself (sign(ΔW)); observed = the target's own")
    print(format_table(overall_df))
    print(f"\ntables: {s.root / 'comparison.csv'}, {s.root / 'by_zone.csv'}")
    return overall_df, zone_df
