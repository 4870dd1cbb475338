"""Sensitivities of a fitted hybrid to its forcing, by automatic differentiation.

The elasticity of a mean output Ȳ to a forcing X (Schaake 1990; Sankarasubramanian, Vogel
and Limbrunner 2001, Water Resour. Res. 37(6), eq. 1 for streamflow):

    ε_X(Y) = (∂Ȳ / Ȳ) / (∂X / X),

here for a uniform relative change of the whole series, X → (1 + ξ)·X on every day, the
spin-up included, evaluated at ξ = 0: ε = (dȲ/dξ) / Ȳ. It runs through the whole hybrid:
the networks see the changed forcing, so the α, fAPAR and SM_max respond as the fitted model
would, not only the bucket. X is precipitation (``prec``) or the energy forcing (``rn``, a
catchment store's PET). A relative change of kelvins has no meaning, so for air temperature
the sensitivity is to a uniform shift T → T + δ: s = (dȲ/dδ) / Ȳ, in K⁻¹ (a relative change
of the mean per kelvin of warming).

Ȳ is the mean over the period, and over each meteorological season of it (DJF, MAM, JJA,
SON), of runoff (``q_routed`` where the model routes to an outlet, else ``q_total``),
evapotranspiration and terrestrial water storage. Cells are independent, so one backward
pass of the batch's sum gives the derivative of every cell at once: 3 outputs × 5 periods
backward passes per batch, through the per-day loop (the fused kernels treat forcing as
data).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import Tensor

#: Forcings, their kind of change and the unit of the sensitivity.
FORCINGS = {"prec": ("relative", "1"), "rn": ("relative", "1"), "tair": ("shift", "K-1")}
#: Position of each forcing in a batch's ``forcing`` [cells, days, 3].
FORCING_INDEX = {"rn": 0, "prec": 1, "tair": 2}
OUTPUTS = ("q", "ET", "tws")
SEASONS = ("all", "DJF", "MAM", "JJA", "SON")
_SEASON_MONTHS = {"DJF": (12, 1, 2), "MAM": (3, 4, 5), "JJA": (6, 7, 8), "SON": (9, 10, 11)}


def _perturbed(forcing: Tensor, xi: Tensor) -> Tensor:
    """The forcing with ξ [cells, 3] applied: ×(1 + ξ) to rn and prec, +ξ K to tair."""
    parts = [None, None, None]
    for name, k in FORCING_INDEX.items():
        x, shift = forcing[..., k], xi[:, k:k + 1]
        parts[k] = x + shift if FORCINGS[name][0] == "shift" else x * (1.0 + shift)
    return torch.stack(parts, dim=-1)


def season_masks(days: pd.DatetimeIndex) -> Tensor:
    """[5, days] booleans: every day, then the days of DJF, MAM, JJA and SON."""
    month = np.asarray(days.month)
    rows = [np.ones(len(days), bool)] + [np.isin(month, m) for m in _SEASON_MONTHS.values()]
    return torch.as_tensor(np.stack(rows))


def _run(module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The daily outputs of a batch's period, differentiable through the spin-up too.

    Training detaches the spin-up (§2.3.3), but a change of the whole climate moves the
    initial storages as well: the hybrid's spin-up cycles are run here with gradient.
    Another head runs as it predicts.
    """
    net, cycles = getattr(module, "model", None), None
    if net is not None and hasattr(net, "spinup_state"):
        cycles = module.hparams.get("spinup_cycles", 1)
    if cycles is None:
        return module(batch, "predict").daily
    forcing, static = batch["forcing"], batch["static"]
    days = int(batch["spinup_days"])
    carry, history = None, None
    for _ in range(cycles if days else 0):
        out = net(forcing[:, :days], static, carry, history)
        carry, history = out.carry, out.history
    return net(forcing[:, days:], static, carry, history).daily


