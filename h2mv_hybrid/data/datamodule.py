"""The LightningDataModule that serves an H2MV store in batches of cells.

The store is opened lazily (xarray + zarr, dask for the statistics) and checked against
the schema before anything is served. Cells are split into training, validation and test
cells by spatial-block folds; normalization statistics come from training cells only.

A batch is a group of cells read over a whole time window. Cells are grouped by the
store's chunk tiles (16 × 16 cells × the whole period); every epoch the tiles are
shuffled (and the cells within each tile) with a seeded local generator, and the
sequence is cut into batches of ``batch_size``. A batch thus spans one to a few tiles,
and each tile's part is read as one bounding box of whole series. Each batch is a dict of tensors:

- ``forcing`` [cells, days, 3]: ``rn`` (W m⁻²), ``prec`` (mm day⁻¹), ``tair`` (K), over the
  spin-up days followed by the period;
- ``static`` [cells, features] in the store's units (the model normalizes with ``stats``);
- one entry per constraint over the period only, on its own axis: monthly ones
  [cells, months], daily ones [cells, period days]; NaN where unobserved;
- one entry per requested input (``inputs``: extra meteorology, layered soil moisture,
  daily land-surface fields) over the same days as ``forcing``: [cells, days] or
  [cells, days, layers];
- ``month_of_day`` [period days]: the month index of each day of the period;
- ``spinup_days`` (0-d): how many leading days of ``forcing`` are spin-up;
- ``lat``, ``lon``, ``cell_index`` [cells]: where the cells are (flat index into the
  store's spatial layout, for writing predictions back);
- with ``patch`` k > 1 (grid stores): ``<name>_patch`` for every name of ``patch_inputs``,
  the k × k neighbourhood centred on each cell ([cells, days, k, k] for daily variables,
  [cells, days, layers, k, k] for ``sm_layers``, [cells, features, k, k] for ``static``),
  NaN beyond the grid's edges and on unmodelled cells, and ``patch_valid`` [cells, k, k]
  (1 where the neighbour is a modelled cell).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset, Sampler

from h2mv_hybrid.data.folds import fold_map, member_split
from h2mv_hybrid.data.schema import (
    FORCING_NAMES,
    StoreError,
    StoreInfo,
    check_store,
    time_axis,
)
from h2mv_hybrid.data.synth import TILE, TwinConfig, open_store, synthesize, write_store

STAGES = ("train", "val", "test", "predict")


@dataclass
class Normalization:
    """Mean and standard deviation of inputs and targets over the training cells.

    ``forcing_*`` [3] (rn, prec, tair), ``static_*`` [features], ``target_*`` per
    constraint (TWS statistics are of anomalies from each cell's mean, as the loss uses).
    Computed from training cells and the training period only; the model keeps them as
    buffers so that prediction reuses them.
    """

    forcing_mean: list[float]
    forcing_std: list[float]
    static_mean: list[float]
    static_std: list[float]
    features: list[str]
    target_mean: dict[str, float] = field(default_factory=dict)
    target_std: dict[str, float] = field(default_factory=dict)
    #: per requested input: mean and std over training cells and period (one per layer)
    input_mean: dict[str, list[float]] = field(default_factory=dict)
    input_std: dict[str, list[float]] = field(default_factory=dict)
    #: thickness of each soil layer of ``sm_layers``, mm (empty without it)
    layer_thickness_mm: list[float] = field(default_factory=list)


# Checkpoints keep the statistics in their hyperparameters; allow them under torch.load's
# default weights_only unpickler (plain data: lists and dicts of floats and strings).
torch.serialization.add_safe_globals([Normalization])


@dataclass(frozen=True)
class Window:
    """A period and the spin-up days before it, as integer positions on the store axes."""

    first_day: int  # first spin-up day
    start_day: int  # first day of the period
    end_day: int  # one past the last day of the period
    start_month: int
    end_month: int
    month_of_day: np.ndarray  # [period days], month index relative to start_month

    @property
    def spinup_days(self) -> int:
        """Number of spin-up days before the period."""
        return self.start_day - self.first_day


def make_window(time: pd.DatetimeIndex, months: pd.DatetimeIndex | None, start: str | None,
                end: str | None, spinup_years: float, what: str) -> Window:
    """Positions of a period [start, end] (whole months) and its spin-up on the store axes."""
    t0 = pd.Timestamp(start) if start else None
    t1 = pd.Timestamp(end) if end else time[-1]
    spin = int(round(spinup_years * 365))
    if t0 is None:
        # default: the period starts on the first month start after the spin-up
        t0 = (time[0] + pd.Timedelta(days=spin) - pd.Timedelta(days=1)).to_period("M")
        t0 = (t0 + 1).to_timestamp()
    if t0.day != 1:
        raise StoreError(f"{what}_start: expected the first day of a month, found {t0.date()}")
    if (t1 + pd.Timedelta(days=1)).day != 1:
        raise StoreError(f"{what}_end: expected the last day of a month, found {t1.date()}")
    if t0 < time[0] or t1 > time[-1] or t1 < t0:
        raise StoreError(
            f"{what} period: expected dates within the store ({time[0].date()} … "
            f"{time[-1].date()}) with start ≤ end, found {t0.date()} … {t1.date()}"
        )
    start_day = int(time.get_loc(t0))
    end_day = int(time.get_loc(t1)) + 1
    if start_day - spin < 0:
        raise StoreError(
            f"{what} spin-up: expected {spin} days before {t0.date()}, found {start_day}; start "
            f"the period later or lower spinup_years"
        )
    period = time[start_day:end_day]
    codes = (period.year - period.year[0]) * 12 + period.month - period.month[0]
    if months is not None:
        start_month = int(months.get_loc(t0))
        end_month = start_month + int(codes.max()) + 1
    else:
        start_month = end_month = 0
    return Window(start_day - spin, start_day, end_day, start_month, end_month,
                  np.asarray(codes, dtype=np.int64))


def tile_keys(rows: np.ndarray, cols: np.ndarray | None, tile: tuple[int, ...]) -> np.ndarray:
    """The chunk tile of every cell: ``tile`` is (cells,) for points, (lat, lon) for grids."""
    if cols is None:
        return rows // tile[0]
    return (rows // tile[0]) * 100_000 + cols // tile[1]


def store_tile(ds: xr.Dataset) -> tuple[int, ...]:
    """Spatial chunk sizes of the store's forcing (what one read should stay within)."""
    spatial = ds["mask"].dims
    chunks = ds["rn"].chunks
    if chunks is None:  # not chunked: tiles of the twin's size
        return (TILE * TILE,) if spatial == ("cell",) else (TILE, TILE)
    sizes = dict(zip(ds["rn"].dims, chunks, strict=True))
    return tuple(int(sizes[d][0]) for d in spatial)


class TileBatchSampler(Sampler[np.ndarray]):
    """Batches of cell positions: tiles in a seeded random order, cut into full batches."""

    def __init__(self, tiles: Sequence[np.ndarray], batch_size: int, shuffle: bool, seed: int):
        self.tiles = [np.asarray(t) for t in tiles if len(t)]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently for each epoch (called by the training loop)."""
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.tiles)) if self.shuffle else range(len(self.tiles))
        cells = np.concatenate(
            [rng.permutation(self.tiles[i]) if self.shuffle else self.tiles[i] for i in order]
        )
        self.epoch += self.shuffle  # a new order next time unless the loop sets the epoch
        return [cells[i:i + self.batch_size] for i in range(0, len(cells), self.batch_size)]

    def __iter__(self) -> Iterator[np.ndarray]:
        # A generator: the order is drawn at the first batch, not when the iterator is
        # made, so a set_epoch() in between (as on resuming from a checkpoint) counts.
        yield from self._batches()

    def __len__(self) -> int:
        return math.ceil(sum(len(t) for t in self.tiles) / self.batch_size)


class CellBatches(Dataset):
    """Map-style dataset whose items are whole batches: ``dataset[positions]``."""

    def __init__(self, ds: xr.Dataset, rows: np.ndarray, cols: np.ndarray | None,
                 window: Window, constraints: Sequence[str], tile: tuple[int, ...],
                 inputs: Sequence[str] = (), patch: int = 1,
                 patch_inputs: Sequence[str] = ()):
        self.ds = ds
        self.rows, self.cols = rows, cols
        self.window = window
        self.constraints = tuple(constraints)
        self.tile = tile
        self.inputs = tuple(inputs)
        self.patch = patch
        self.patch_inputs = tuple(patch_inputs) if patch > 1 else ()

    def __len__(self) -> int:
        return len(self.rows)

    def _block(self, names: Sequence[str], time_slice: slice | None, dim: str | None,
               r: np.ndarray, c: np.ndarray | None) -> dict[str, np.ndarray]:
        """Read every name for the batch's cells: one bounding box per chunk tile."""
        keys = tile_keys(r, c, self.tile)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        order = []
        for key in np.unique(keys):
            i = np.flatnonzero(keys == key)
            rr, cc = r[i], None if c is None else c[i]
            if cc is None:  # points
                sel = {"cell": slice(int(rr.min()), int(rr.max()) + 1)}
            else:
                sel = {"lat": slice(int(rr.min()), int(rr.max()) + 1),
                       "lon": slice(int(cc.min()), int(cc.max()) + 1)}
            if dim is not None:
                sel[dim] = time_slice
            block = self.ds[list(names)].isel(sel)
            for name in names:
                a = block[name].values
                a = a[..., rr - rr.min()] if cc is None else a[..., rr - rr.min(), cc - cc.min()]
                parts[name].append(np.moveaxis(a, -1, 0))  # [cells, ...]
            order.append(i)
        back = np.argsort(np.concatenate(order))
        return {n: np.concatenate(p)[back] for n, p in parts.items()}

    def _patches(self, names: Sequence[str], time_slice: slice | None, r: np.ndarray,
                 c: np.ndarray) -> dict[str, np.ndarray]:
        """The k × k neighbourhood of every cell: one padded bounding box per chunk tile."""
        k, h = self.patch, self.patch // 2
        n_lat, n_lon = self.ds.sizes["lat"], self.ds.sizes["lon"]
        keys = tile_keys(r, c, self.tile)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        order = []
        offsets = np.arange(k)
        for key in np.unique(keys):
            i = np.flatnonzero(keys == key)
            rr, cc = r[i], c[i]
            r0, r1 = int(rr.min()) - h, int(rr.max()) + h + 1  # wanted box, may overhang
            c0, c1 = int(cc.min()) - h, int(cc.max()) + h + 1
            sel = {"lat": slice(max(r0, 0), min(r1, n_lat)),
                   "lon": slice(max(c0, 0), min(c1, n_lon))}
            pad = ((max(-r0, 0), max(r1 - n_lat, 0)), (max(-c0, 0), max(c1 - n_lon, 0)))
            rows = (rr - h - r0)[:, None, None] + offsets[None, :, None]  # [cells, k, 1]
            cols = (cc - h - c0)[:, None, None] + offsets[None, None, :]  # [cells, 1, k]
            for name in names:
                var = self.ds[name].isel(sel if name in ("static", "mask") else
                                         {**sel, "time": time_slice})
                a = var.values.astype(np.float32)
                a = np.pad(a, ((0, 0),) * (a.ndim - 2) + pad, constant_values=np.nan)
                parts[name].append(np.moveaxis(a[..., rows, cols], -3, 0))  # [cells, ..., k, k]
            order.append(i)
        back = np.argsort(np.concatenate(order))
        return {n: np.concatenate(p)[back] for n, p in parts.items()}

    def __getitem__(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        positions = np.sort(np.asarray(positions))
        r = self.rows[positions]
        c = None if self.cols is None else self.cols[positions]
        w = self.window
        f = self._block(FORCING_NAMES, slice(w.first_day, w.end_day), "time", r, c)
        s = self._block(["static"], None, None, r, c)
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
        batch = {
            "forcing": as_t(np.stack([f[k] for k in FORCING_NAMES], axis=-1)),
            "static": as_t(s["static"]),
            "month_of_day": torch.as_tensor(w.month_of_day),
            "spinup_days": torch.tensor(w.spinup_days),
        }
        monthly = [k for k in self.constraints if time_axis(self.ds, k) == "month"]
        daily = [k for k in self.constraints if time_axis(self.ds, k) == "time"]
        if monthly:
            batch.update({k: as_t(v) for k, v in self._block(
                monthly, slice(w.start_month, w.end_month), "month", r, c).items()})
        if daily:
            batch.update({k: as_t(v) for k, v in self._block(
                daily, slice(w.start_day, w.end_day), "time", r, c).items()})
        if self.inputs:
            batch.update({k: as_t(v) for k, v in self._block(
                self.inputs, slice(w.first_day, w.end_day), "time", r, c).items()})
        if c is None:
            lat = self.ds["lat"].values[r]
            lon = self.ds["lon"].values[r]
            index = r
        else:
            lat = self.ds["lat"].values[r]
            lon = self.ds["lon"].values[c]
            index = r * self.ds.sizes["lon"] + c
        batch.update(lat=as_t(lat), lon=as_t(lon), cell_index=torch.as_tensor(index))
        if self.patch_inputs:
            daily = [n for n in self.patch_inputs if n != "static"]
            names = [*daily, "mask", *(["static"] if "static" in self.patch_inputs else [])]
            patches = self._patches(names, slice(w.first_day, w.end_day), r, c)
            mask = patches.pop("mask")
            batch["patch_valid"] = as_t(np.nan_to_num(mask, nan=0.0))
            batch.update({f"{n}_patch": as_t(v) for n, v in patches.items()})
        return batch


class H2MVDataModule(L.LightningDataModule):
    """Serve an H2MV store (grid or points) by batches of cells, with spatial-block CV.

    Args:
        store: path of the zarr store (or anything ``xarray.open_zarr`` opens).
        targets: constraint variables served with every batch (must be in the store);
            default: every constraint the store holds.
        inputs: optional daily variables served with every batch over the forcing's days
            (spin-up included), e.g. the PHY-LSTM heads' extra meteorology (``sw_down``,
            ``lw_down``, ``q_air``, ``psurf``, ``wind``), ``sm_layers`` and the daily
            land-surface fields (``et_daily``, ``q_surf_daily``, ``swe_daily``).
        train_fraction: share of the training cells trained on (data-scarcity
            experiments): a random subset drawn with ``fold_seed`` and ``member``; the
            normalization statistics come from that subset. Validation and test cells
            are unchanged.
        patch: k, the side of the square neighbourhood served around each cell (odd;
            1: none). Grid stores only.
        patch_inputs: variables served as k × k patches (``<name>_patch``): forcing or
            input variables, or ``static``; every name must also be a forcing, an
            input or ``static``.
        n_folds: K, the number of validation folds (ensemble members).
        member: which fold this run validates on (0 … K−1); the test fold is shared.
        block_deg: size of the spatial blocks of the folds, degrees.
        fold_seed: seed of the block-to-fold assignment.
        train_start: first day of the training period (a month start); default: the first
            month start after the spin-up.
        train_end: last day of the training period (a month end); default: the store's end.
        val_start: validation period start; default: the training period.
        val_end: validation period end; default: the training period.
        test_start: test period start; default: the training period.
        test_end: test period end; default: the training period.
        spinup_years: years of forcing before each period used to spin up the states.
        batch_size: cells per batch.
        num_workers: DataLoader worker processes.
        seed: seed of the batch order.
        check_values: scan the store for implausible values before training.
        create_twin: if ``store`` does not exist, write a synthetic twin there first.
        twin_res: grid spacing of that twin, degrees.
        twin_years: period of that twin, 'YYYY-YYYY'.
        twin_seed: seed of that twin.
    """

    def __init__(
        self,
        store: str,
        targets: list[str] | None = None,
        inputs: list[str] | None = None,
        train_fraction: float = 1.0,
        patch: int = 1,
        patch_inputs: list[str] | None = None,
        n_folds: int = 10,
        member: int = 0,
        block_deg: float = 10.0,
        fold_seed: int = 0,
        train_start: str | None = None,
        train_end: str | None = None,
        val_start: str | None = None,
        val_end: str | None = None,
        test_start: str | None = None,
        test_end: str | None = None,
        spinup_years: float = 1.0,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        check_values: bool = True,
        create_twin: bool = False,
        twin_res: float = 2.0,
        twin_years: str = "2001-2010",
        twin_seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: expected ≥ 1 cells, found {batch_size}")
        if not 0 <= member < n_folds:
            raise ValueError(
                f"member: expected 0 … {n_folds - 1} for {n_folds} folds, found {member}"
            )
        if spinup_years < 0:
            raise ValueError(f"spinup_years: expected ≥ 0, found {spinup_years}")
        if not 0 < train_fraction <= 1:
            raise ValueError(f"train_fraction: expected a share in (0, 1], found "
                             f"{train_fraction}")
        if patch < 1 or patch % 2 == 0:
            raise ValueError(f"patch: expected an odd number of cells ≥ 1, found {patch}")
        if patch > 1 and not patch_inputs:
            raise ValueError("patch_inputs: expected the variables to serve as patches "
                             f"(patch is {patch}), found none")
        self.store_path = store
        self.requested_constraints = targets
        self.inputs = tuple(inputs or ())
        self.train_fraction = train_fraction
        self.patch = patch
        self.patch_inputs = tuple(patch_inputs or ()) if patch > 1 else ()
        self.n_folds, self.member = n_folds, member
        self.block_deg, self.fold_seed = block_deg, fold_seed
        self.periods = {
            "train": (train_start, train_end),
            "val": (val_start or train_start, val_end or train_end),
            "test": (test_start or train_start, test_end or train_end),
        }
        self.spinup_years = spinup_years
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.check_values = check_values
        self.twin = TwinConfig(res=twin_res, years=twin_years, seed=twin_seed) \
            if create_twin else None
        self.save_hyperparameters()

    # -- the store, checked once -------------------------------------------------------
    @cached_property
    def dataset(self) -> xr.Dataset:
        """The store, opened lazily (the root group only: never the truth)."""
        path = Path(self.store_path)
        if self.twin is not None and not path.exists():
            write_store(*synthesize(self.twin), path)
        return open_store(path)

    @cached_property
    def reader(self) -> xr.Dataset:
        """The store opened without dask: batches are many small reads, faster this way."""
        return open_store(Path(self.store_path), dask=False)

    @cached_property
    def info(self) -> StoreInfo:
        """Schema check of the store, run before anything is served."""
        info = check_store(self.dataset, constraints=self.requested_constraints,
                           inputs=self.inputs, check_values=self.check_values)
        if self.patch > 1:
            if self.dataset["mask"].dims != ("lat", "lon"):
                raise StoreError(f"patch: expected a grid store (lat, lon) for {self.patch} × "
                                 f"{self.patch} patches, found dims {self.dataset['mask'].dims}")
            known = {*FORCING_NAMES, *self.inputs, "static"}
            unknown = [n for n in self.patch_inputs if n not in known]
            if unknown:
                raise StoreError(
                    f"patch_inputs: expected forcing variables, data.inputs or static, found "
                    f"{', '.join(unknown)}; add them to data.inputs first"
                )
        return info

    @property
    def constraints(self) -> tuple[str, ...]:
        """The constraints served with every batch."""
        if self.requested_constraints is not None:
            return tuple(self.requested_constraints)
        return self.info.constraints

    # -- folds and windows -------------------------------------------------------------
    @cached_property
    def folds(self) -> xr.DataArray:
        """Fold of every cell (see :func:`h2mv_hybrid.data.folds.fold_map`)."""
        _ = self.info
        return fold_map(self.dataset, n_folds=self.n_folds, block_deg=self.block_deg,
                        seed=self.fold_seed)

    def fold_map(self) -> xr.DataArray:
        """The fold map as a DataArray, for plotting."""
        return self.folds

    def cells(self, stage: str) -> np.ndarray:
        """Boolean mask (store layout) of the cells of a stage ('predict': every modelled cell)."""
        if stage not in STAGES:
            raise ValueError(f"stage: expected one of {', '.join(STAGES)}, found {stage!r}")
        if stage == "predict":
            return self.dataset["mask"].values.astype(bool)
        split = member_split(self.folds.values, self.member)
        if stage == "train" and self.train_fraction < 1:
            return self._subset(split.train)
        return {"train": split.train, "val": split.val, "test": split.test}[stage]

    def _subset(self, train: np.ndarray) -> np.ndarray:
        """A seeded random ``train_fraction`` of the training cells (at least one)."""
        idx = np.flatnonzero(train.ravel())
        rng = np.random.default_rng([self.fold_seed, self.member, 7919])
        keep = rng.choice(idx, max(1, int(round(self.train_fraction * len(idx)))),
                          replace=False)
        out = np.zeros(train.size, bool)
        out[keep] = True
        return out.reshape(train.shape)

    def window(self, stage: str) -> Window:
        """The period of a stage and its spin-up, as positions on the store axes."""
        start, end = self.periods["test" if stage == "predict" else stage]
        ds = self.dataset
        months = pd.DatetimeIndex(ds.indexes["month"]) if "month" in ds.indexes else None
        return make_window(pd.DatetimeIndex(ds.indexes["time"]), months, start, end,
                           self.spinup_years, stage)

    # -- statistics from training cells ------------------------------------------------
    @cached_property
    def stats(self) -> Normalization:
        """Normalization statistics from training cells and the training period only."""
        import dask

        ds, train = self.dataset, self.cells("train")
        w = self.window("train")
        where = xr.DataArray(train, dims=ds["mask"].dims)
        lazy = {}
        for k in FORCING_NAMES:
            x = ds[k].isel(time=slice(w.start_day, w.end_day)).where(where)
            lazy[k] = (x.mean(), x.std())
        st = ds["static"].where(where)
        spatial = ds["mask"].dims
        lazy["static"] = (st.mean(spatial), st.std(spatial))
        for k in self.constraints:
            axis = time_axis(ds, k)
            sl = (slice(w.start_month, w.end_month) if axis == "month"
                  else slice(w.start_day, w.end_day))
            x = ds[k].isel({axis: sl}).where(where)
            if k == "tws":
                x = x - x.mean(axis)  # the loss compares anomalies
            lazy[k] = (x.mean(), x.std())
        for k in self.inputs:
            x = ds[k].isel(time=slice(w.start_day, w.end_day)).where(where)
            per = [d for d in x.dims if d != "layer"]
            lazy[f"input:{k}"] = (x.mean(per), x.std(per))
        (computed,) = dask.compute(lazy)
        v = {k: (np.asarray(m.values, float), np.asarray(s.values, float)) for k, (m, s) in
             computed.items()}
        for k in self.inputs:
            mean, std = v[f"input:{k}"]
            if not (np.isfinite(std).all() and (std > 0).all()):
                raise StoreError(
                    f"{k}: expected values varying over training cells in the training "
                    f"period, found {'none' if not np.isfinite(std).all() else 'a constant'}"
                )
        thickness = []
        if "sm_layers" in self.inputs:
            thickness = (1000.0 * (ds["depth_bottom"] - ds["depth_top"])).values.tolist()
        for k in self.constraints:
            if not np.isfinite(v[k][1]) or v[k][1] <= 0:
                raise StoreError(
                    f"{k}: expected observations on training cells in the training period, "
                    f"found {'none' if not np.isfinite(v[k][1]) else 'a constant'}"
                )
        return Normalization(
            forcing_mean=[float(v[k][0]) for k in FORCING_NAMES],
            forcing_std=[float(v[k][1]) for k in FORCING_NAMES],
            static_mean=v["static"][0].tolist(),
            static_std=np.maximum(v["static"][1], 1e-6).tolist(),
            features=[str(f) for f in ds["feature"].values],
            target_mean={k: float(v[k][0]) for k in self.constraints},
            target_std={k: float(v[k][1]) for k in self.constraints},
            input_mean={k: np.atleast_1d(v[f"input:{k}"][0]).tolist() for k in self.inputs},
            input_std={k: np.atleast_1d(v[f"input:{k}"][1]).tolist() for k in self.inputs},
            layer_thickness_mm=[float(x) for x in thickness],
        )

    # -- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Check the store and build the folds (before any training)."""
        _ = self.info, self.folds
        for name in ("train", "val", "test"):
            self.window(name)

    def batches(self, stage: str) -> CellBatches:
        """The dataset of one stage; ``dataset[positions]`` returns a batch."""
        mask = self.cells(stage)
        idx = np.argwhere(mask)
        if idx.shape[0] == 0:
            raise StoreError(f"{stage}: expected at least one cell in this split, found none")
        rows = idx[:, 0]
        cols = idx[:, 1] if idx.shape[1] == 2 else None
        return CellBatches(self.reader, rows, cols, self.window(stage), self.constraints,
                           store_tile(self.dataset), self.inputs, self.patch,
                           self.patch_inputs)

    def tiles(self, data: CellBatches) -> list[np.ndarray]:
        """Positions of a stage's cells grouped by chunk tile (one read each)."""
        key = tile_keys(data.rows, data.cols, data.tile)
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        return np.split(order, bounds)

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        data = self.batches(stage)
        sampler = TileBatchSampler(self.tiles(data), self.batch_size, shuffle, self.seed)
        return DataLoader(data, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("predict", shuffle=False)
