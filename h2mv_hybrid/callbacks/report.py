"""Say, at the end of a fit or test, where the outputs went and how well the model scores.

Besides each model's own summary (``report_lines``), a model that keeps per-cell daily
skill (``basin_scores``: the hybrid, for every target observed daily, such as gauged
runoff) gets a table of NSE, KGE and KGE′ per basin (per cell), next to the scores of the
day-of-year climatology of the training period, the benchmark a useful model must beat.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from h2mv_hybrid.model.metrics import SKILL_SCORES

#: Cells up to which the skill table lists every one (beyond: median and quartiles).
MAX_ROWS = 50
HEAD = ("NSE", "KGE", "KGE′")


def daily_series(ds: xr.Dataset, name: str, cells: np.ndarray) -> xr.DataArray:
    """A daily store variable at flat cell indices ``cells``: (time, cell)."""
    da = ds[name]
    if "cell" not in da.dims:  # grid: flat index r · n_lon + c, as the batches number cells
        da = da.stack(cell=("lat", "lon")).reset_index("cell", drop=True)
    return da.isel(cell=cells).transpose("time", "cell").load()


def skill_lines(dm, stage: str, scores: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """The per-cell daily skill table of one stage, model against the climatology."""
    from h2mv_hybrid.analysis.catchments import doy_climatology
    from h2mv_hybrid.analysis.metrics import kge, kge_prime, nse

    scorers = {"nse": nse, "kge": kge, "kge_prime": kge_prime}  # SKILL_SCORES, on xarray

    ds = dm.dataset
    time = pd.DatetimeIndex(ds.indexes["time"])
    train, period = dm.window("train"), dm.window(stage)
    days = time[period.start_day:period.end_day]
    first, last = time[train.start_day].date(), time[train.end_day - 1].date()
    lines = []
    for target, s in scores.items():
        cells = np.asarray(s["cell"])
        obs = daily_series(ds, target, cells)
        clim = doy_climatology(obs, str(first), str(last), days)
        o = obs.sel(time=days)
        ref = {k: scorers[k](clim, o).values for k in SKILL_SCORES}
        points = "gauge_id" in ds.coords
        label = (ds["gauge_id"].values[cells].astype(str) if points
                 else np.array([str(c) for c in cells]))
        what = "basin" if points else "cell"
        lines += ["", f"daily {target} per {what}, {stage} period {days[0].date()} … "
                  f"{days[-1].date()}: model | day-of-year climatology of "
                  f"{first} … {last}",
                  f"  {what:<12}" + "".join(f" {h:>8}" for h in HEAD) + " |"
                  + "".join(f" {h:>8}" for h in HEAD)]
        model = np.stack([s[k] for k in SKILL_SCORES], 1)
        bench = np.stack([ref[k] for k in SKILL_SCORES], 1)
        row = lambda name, m, b: (f"  {name:<12}" + "".join(f" {x:>8.2f}" for x in m)  # noqa: E731
                                  + " |" + "".join(f" {x:>8.2f}" for x in b))
        if len(cells) <= MAX_ROWS:
            lines += [row(n, m, b) for n, m, b in zip(label, model, bench, strict=True)]
        for q, name in ((25, "q25"), (50, "median"), (75, "q75")):
            if len(cells) > MAX_ROWS or q == 50:
                lines.append(row(name, np.nanpercentile(model, q, 0),
                                 np.nanpercentile(bench, q, 0)))
    return lines


class FitReport(Callback):
    """Print the checkpoints, logs and store used, and the last validation (or test) scores."""

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:  # noqa: D102
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("val_")}
        if hasattr(pl_module, "report_lines"):  # each head knows its own scores
            lines = ["", *pl_module.report_lines(metrics)]
        else:
            lines = ["", "validation scores:", *(f"  {k:<24} {v:>10.4g}"
                                                 for k, v in sorted(metrics.items()))]
        lines += self._skill(trainer, pl_module, "val")
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        lines.append("")
        if ckpt is not None and ckpt.dirpath:
            lines.append(f"checkpoints: {ckpt.dirpath} (best: {ckpt.best_model_path or '-'})")
        if trainer.logger is not None and trainer.logger.log_dir:
            lines.append(f"logs:        {trainer.logger.log_dir}")
        datamodule = trainer.datamodule
        if datamodule is not None:
            lines.append(f"store:       {datamodule.store_path}")
        print("\n".join(lines))

    @rank_zero_only
    def on_test_end(self, trainer, pl_module) -> None:  # noqa: D102
        lines = self._skill(trainer, pl_module, "test")
        if lines:
            print("\n".join(lines))

    @staticmethod
    def _skill(trainer, pl_module, stage: str) -> list[str]:
        scores = getattr(pl_module, "basin_scores", {}).get(stage)
        if not scores or trainer.datamodule is None:
            return []
        return skill_lines(trainer.datamodule, stage, scores)