def batch_sensitivity(module, batch: dict[str, Tensor], days: pd.DatetimeIndex
                      ) -> tuple[Tensor, Tensor]:
    """Sensitivities of one batch of cells, and the means they are relative to.

    Args:
        module: a fitted :class:`h2mv_hybrid.model.module.H2MVHybrid` (any head whose
            ``module(batch, "predict")`` returns ``daily`` outputs named in :data:`OUTPUTS`).
        batch: a DataModule batch (spin-up days first, ``spinup_days`` says how many).
        days: the dates of the batch's period (after the spin-up).

    Returns:
        ``sens`` [cells, outputs, seasons, forcings] (dimensionless elasticities for rn and
        prec, K⁻¹ for tair) and ``mean`` [cells, outputs, seasons] (mm day⁻¹; mm for TWS).
    """
    forcing = batch["forcing"]
    xi = torch.zeros(forcing.shape[0], 3, dtype=forcing.dtype, device=forcing.device,
                     requires_grad=True)
    with torch.enable_grad():
        daily = _run(module, {**batch, "forcing": _perturbed(forcing, xi)})
        q = daily["q_routed"] if "q_routed" in daily else daily["q_total"]
        series = {"q": q, "ET": daily["ET"], "tws": daily["tws"]}
        masks = season_masks(days).to(q.device)
        n_cells = forcing.shape[0]
        sens = torch.full((n_cells, len(OUTPUTS), len(SEASONS), 3), float("nan"),
                          dtype=torch.float64)
        mean = torch.full((n_cells, len(OUTPUTS), len(SEASONS)), float("nan"),
                          dtype=torch.float64)
        order = [FORCING_INDEX[f] for f in FORCINGS]
        pairs = [(i, j) for i in range(len(OUTPUTS)) for j in range(len(SEASONS))
                 if bool(masks[j].any())]
        for n, (i, j) in enumerate(pairs):
            y = series[OUTPUTS[i]][:, masks[j]].mean(1)  # [cells]
            (grad,) = torch.autograd.grad(y.sum(), xi, retain_graph=n < len(pairs) - 1)
            y = y.detach().double()
            mean[:, i, j] = y.cpu()
            sens[:, i, j] = (grad.double()[:, order] / y[:, None]).cpu()
    return sens, mean


def sensitivity(checkpoint: str | os.PathLike, store: str | os.PathLike | None = None,
                cells: str = "test", batch_size: int = 32, device: str = "cpu",
                max_cells: int | None = None) -> xr.Dataset:
    """Forcing sensitivities of a fitted hybrid over a stage's cells and period.

    Args:
        checkpoint: a checkpoint of ``h2mv fit`` (or a CV member's).
        store: the input store (default: the one the checkpoint was trained on).
        cells: ``test`` (the test cells and period), ``val`` or ``all`` (every modelled
            cell over the test period, as ``h2mv predict``).
        batch_size: cells per batch (memory grows with cells × days: the per-day loop keeps
            every day of the spin-up and the period for the backward passes).
        device: ``cpu`` or ``cuda``.
        max_cells: only the first cells (a quick look at a large store).

    Returns:
        A Dataset over the store's cells (``cell``, or ``lat``/``lon``) and ``season``
        (all, DJF, MAM, JJA, SON): ``<output>_<forcing>`` for output in q, ET, tws and
        forcing in prec, rn, tair (see the module doc for units), and ``<output>_mean``.
    """
    from h2mv_hybrid.ensemble.store import (
        _datamodule_settings,
        datamodule_from_settings,
        load_member,
    )

    stage = {"test": "test", "val": "val", "all": "predict"}.get(cells)
    if stage is None:
        raise ValueError(f"cells: expected test, val or all, found {cells!r}")
    dev = torch.device(device)
    module = load_member(checkpoint, dev)
    dm = datamodule_from_settings(_datamodule_settings(str(checkpoint)), batch_size=batch_size,
                                  **({} if store is None else {"store": str(store)}))
    dm.setup(stage)
    window = dm.window(stage)
    ds = dm.dataset
    days = pd.DatetimeIndex(ds.indexes["time"][window.start_day:window.end_day])
    data = dm.batches(stage)
    positions = np.arange(len(data))[:max_cells]
    results, means, index = [], [], []
    for start in range(0, len(positions), batch_size):
        batch = data[positions[start:start + batch_size]]
        batch = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in batch.items()}
        sens, mean = batch_sensitivity(module, batch, days)
        results.append(sens.numpy())
        means.append(mean.numpy())
        index.append(batch["cell_index"].cpu().numpy())
    return _dataset(np.concatenate(results), np.concatenate(means), np.concatenate(index),
                    ds, days, checkpoint)


