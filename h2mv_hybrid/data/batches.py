"""Batches of cells: the periods they span, the order they come in, how they are read.

A batch is a group of cells read over a time window: the whole period of a stage, or,
in training with :class:`TrainWindows`, one random window of the training period
(:class:`RandomWindowSampler`). Cells are grouped by the
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
- ``spinup_days`` (0-d): how many leading days of ``forcing`` are spin-up (or warm-up);
- with random windows, ``state_slot`` (0-d): the cached-state day the warm-up starts from
  (:meth:`TrainWindows.slot_day`); absent from whole-period batches;
- one entry per requested per-cell value (``cell_values``: a target's per-basin standard
  deviation, its observed signatures) [cells];
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
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class TrainWindows:
    """Random training windows of a long daily period, shared by every model.

    The LSTM practice of many short sequences per epoch (Kratzert et al. 2019, HESS 23,
    5089).

    A training batch is ``batch_size`` cells drawn at random over one random window: a
    warm-up of at least ``warmup_days`` run without gradient, then ``days`` scored days.
    The warm-up starts on a *state day* (every ``state_every_days`` days from the start of
    the training spin-up), where a model with storages (the hybrid) starts from the states
    it cached on a continuous run of the whole training period at the start of the epoch;
    a pure LSTM starts from zero states. Validation, test and prediction still run over
    whole periods.

    Args:
        days: L, scored days per window (whole months with a monthly target: rounded up).
        warmup_days: W, the least number of days run without gradient before them.
        batches: windows (batches) per training epoch.
        state_every_days: spacing of the state days, days.
    """

    days: int = 365
    warmup_days: int = 180
    batches: int = 200
    state_every_days: int = 30

    def __post_init__(self):
        for name in ("days", "batches", "state_every_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"windows.{name}: expected ≥ 1, found {getattr(self, name)}")
        if self.warmup_days < 0:
            raise ValueError(f"windows.warmup_days: expected ≥ 0, found {self.warmup_days}")

    def slot_day(self, period: Window, start_day: int) -> tuple[int, int]:
        """``(slot, day)``: the last state day at least ``warmup_days`` before ``start_day``.

        Slot k is the day ``period.first_day + k · state_every_days`` (k ≥ 0); with too
        little forcing before ``start_day`` it is the first day of the spin-up (slot 0).
        """
        slot = max(0, (start_day - self.warmup_days - period.first_day) // self.state_every_days)
        return slot, period.first_day + slot * self.state_every_days

    def n_slots(self, period: Window) -> int:
        """State days in the spin-up and period (the cache size of one cell)."""
        return (period.end_day - 1 - period.first_day) // self.state_every_days + 1


torch.serialization.add_safe_globals([TrainWindows])


def window_starts(period: Window, time: pd.DatetimeIndex, days: int, monthly: bool
                  ) -> np.ndarray:
    """The days a training window may start on.

    Any day of the period that leaves ``days`` days before its end (month starts only
    with a monthly target).
    """
    last = max(period.start_day, period.end_day - days)
    starts = np.arange(period.start_day, last + 1)
    if monthly:
        starts = starts[time[starts].day == 1]
    return starts


def window_at(period: Window, windows: TrainWindows, time: pd.DatetimeIndex,
              months: pd.DatetimeIndex | None, start_day: int, monthly: bool
              ) -> tuple[Window, int]:
    """One training window of ``period`` starting on ``start_day`` and its state slot."""
    end = min(start_day + windows.days, period.end_day)
    if monthly and end < period.end_day:  # whole months: up to the next month start
        nxt = (time[end - 1] + pd.offsets.MonthBegin(1))
        end = min(int(time.get_loc(nxt)) if nxt <= time[-1] else period.end_day,
                  period.end_day)
    slot, first = windows.slot_day(period, start_day)
    days = time[start_day:end]
    codes = np.asarray((days.year - days.year[0]) * 12 + days.month - days.month[0], np.int64)
    start_month = end_month = 0
    if monthly and months is not None:
        start_month = int(months.get_loc(days[0].to_period("M").to_timestamp()))
        end_month = start_month + int(codes.max()) + 1
    return Window(first, start_day, end, start_month, end_month, codes), slot


class RandomWindowSampler(Sampler[tuple[np.ndarray, int]]):
    """Training batches of random cells over random windows: ``(positions, start day)``.

    ``batches`` per epoch; each draws ``batch_size`` distinct cells and one start day
    (from ``starts``) with a generator seeded by (seed, epoch), so that a resumed run
    draws the same windows.
    """

    def __init__(self, n_cells: int, batch_size: int, batches: int, starts: np.ndarray,
                 seed: int):
        self.n_cells, self.batch_size, self.batches = n_cells, batch_size, batches
        self.starts = np.asarray(starts)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw differently for each epoch (called by the training loop)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        rng = np.random.default_rng([self.seed, self.epoch, 31])
        self.epoch += 1
        k = min(self.batch_size, self.n_cells)
        for _ in range(self.batches):
            yield rng.choice(self.n_cells, k, replace=False), int(rng.choice(self.starts))

    def __len__(self) -> int:
        return self.batches


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
                 patch_inputs: Sequence[str] = (),
                 cell_values: dict[str, np.ndarray] | None = None,
                 windows: TrainWindows | None = None, source: str | os.PathLike | None = None):
        self.ds = ds
        #: The metadata files of the store on disk, checked around every read: zarr reads
        #: a chunk file that is gone as fill values, so a store deleted during a fit would
        #: otherwise serve NaN batches without a word.
        self.source = None if source is None else Path(source)
        dirs = [] if self.source is None else [
            self.source, *(self.source / str(v) for v in ds.variables)]
        self._files = [d / name for d in dirs for name in ("zarr.json", ".zgroup", ".zarray")
                       if (d / name).exists()]  # zarr 3, or zarr 2's group and arrays
        self.rows, self.cols = rows, cols
        self.window = window
        self.targets = tuple(targets)
        self.tile = tile
        self.inputs = tuple(inputs)
        self.patch = patch
        self.patch_inputs = tuple(patch_inputs) if patch > 1 else ()
        #: per-cell values in the store's spatial layout, served at the batch's cells
        self.cell_values = dict(cell_values or {})
        self.windows = windows
        self._time = pd.DatetimeIndex(ds.indexes["time"])
        self._months = pd.DatetimeIndex(ds.indexes["month"]) if "month" in ds.indexes else None

    @property
    def monthly(self) -> bool:
        """Whether a target is on the month axis (windows then cover whole months)."""
        return any(time_axis(self.ds, k) == "month" for k in self.targets)

    def starts(self) -> np.ndarray:
        """The days a training window may start on (:func:`window_starts`)."""
        assert self.windows is not None
        return window_starts(self.window, self._time, self.windows.days, self.monthly)

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

    def __getitem__(self, key: np.ndarray | tuple[np.ndarray, int]) -> dict[str, torch.Tensor]:
        """A batch over the stage's period, or over a training window.

        ``dataset[positions]`` reads the period, ``dataset[positions, start_day]`` a
        training window (:class:`TrainWindows`).
        """
        if isinstance(key, tuple):
            positions, start_day = key
            assert self.windows is not None, "windows: expected TrainWindows for a window"
            w, slot = window_at(self.window, self.windows, self._time, self._months,
                                int(start_day), self.monthly)
            batch = self.read(positions, w)
            batch["state_slot"] = torch.tensor(slot)
            return batch
        return self.read(key, self.window)

    def _check_source(self) -> None:
        gone = [f.parent.name if f.parent != self.source else "its root"
                for f in self._files if not f.exists()]
        if gone:
            raise FileNotFoundError(
                f"store: expected {self.source} to stay in place while it is read, found "
                f"{', '.join(gone[:5])}{' …' if len(gone) > 5 else ''} gone (deleted or moved "
                f"during the run); missing chunks would read as NaN, so the run stops here")

    def read(self, positions: np.ndarray, w: Window) -> dict[str, torch.Tensor]:
        """The batch of cells ``positions`` over window ``w``.

        Raises FileNotFoundError if the store's files vanish before or during the read.
        """
        self._check_source()
        batch = self._read(positions, w)
        self._check_source()
        return batch

    def _read(self, positions: np.ndarray, w: Window) -> dict[str, torch.Tensor]:
        positions = np.sort(np.asarray(positions))
        r = self.rows[positions]
        c = None if self.cols is None else self.cols[positions]
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
        for name, values in self.cell_values.items():
            batch[name] = as_t(values.reshape(-1)[index])
        if self.patch_inputs:
            daily = [n for n in self.patch_inputs if n != "static"]
            names = [*daily, "mask", *(["static"] if "static" in self.patch_inputs else [])]
            patches = self._patches(names, slice(w.first_day, w.end_day), r, c)
            mask = patches.pop("mask")
            batch["patch_valid"] = as_t(np.nan_to_num(mask, nan=0.0))
            batch.update({f"{n}_patch": as_t(v) for n, v in patches.items()})
        return batch
