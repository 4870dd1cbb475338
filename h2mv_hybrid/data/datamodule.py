"""The LightningDataModule that serves an H2MV store in batches of cells.

The store is opened lazily (xarray + zarr, dask for the statistics) and checked against
the schema before anything is served. Cells are split into training, validation and test
cells by spatial-block folds; normalization statistics come from training cells only.

Batches (:mod:`h2mv_hybrid.data.batches`) are groups of cells read over a whole period,
or in training over random windows (``windows``: many short sequences per epoch for long
daily series).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch.utils.data import DataLoader

from h2mv_hybrid.constraints import Constraint, as_constraints, default_constraints
from h2mv_hybrid.data.batches import (
    CellBatches,
    RandomWindowSampler,
    TileBatchSampler,
    TrainWindows,
    Window,
    make_window,
)
from h2mv_hybrid.data.folds import fold_map, member_split, temporal_fold_map
from h2mv_hybrid.data.schema import (
    FORCING_NAMES,
    StoreError,
    StoreInfo,
    check_store,
    time_axis,
)
from h2mv_hybrid.data.store import open_store, store_tile, tile_keys, write_store
from h2mv_hybrid.data.synth import TwinConfig, parse_years, synthesize
from h2mv_hybrid.options import check_choice
from h2mv_hybrid.signatures import observed_signature

STAGES = ("train", "val", "test", "predict")
SplitMode = Literal["spatial", "temporal", "both"]


@dataclass
class Normalization:
    """Mean and standard deviation of inputs and targets over the training cells.

    ``forcing_*`` [3] (rn, prec, tair), ``static_*`` [features], ``target_*`` per
    target, of the target as its constraint compares it (anomalies from each cell's mean
    where the constraint compares anomalies, as for TWS).
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


def served_targets(targets: list[str] | None, declared: tuple[Constraint, ...]
                   ) -> list[str] | None:
    """The targets to serve.

    Those given (which must hold the declared constraints'), else the declared
    constraints', else None (every constraint the store holds).
    """
    if targets is not None and declared:
        unserved = [c.target for c in declared if c.target not in targets]
        if unserved:
            raise ValueError(f"data.targets: expected the targets of the model's "
                             f"constraints ({', '.join(c.target for c in declared)}), "
                             f"found {targets}; drop data.targets to serve them")
    elif declared:
        targets = list(dict.fromkeys(c.target for c in declared))
    return targets


def check_twin_path(store: str, create_twin: bool | str) -> None:
    """Refuse a missing ``store`` that ``create_twin`` does not name (a mistyped path)."""
    if not isinstance(create_twin, str) or Path(store).exists():
        return
    if Path(store).resolve() != Path(create_twin).resolve():
        raise FileNotFoundError(
            f"data.store: expected a zarr store at {store}, found nothing; create_twin writes "
            f"a synthetic twin only at {create_twin}. Fix the path, or pass "
            f"--data.create_twin {store} to write a twin there")


def write_twin(config: TwinConfig, path: Path) -> None:
    """Write the synthetic twin of ``config`` to ``path``, saying where, why and how big."""
    import time

    first, last = parse_years(config.years)
    n_days = (last - first + 1) * 365.25
    # measured on the default twin: 2673 land cells at 2°, 910 MB for 3652 days
    n_cells = 0.165 * (180 / config.res) * (360 / config.res)
    size = n_cells * n_days * 93e-9
    print(f"data.store: no store at {path}; writing a synthetic twin there (create_twin: "
          f"{config.res}°, {config.years}, seed {config.seed}; ~{n_cells:.0f} land cells, "
          f"~{size:.1f} GB; `h2mv synth` writes one on its own)", flush=True)
    t0 = time.perf_counter()
    store, truth = synthesize(config)
    print(f"  twin simulated in {time.perf_counter() - t0:.0f} s; writing zarr …", flush=True)
    write_store(store, truth, path)
    print(f"  twin written in {time.perf_counter() - t0:.0f} s: {path}", flush=True)


