"""The ensemble prediction store: every CV member's predictions along a ``member`` dimension.

Every member predicts the test cells (or every modelled cell) over the test period, one
chunk tile of cells at a time, straight into a zarr store laid out like the input store
with a leading ``member`` dimension (``member, time, lat, lon`` or ``member, time, cell``)
and chunked by member × whole period × tile, so each tile's write fills whole chunks.

Restartable: the store is built under ``<out>.partial`` and a ``progress`` array
[member, tile] marks every tile written. A rerun with the same provenance skips the
marked tiles and goes on where the interrupted one stopped; when every tile is written
the marker is deleted and the store is renamed to ``<out>`` (so ``<out>`` is always
complete). A ``.partial`` store of other checkpoints, config or input store is refused.

Provenance, in the store's attributes: the config and its overrides, the package version
and git commit, each member's checkpoint (path and SHA-256), and the path and a SHA-256
of the input store's metadata (its ``zarr.json`` / ``.zarray`` / ``.zattrs`` files).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dask.array
import lightning as L
import numpy as np
import torch
import xarray as xr
import zarr
from tqdm.auto import tqdm

from h2mv_hybrid import __version__
from h2mv_hybrid.atomic import read_json
from h2mv_hybrid.callbacks.prediction import record_variables
from h2mv_hybrid.data.batches import CellBatches
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.store import consolidate, store_tile, tile_keys, to_zarr
from h2mv_hybrid.options import check_choice

EnsembleCells = Literal["test", "all"]
METADATA_FILES = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")
#: DataModule settings that every member must share for their predictions to line up.
SHARED = ("store", "n_folds", "block_deg", "fold_seed", "test_start", "test_end",
          "train_start", "train_end", "spinup_years")


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def metadata_checksum(store: str | os.PathLike) -> str:
    """SHA-256 over a zarr store's metadata files (names, shapes, chunks, attributes).

    Cheap whatever the store's size (no chunk is read); it changes when a variable, a
    dimension, an attribute or the chunking changes, not when values are rewritten in place.
    """
    root = Path(store)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.name in METADATA_FILES):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def git_commit() -> str:
    """Commit of the package's source tree, with ``+dirty`` for local changes, or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty.strip() else "")