def _dataset(sens: np.ndarray, mean: np.ndarray, index: np.ndarray, ds: xr.Dataset,
             days: pd.DatetimeIndex, checkpoint) -> xr.Dataset:
    spatial = ds["mask"].dims
    shape = tuple(ds.sizes[d] for d in spatial)
    size = int(np.prod(shape))

    def place(values: np.ndarray) -> np.ndarray:  # [cells, seasons] → [*spatial, seasons]
        full = np.full((size, values.shape[1]), np.nan, np.float32)
        full[index] = values
        return full.reshape(*shape, values.shape[1])

    dims = (*spatial, "season")
    out = {}
    for i, y in enumerate(OUTPUTS):
        for k, (x, (kind, unit)) in enumerate(FORCINGS.items()):
            what = "elasticity" if kind == "relative" else "sensitivity"
            change = f"(1 + ξ)·{x}" if kind == "relative" else f"{x} + δ"
            out[f"{y}_{x}"] = xr.Variable(dims, place(sens[:, i, :, k]), {
                "units": unit, "long_name": f"{what} of mean {y} to {x}",
                "definition": f"(dȲ/Ȳ) per unit of ξ (or δ in K) for {change} on every day, "
                              f"through the whole hybrid; Sankarasubramanian et al. (2001)"})
        out[f"{y}_mean"] = xr.Variable(dims, place(mean[:, i]), {
            "units": "mm" if y == "tws" else "mm day-1", "long_name": f"mean {y}"})
    coords = {c: ds[c] for c in ("lat", "lon") if c in ds.coords}
    coords["season"] = list(SEASONS)
    result = xr.Dataset(out, coords=coords)
    result.attrs.update(period=f"{days[0]:%Y-%m-%d} … {days[-1]:%Y-%m-%d}",
                        checkpoint=str(checkpoint), cells=int(len(index)))
    return result


def sensitivity_table(result: xr.Dataset) -> pd.DataFrame:
    """Each sensitivity's median and quartiles over the cells (and members), as a table.

    Columns: output, forcing, season, unit, cells, median, q25, q75.
    """
    spatial = [d for d in result.dims if d != "season"]
    rows = []
    for y in OUTPUTS:
        for x, (_, unit) in FORCINGS.items():
            for season in result["season"].values:
                v = result[f"{y}_{x}"].sel(season=season).stack(c=spatial).dropna("c").values
                q = np.quantile(v, [0.5, 0.25, 0.75]) if v.size else [np.nan] * 3
                rows.append({"output": y, "forcing": x, "season": str(season), "unit": unit,
                             "cells": int(v.size), "median": q[0], "q25": q[1], "q75": q[2]})
    return pd.DataFrame(rows)


def summary(result: xr.Dataset, outputs: Sequence[str] = OUTPUTS) -> str:
    """Median [quartiles] over cells of each sensitivity, whole period, as a text table."""
    spatial = [d for d in result.dims if d != "season"]  # cells, and members if any
    lines = [f"forcing sensitivities, {result.attrs.get('period', '')}, "
             f"{result.attrs.get('cells', '?')} cells: median [q25, q75] over cells",
             f"  {'output':<6} {'to prec (1)':>22} {'to rn (1)':>22} {'to tair (K-1)':>22}"]
    for y in outputs:
        cols = []
        for x in FORCINGS:
            v = result[f"{y}_{x}"].sel(season="all").stack(c=spatial).dropna("c").values
            cols.append(f"{np.median(v):6.2f} [{np.quantile(v, 0.25):5.2f},"
                        f" {np.quantile(v, 0.75):5.2f}]" if v.size else "–")
        lines.append(f"  {y:<6} " + " ".join(f"{c:>22}" for c in cols))
    return "\n".join(lines)