class H2MVDataModule(L.LightningDataModule):
    """Serve an H2MV store (grid or points) by batches of cells, split in space or time.

    Three splits (``split``):

    - ``spatial`` (default, the paper's): member ``member`` of a K-fold spatial-block CV
      trains on K − 1 folds, validates on its fold and is tested on the shared test fold;
      the periods may be the same;
    - ``temporal`` (the hydrological protocol: calibrate, validate, test on the same
      basins): every modelled cell in every stage, trained in the training period,
      validated (early stopping) and tested in later periods; one cell (a single basin) is
      enough, and folds play no part;
    - ``both``: spatial folds *and* separate periods (ungauged basins in ungauged years).

    With ``temporal`` or ``both`` the validation and test periods must be given and no
    two of the three periods may overlap.

    Args:
        store: path of the zarr store (or anything ``xarray.open_zarr`` opens).
        targets: constraint variables served with every batch (must be in the store);
            default: the targets of ``model_constraints``, else every constraint the store
            holds.
        model_constraints: the model's constraints (the CLI links
            ``model.init_args.constraints`` here, so a constraint is declared once).
            Their specs set how each target's statistics are computed (anomalies where
            the loss compares anomalies); a target without one gets the paper's
            constraint for it, else a plain one.
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
        split: ``spatial``, ``temporal`` or ``both`` (see above).
        n_folds: K, the number of validation folds (ensemble members); spatial splits.
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
        windows: train on random windows of the training period
            (:class:`~h2mv_hybrid.data.batches.TrainWindows`: scored days L, warm-up
            W, batches per epoch, state spacing); None: every batch spans the whole
            period. Validation, test and prediction always span whole periods.
        batch_size: cells per batch.
        num_workers: DataLoader worker processes.
        seed: seed of the batch order.
        check_values: scan the store for implausible values before training.
        create_twin: where a synthetic twin may be written if no store exists there: a
            path (the configs' ``h2mv_outputs/twin.zarr``) writes one only when ``store``
            is that path, so that a mistyped ``--data.store`` is refused instead of
            silently becoming a new twin; ``true`` writes one at whatever ``store`` is.
        twin_res: grid spacing of that twin, degrees.
        twin_years: period of that twin, 'YYYY-YYYY'.
        twin_seed: seed of that twin.
    """

    def __init__(
        self,
        store: str,
        targets: list[str] | None = None,
        model_constraints: list[Constraint] | None = None,
        inputs: list[str] | None = None,
        train_fraction: float = 1.0,
        patch: int = 1,
        patch_inputs: list[str] | None = None,
        split: SplitMode = "spatial",
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
        windows: TrainWindows | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        check_values: bool = True,
        create_twin: bool | str = False,
        twin_res: float = 2.0,
        twin_years: str = "2001-2010",
        twin_seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: expected ≥ 1 cells, found {batch_size}")
        check_choice("split", split, SplitMode)
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
        declared = as_constraints(model_constraints)
        self.store_path = store
        self.requested_targets = served_targets(targets, declared)
        self.declared_constraints = declared
        self.inputs = tuple(inputs or ())
        self.train_fraction = train_fraction
        self.patch = patch
        self.patch_inputs = tuple(patch_inputs or ()) if patch > 1 else ()
        self.split = split
        self.n_folds, self.member = n_folds, member
        self.block_deg, self.fold_seed = block_deg, fold_seed
        self.given_periods = {"val": (val_start, val_end), "test": (test_start, test_end)}
        self.periods = {
            "train": (train_start, train_end),
            "val": (val_start or train_start, val_end or train_end),
            "test": (test_start or train_start, test_end or train_end),
        }
        self.spinup_years = spinup_years
        self.windows = (windows if windows is None or isinstance(windows, TrainWindows)
                        else TrainWindows(**windows))
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.check_values = check_values
        self.twin = TwinConfig(res=twin_res, years=twin_years, seed=twin_seed) \
            if create_twin else None
        check_twin_path(store, create_twin)
        self._signatures: dict[str, dict[str, np.ndarray]] = {}
        self.save_hyperparameters()

    # -- the store, checked once -------------------------------------------------------
    @cached_property
    def dataset(self) -> xr.Dataset:
        """The store, opened lazily (the root group only: never the truth)."""
        path = Path(self.store_path)
        if self.twin is not None and not path.exists():
            write_twin(self.twin, path)
        return open_store(path)

    @cached_property
    def reader(self) -> xr.Dataset:
        """The store opened without dask: batches are many small reads, faster this way."""
        return open_store(Path(self.store_path), dask=False)

    @cached_property
    def info(self) -> StoreInfo:
        """Schema check of the store, run before anything is served."""
        info = check_store(self.dataset, constraints=self.requested_targets,
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
    def targets(self) -> tuple[str, ...]:
        """The constraint variables served with every batch."""
        if self.requested_targets is not None:
            return tuple(self.requested_targets)
        return self.info.constraints

    @property
    def target_constraints(self) -> tuple[Constraint, ...]:
        """The constraint spec of every served target: the declared one, else the default."""
        declared = {}
        for c in self.declared_constraints:
            declared.setdefault(c.target, c)
        defaults = default_constraints(self.targets)
        return tuple(declared.get(d.target, d) for d in defaults)

    # -- folds and windows -------------------------------------------------------------
    @cached_property
    def folds(self) -> xr.DataArray:
        """Fold of every cell (:func:`~h2mv_hybrid.data.folds.fold_map`).

        A temporal split has every modelled cell in every stage
        (:func:`~h2mv_hybrid.data.folds.temporal_fold_map`).
        """
        _ = self.info
        if self.split == "temporal":
            return temporal_fold_map(self.dataset)
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
        for c in self.target_constraints:
            axis = time_axis(ds, c.target)
            sl = (slice(w.start_month, w.end_month) if axis == "month"
                  else slice(w.start_day, w.end_day))
            x = c.as_compared(ds[c.target].isel({axis: sl}).where(where), axis)
            lazy[c.target] = (x.mean(), x.std())
            if axis == "time":  # every cell's own std (NSE*'s scale), in the same pass
                y = c.as_compared(ds[c.target].isel(time=sl), "time")
                lazy[f"basin:{c.target}"] = (y.count("time"), y.std("time"))
        for k in self.inputs:
            x = ds[k].isel(time=slice(w.start_day, w.end_day)).where(where)
            per = [d for d in x.dims if d != "layer"]
            lazy[f"input:{k}"] = (x.mean(per), x.std(per))
        with warnings.catch_warnings():  # cells never observed: NaN, not a warning
            warnings.filterwarnings("ignore", "Degrees of freedom", RuntimeWarning)
            warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
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
        for k in self.targets:
            if not np.isfinite(v[k][1]) or v[k][1] <= 0:
                raise StoreError(
                    f"{k}: expected observations on training cells in the training period, "
                    f"found {'none' if not np.isfinite(v[k][1]) else 'a constant'}"
                )
        self._basin_std = {f"{k[6:]}_basin_std": v[k][1] for k in v if k.startswith("basin:")}
        return Normalization(
            forcing_mean=[float(v[k][0]) for k in FORCING_NAMES],
            forcing_std=[float(v[k][1]) for k in FORCING_NAMES],
            static_mean=v["static"][0].tolist(),
            static_std=np.maximum(v["static"][1], 1e-6).tolist(),
            features=[str(f) for f in ds["feature"].values],
            target_mean={k: float(v[k][0]) for k in self.targets},
            target_std={k: float(v[k][1]) for k in self.targets},
            input_mean={k: np.atleast_1d(v[f"input:{k}"][0]).tolist() for k in self.inputs},
            input_std={k: np.atleast_1d(v[f"input:{k}"][1]).tolist() for k in self.inputs},
            layer_thickness_mm=[float(x) for x in thickness],
        )

    # -- per-cell values ---------------------------------------------------------------
    @property
    def basin_std(self) -> dict[str, np.ndarray]:
        """``<target>_basin_std``: each cell's standard deviation of each daily target.

        Over the training period, as its constraint compares it (store layout; NaN:
        unobserved); computed in the statistics' pass over the store (:attr:`stats`).
        The scale of the NSE* loss (:func:`~h2mv_hybrid.model.losses.nse_star`).
        """
        _ = self.stats
        return self._basin_std

    def signatures(self, stage: str) -> dict[str, np.ndarray]:
        """``<target>_<signature>``: each declared signature observed in every cell.

        Over the stage's period (store layout; :mod:`h2mv_hybrid.signatures`).
        """
        if stage not in self._signatures:
            ds, w = self.dataset, self.window(stage)
            days = slice(w.start_day, w.end_day)
            out = {}
            for c in self.declared_constraints:
                if c.signature is None or f"{c.name}" in out:
                    continue
                if time_axis(ds, c.target) != "time":
                    raise StoreError(f"constraint {c.name}: expected a daily target {c.target!r} "
                                     f"(time axis) for its signature, found a monthly one")
                flat = lambda v: np.moveaxis(  # noqa: E731
                    np.asarray(ds[v].isel(time=days).values, np.float64), 0, -1
                ).reshape(-1, w.end_day - w.start_day)
                values = observed_signature(c.signature, flat(c.target), flat("prec"))
                out[c.name] = values.reshape(ds["mask"].shape)
            self._signatures[stage] = out
        return self._signatures[stage]

    def cell_values(self, stage: str) -> dict[str, np.ndarray]:
        """The per-cell values served with the batches of a stage (store layout)."""
        if stage == "predict":
            return {}
        return {**self.basin_std, **self.signatures(stage)}

    # -- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Check the store, the periods and the folds (before any training)."""
        _ = self.info
        windows = {name: self.window(name) for name in ("train", "val", "test")}
        if self.split != "spatial":
            self._check_periods(windows)
        _ = self.folds

    def _check_periods(self, windows: dict[str, Window]) -> None:
        """A temporal split's periods are given and do not overlap."""
        for name in ("val", "test"):
            if None in self.given_periods[name]:
                raise StoreError(
                    f"{name}_start, {name}_end: expected the {name} period of split "
                    f"{self.split!r} (later years of the same cells), found "
                    f"{name}_start={self.given_periods[name][0]}, "
                    f"{name}_end={self.given_periods[name][1]}"
                )
        time = self.dataset.indexes["time"]
        span = {k: (w.start_day, w.end_day) for k, w in windows.items()}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            (a0, a1), (b0, b1) = span[a], span[b]
            if a0 < b1 and b0 < a1:
                date = lambda i: str(time[i].date())  # noqa: E731
                raise StoreError(
                    f"{b} period: expected no overlap with the {a} period in split "
                    f"{self.split!r} ({a}: {date(a0)} … {date(a1 - 1)}), found "
                    f"{date(b0)} … {date(b1 - 1)}"
                )

    def batches(self, stage: str) -> CellBatches:
        """The dataset of one stage; ``dataset[positions]`` returns a batch."""
        mask = self.cells(stage)
        idx = np.argwhere(mask)
        if idx.shape[0] == 0:
            raise StoreError(f"{stage}: expected at least one cell in this split, found none")
        rows = idx[:, 0]
        cols = idx[:, 1] if idx.shape[1] == 2 else None
        return CellBatches(self.reader, rows, cols, self.window(stage), self.targets,
                           store_tile(self.dataset), self.inputs, self.patch,
                           self.patch_inputs, self.cell_values(stage),
                           self.windows if stage == "train" else None,
                           source=self.store_path)

    def tiles(self, data: CellBatches) -> list[np.ndarray]:
        """Positions of a stage's cells grouped by chunk tile (one read each)."""
        key = tile_keys(data.rows, data.cols, data.tile)
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        return np.split(order, bounds)

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        data = self.batches(stage)
        if shuffle and data.windows is not None:
            sampler = RandomWindowSampler(len(data), self.batch_size, data.windows.batches,
                                          data.starts(), self.seed)
        else:
            sampler = TileBatchSampler(self.tiles(data), self.batch_size, shuffle, self.seed)
        return DataLoader(data, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("train", shuffle=True)

    def state_dataloader(self) -> DataLoader:
        """Whole-period batches of the training cells, spin-up included, in a fixed order.

        What a model with storages runs to cache its states on the state days of
        :class:`~h2mv_hybrid.data.batches.TrainWindows`.
        """
        return self._loader("train", shuffle=False)

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("predict", shuffle=False)