def load_member(checkpoint: str | os.PathLike, device: torch.device) -> L.LightningModule:
    """A member's LightningModule from its checkpoint, whatever its class."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    class_path = ckpt.get("hyper_parameters", {}).get("_class_path")
    if not class_path:
        raise ValueError(f"checkpoint {checkpoint}: expected a checkpoint of h2mv fit that "
                         f"names its model class (_class_path), found none")
    # Lightning loads only classes already imported (its guard against arbitrary code).
    importlib.import_module(class_path.rsplit(".", 1)[0])
    return L.LightningModule.load_from_checkpoint(checkpoint, map_location=device).eval()


def _datamodule_settings(checkpoint: str) -> dict[str, Any]:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    settings = ckpt.get("datamodule_hyper_parameters")
    if not settings:
        raise ValueError(f"checkpoint {checkpoint}: expected the DataModule's settings "
                         f"(datamodule_hyper_parameters), found none")
    return dict(settings)


def datamodule_from_settings(settings: dict[str, Any], **overrides: Any) -> H2MVDataModule:
    """The DataModule a fit used, set up to apply its trained model.

    ``settings`` are the checkpoint's ``datamodule_hyper_parameters``; no twin is written,
    no value scan runs, no worker processes start; then ``overrides`` (another store,
    another batch size) apply.
    """
    accepted = inspect.signature(H2MVDataModule).parameters
    args = {k: v for k, v in settings.items() if k in accepted and k != "create_twin"}
    args.update(check_values=False, num_workers=0)
    args.update(overrides)
    return H2MVDataModule(**args)


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class EnsembleWriter:
    """Writes the members' predictions tile by tile into ``<out>.partial`` (see module doc)."""

    def __init__(self, root: Path, out: Path, cells: str, overwrite: bool,
                 members: Sequence[int] | None = None):
        manifest = read_json(root / "cv.json")
        folds = int(manifest["folds"])
        self.ids = list(range(folds)) if members is None else sorted({int(m) for m in members})
        bad = [m for m in self.ids if not 0 <= m < folds]
        if bad or not self.ids:
            raise ValueError(f"members: expected some of 0 … {folds - 1}, found {bad or 'none'}")
        self.folds = len(self.ids)  # members in the store
        self.members = []
        for k in self.ids:
            done = root / f"member_{k}" / "done.json"
            if not done.exists():
                raise FileNotFoundError(
                    f"member {k}: expected a finished member ({done}), found none; run "
                    f"h2mv cv --members {k} first"
                )
            self.members.append(read_json(done)["best_checkpoint"])
        settings = [_datamodule_settings(c) for c in self.members]
        for name in SHARED:
            values = {json.dumps(s.get(name)) for s in settings}
            if len(values) > 1:
                raise ValueError(f"data.{name}: expected one value across the members, found "
                                 f"{sorted(values)}")
        self.dm = datamodule_from_settings(settings[0])
        self.out, self.partial = out, out.with_name(out.name + ".partial")
        self.overwrite = overwrite
        check_choice("cells", cells, EnsembleCells)
        self.cells = cells
        ds = self.dm.dataset
        self.spatial = ds["mask"].dims
        self.tile = store_tile(ds)
        mask = self.dm.cells("test") if cells == "test" else self.dm.cells("predict")
        idx = np.argwhere(mask)
        self.rows = idx[:, 0]
        self.cols = idx[:, 1] if idx.shape[1] == 2 else None
        keys = tile_keys(self.rows, self.cols, self.tile)
        order = np.argsort(keys, kind="stable")
        self.tiles = np.split(order, np.flatnonzero(np.diff(keys[order])) + 1)
        self.window = self.dm.window("predict")
        self.time = ds["time"].values[self.window.start_day:self.window.end_day]
        self.data = CellBatches(self.dm.reader, self.rows, self.cols, self.window, (),
                                self.tile, self.dm.inputs, self.dm.patch, self.dm.patch_inputs)
        self.provenance = self._provenance(manifest)

    def _provenance(self, manifest: dict[str, Any]) -> dict[str, Any]:
        store = Path(self.dm.store_path)
        members = [{"member": k, "checkpoint": str(Path(c).resolve()),
                    "sha256": sha256_file(c)} for k, c in zip(self.ids, self.members,
                                                               strict=True)]
        identity = {
            "config_text": manifest["config_text"], "overrides": manifest["overrides"],
            "members": [m["sha256"] for m in members], "cells": self.cells,
            "input_store_metadata_sha256": metadata_checksum(store),
            "period": [str(self.time[0])[:10], str(self.time[-1])[:10]],
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return {
            "source": "h2mv cv (ensemble of the spatial-block cross-validation members)",
            "h2mv_hybrid_version": __version__,
            "git_commit": git_commit(),
            "config_file": manifest["config"],
            "config": manifest["config_text"],
            "config_overrides": json.dumps(manifest["overrides"]),
            "n_members": self.folds,
            "n_folds": int(manifest["folds"]),
            "member_checkpoints": json.dumps(members),
            "input_store": str(store.resolve()),
            "input_store_metadata_sha256": identity["input_store_metadata_sha256"],
            "predicted_cells": self.cells,
            "n_predicted_cells": int(len(self.rows)),
            "period": " … ".join(identity["period"]),
            "split": self.dm.split,
            **({"seeds": json.dumps(manifest["seeds"])} if "seeds" in manifest else {}),
            "provenance_key": key,
        }

    def _same_experiment(self, attrs: dict[str, Any]) -> bool:
        """Whether an existing store was predicted by this experiment's members.

        Same config, overrides, cells, period and input store: only the member set or a
        member's checkpoint differ (a member added or retrained), so the store is this
        experiment's stale product and is rewritten rather than refused.
        """
        keys = ("config", "config_overrides", "predicted_cells", "period",
                "input_store_metadata_sha256")
        return all(attrs.get(k) == self.provenance[k] for k in keys)

    # -- the store skeleton ----------------------------------------------------------------
    def _skeleton(self, first: dict[str, Any]) -> None:
        ds = self.dm.dataset
        n_t, k = len(self.time), self.folds
        shape = tuple(ds.sizes[d] for d in self.spatial)
        chunks = (1, n_t, *self.tile)
        dims = ("member", "time", *self.spatial)
        empty = lambda s, c: dask.array.full(s, np.nan, chunks=c, dtype=np.float32)  # noqa: E731
        data, enc = {}, {}
        for v in record_variables(first):
            if v.kind == "scalar":
                data[v.name] = xr.DataArray(np.full(k, np.nan, np.float32), dims="member",
                                            attrs=v.attrs)
                continue
            daily = v.kind == "daily"
            var_chunks = chunks if daily else (1, *self.tile)
            size = (k, n_t, *shape) if daily else (k, *shape)
            data[v.name] = xr.DataArray(empty(size, var_chunks),
                                        dims=dims if daily else ("member", *self.spatial),
                                        attrs=v.attrs)
            enc[v.name] = {"chunks": var_chunks}
        data["fold"] = self.dm.folds.astype(np.int16)
        data["progress"] = xr.DataArray(np.zeros((k, len(self.tiles)), np.int8),
                                        dims=("member", "tile"),
                                        attrs={"long_name": "tiles written (1) per member"})
        coords = {"member": np.array(self.ids), "time": self.time,
                  **{c: ds[c] for c in ("lat", "lon")}}
        skeleton = xr.Dataset(data, coords=coords, attrs=self.provenance)
        skeleton["member"].attrs["long_name"] = (
            "ensemble member (the seed of seeds[member] over one temporal split)"
            if "seeds" in self.provenance else "cross-validation member (its validation fold)")
        to_zarr(skeleton, self.partial, mode="w", compute=False, encoding=enc)

    def _open_partial(self) -> zarr.Group | None:
        if not self.partial.exists():
            return None
        group = zarr.open_group(self.partial, mode="r+")
        key = group.attrs.get("provenance_key")
        if key != self.provenance["provenance_key"]:
            raise ValueError(
                f"ensemble: {self.partial} is an interrupted prediction of other checkpoints, "
                f"config, cells or input store (provenance key {key}, expected "
                f"{self.provenance['provenance_key']}); delete it to start over"
            )
        return group

    # -- predicting --------------------------------------------------------------------------
    def _predict_tile(self, module: L.LightningModule, t: int, device: torch.device
                      ) -> dict[str, Any]:
        positions = self.tiles[t]
        batch = self.data[positions]
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            return module.predict_step(batch, t)

    def _write_tile(self, group: zarr.Group, member: int, t: int, pred: dict[str, Any]) -> None:
        positions = np.sort(self.tiles[t])  # CellBatches returns cells in sorted position order
        r = self.rows[positions]
        c = None if self.cols is None else self.cols[positions]
        r0 = (int(r.min()) // self.tile[0]) * self.tile[0]
        if c is None:
            r1 = min(r0 + self.tile[0], self.dm.dataset.sizes["cell"])
            region, where = (slice(r0, r1),), (r - r0,)
            size = (r1 - r0,)
        else:
            c0 = (int(c.min()) // self.tile[1]) * self.tile[1]
            r1 = min(r0 + self.tile[0], self.dm.dataset.sizes["lat"])
            c1 = min(c0 + self.tile[1], self.dm.dataset.sizes["lon"])
            region, where = (slice(r0, r1), slice(c0, c1)), (r - r0, c - c0)
            size = (r1 - r0, c1 - c0)

        def place(values: torch.Tensor) -> np.ndarray:
            v = values.float().cpu().numpy()
            out = np.full((*v.shape[1:], *size), np.nan, np.float32)
            out[(..., *where)] = v.T if v.ndim == 2 else v
            return out

        for v in record_variables(pred):
            if v.kind == "scalar":
                group[v.name][member] = np.float32(v.values(pred))
            elif v.kind == "daily":
                group[v.name][(member, slice(None), *region)] = place(v.values(pred))
            else:
                group[v.name][(member, *region)] = place(v.values(pred))
        group["progress"][member, t] = 1

    def run(self, device: str = "auto") -> Path:
        """Predict every unwritten (member, tile), then publish the store under ``out``."""
        dev = _device(device)
        if self.out.exists():
            old = dict(zarr.open_group(self.out, mode="r").attrs)
            key = old.get("provenance_key")
            if key == self.provenance["provenance_key"]:
                print(f"ensemble store: {self.out} is up to date")
                return self.out
            if self._same_experiment(old):
                print(f"ensemble: {self.out} holds the same experiment with other member "
                      f"checkpoints ({_member_ids(old)}); rewriting it with members "
                      f"{self.ids}")
            elif not self.overwrite:
                raise FileExistsError(
                    f"ensemble: {self.out} exists and holds other predictions (provenance key "
                    f"{key}); pass overwrite=True to replace it"
                )
        group = self._open_partial()
        done = np.zeros((self.folds, len(self.tiles)), bool)
        if group is not None:
            # progress goes only once every tile is written: a partial store without it
            # was interrupted after that (in the extrapolation index or the publishing)
            done[:] = np.asarray(group["progress"][:]) if "progress" in group else True
        todo = [(m, t) for m in range(self.folds) for t in range(len(self.tiles))
                if not done[m, t]]
        if done.any():
            print(f"ensemble: resuming {self.partial} ({int(done.sum())} of {done.size} "
                  f"member-tiles written)")
        module, loaded = None, None
        for m, t in tqdm(todo, desc="ensemble prediction", unit="tile", disable=None):
            if loaded != m:
                module, loaded = load_member(self.members[m], dev), m
            pred = self._predict_tile(module, t, dev)
            if group is None:
                self._skeleton(pred)
                group = zarr.open_group(self.partial, mode="r+")
            self._write_tile(group, m, t, pred)
        if group is None:  # nothing to predict: no cells
            raise ValueError(f"cells: expected at least one {self.cells} cell, found none")
        if "progress" in group:
            del group["progress"]
        self._write_extrapolation()
        consolidate(self.partial)  # the metadata is final: no progress, every attribute
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.partial, self.out)
        print(f"ensemble store: {self.out} ({self.folds} members × {len(self.rows)} cells × "
              f"{len(self.time)} days)")
        return self.out

    def _write_extrapolation(self) -> None:
        """Add each member's extrapolation index of the predicted cells to the store.

        (:mod:`h2mv_hybrid.analysis.extrapolation`; NaN where a cell was not predicted.)
        """
        from h2mv_hybrid.analysis.ensemble import _to_map, cell_positions, predicted_cells
        from h2mv_hybrid.analysis.extrapolation import ensemble_extrapolation

        ens = xr.open_zarr(self.partial, consolidated=False)  # consolidated only when done
        source = self.dm.dataset
        cells, _ = predicted_cells(ens, source)
        index = ensemble_extrapolation(ens, source, cells)["extrapolation_index"]
        if "cell" not in self.spatial:  # a grid: the predicted cells back onto it
            index = _to_map(index, ens).transpose("member", *self.spatial)
        else:  # points: onto every cell of the store, NaN where not predicted
            full = np.full((index.sizes["member"], ens.sizes["cell"]), np.nan, np.float32)
            full[:, cell_positions(ens, cells)] = index.values
            index = xr.DataArray(full, dims=("member", "cell"), attrs=index.attrs,
                                 coords={"member": index["member"].values})
        out = xr.Dataset({"extrapolation_index": index.astype(np.float32)})
        out = out.drop_vars([c for c in out.coords if c != "member"])
        out.attrs = dict(ens.attrs)  # an append rewrites the group's attributes with these
        to_zarr(out, self.partial, mode="a")


def _member_ids(attrs: dict[str, Any]) -> list[int]:
    """The members an existing ensemble store was predicted from."""
    return [int(m["member"]) for m in json.loads(attrs.get("member_checkpoints", "[]"))]


def predict_ensemble(root: str | os.PathLike, out: str | os.PathLike | None = None,
                     cells: str = "test", device: str = "auto", overwrite: bool = False,
                     members: Sequence[int] | None = None) -> Path:
    """Write (or finish writing) the ensemble store of a finished CV.

    Args:
        root: the CV directory (``h2mv cv --root``), with ``cv.json`` and every member's
            ``done.json``.
        out: the store to write (default ``<root>/ensemble.zarr``).
        cells: ``test`` (the shared test fold) or ``all`` modelled cells.
        device: where the members run (``auto``: CUDA if available).
        overwrite: replace a complete store at ``out`` that holds other predictions (one
            with the same provenance is left as it is; one of the same experiment from
            other member checkpoints, a member added or retrained, is rewritten).
        members: the members in the store (default: all K; each must be finished). The
            ``member`` coordinate keeps their numbers (their validation folds).

    Returns:
        The path of the complete store.
    """
    root = Path(root)
    out = Path(out) if out is not None else root / "ensemble.zarr"
    return EnsembleWriter(root, out, cells, overwrite, members).run(device)
