"""Batches of cells: the periods they span, the order they come in, how they are read.

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
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch.utils.data import Dataset, Sampler

from h2mv_hybrid.data.schema import FORCING_NAMES, StoreError, time_axis
from h2mv_hybrid.data.store import tile_keys


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
                 window: Window, targets: Sequence[str], tile: tuple[int, ...],
                 inputs: Sequence[str] = (), patch: int = 1,
                 patch_inputs: Sequence[str] = ()):
        self.ds = ds
        self.rows, self.cols = rows, cols
        self.window = window
        self.targets = tuple(targets)
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
        monthly = [k for k in self.targets if time_axis(self.ds, k) == "month"]
        daily = [k for k in self.targets if time_axis(self.ds, k) == "time"]
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