def ensemble_sensitivity(root: str | os.PathLike, store: str | os.PathLike | None = None,
                         cells: str = "test", batch_size: int = 32, device: str = "cpu",
                         max_cells: int | None = None) -> xr.Dataset:
    """:func:`sensitivity` of every finished member of an ``h2mv cv`` root, along ``member``.

    Each member runs from its best checkpoint (``member_<k>/done.json``); in a spatial CV
    the test cells are the same for every member.
    """
    from pathlib import Path

    from h2mv_hybrid.atomic import read_json

    root = Path(root)
    done = sorted(root.glob("member_*/done.json"), key=lambda p: int(p.parent.name[7:]))
    if not done:
        raise FileNotFoundError(f"ensemble: expected finished members (member_<k>/done.json) "
                                f"under {root}, found none")
    checkpoints = {int(info["member"]): info["best_checkpoint"]
                   for info in map(read_json, done)}
    out = members_sensitivity(checkpoints, store, cells, batch_size, device, max_cells)
    out.attrs.update(root=str(root))
    return out


def members_sensitivity(checkpoints: dict[int, str], store: str | os.PathLike | None = None,
                        cells: str = "test", batch_size: int = 32, device: str = "cpu",
                        max_cells: int | None = None) -> xr.Dataset:
    """:func:`sensitivity` of each member's checkpoint ({member: path}), along ``member``."""
    parts = [sensitivity(path, store, cells, batch_size, device, max_cells)
             for path in checkpoints.values()]
    out = xr.concat(parts, dim=xr.DataArray(list(checkpoints), dims="member", name="member"),
                    combine_attrs="drop_conflicts")
    out.attrs.update(members=len(checkpoints))
    return out


def main(checkpoint: str | None = None, store: str | None = None, cells: str = "test",
         batch_size: int = 32, device: str = "cpu", max_cells: int | None = None,
         out: str | None = None, root: str = ".", ensemble: str | None = None,
         figure: str | None = None) -> xr.Dataset:
    """``h2mv sensitivity``: elasticities of runoff, ET and TWS to P, Rn and T of a fit.

    Args:
        checkpoint: the fitted model: a path, or ``best`` / ``last`` (the latest fit's
            under ``root``).
        store: the input store (default: the checkpoint's).
        cells: test, val or all.
        batch_size: cells per batch.
        device: cpu or cuda.
        max_cells: only the first cells.
        out: write the Dataset to this zarr store (atomically; replaces it).
        root: where ``best`` and ``last`` are looked for (``trainer.default_root_dir``).
        ensemble: an ``h2mv cv`` root instead of a checkpoint: every finished member, along
            a ``member`` dimension.
        figure: write maps of runoff's sensitivities (member mean) to this PNG.
    """
    from h2mv_hybrid.data.store import write_store

    if (checkpoint is None) == (ensemble is None):
        raise ValueError("checkpoint: expected a checkpoint or an --ensemble root, found "
                         + ("both" if checkpoint else "neither"))
    if ensemble is not None:
        result = ensemble_sensitivity(ensemble, store, cells, batch_size, device, max_cells)
    else:
        if checkpoint in ("best", "last"):
            from h2mv_hybrid.lightning_cli import find_checkpoint

            checkpoint = str(find_checkpoint(checkpoint, root))
        elif not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint: expected a checkpoint file, found nothing at "
                                    f"{checkpoint}")
        result = sensitivity(checkpoint, store, cells, batch_size, device, max_cells)
    print(summary(result))
    if out is not None:
        write_store(result, None, out, overwrite=True)
        print(f"sensitivities: {out}")
    if figure is not None:
        from h2mv_hybrid.analysis import plots

        print(f"figure: {plots.save(plots.plot_sensitivity(result), figure)}")
    return result
