"""Store I/O: how H2MV stores are chunked, opened and written (any store, not only the twin).

A store is chunked by tiles of cells over the whole period (:func:`chunking`), the access
pattern of training: a batch of cells reads whole series in few requests. It is opened
lazily (:func:`open_store`) and written atomically (:func:`write_store`); the DataModule,
the prediction writers, the importers and the twin generator all go through here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from h2mv_hybrid.atomic import atomic_directory
from h2mv_hybrid.data.schema import StoreError, with_energy

#: Cells per side of the chunk tiles stores are written with (see :func:`chunking`).
TILE = 16


def chunking(ds: xr.Dataset, tile: int = TILE) -> dict[str, dict[str, int]]:
    """Chunks for the access pattern: batches of cells over the whole period.

    Each chunk holds the full time axis of a ``tile × tile`` patch of cells, so that a
    batch of cells reads whole series in few requests and never re-reads time slices.
    """
    enc = {}
    for name, da in ds.data_vars.items():
        chunks = []
        for dim in da.dims:
            # a point layout gets as many cells per chunk as a grid tile holds
            size = {"lat": tile, "lon": tile, "cell": tile * tile}.get(dim, da.sizes[dim])
            chunks.append(min(size, da.sizes[dim]))
        enc[name] = {"chunks": tuple(chunks)}
    return enc


#: The first bytes of a NetCDF file: classic (CDF) or NetCDF-4 (HDF5).
NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")


def check_zarr_path(path: Path) -> None:
    """Refuse, in our words, a path that is not a zarr store (a file, NetCDF, an empty folder).

    Raises:
        StoreError: naming the path, what was expected and what was found.
    """
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(8)
        if head.startswith(NETCDF_MAGIC):
            raise StoreError(
                f"store: expected a zarr store (a directory), found the NetCDF file {path}. "
                f"Batches are read from zarr chunks: convert it once, e.g. python -c \"import "
                f"xarray as xr; xr.open_dataset('{path}').to_zarr('{path.with_suffix('.zarr')}')\""
                f" if it follows the schema, or h2mv import netcdf (docs/data.md) if not")
        raise StoreError(f"store: expected a zarr store (a directory), found a file: {path}")
    meta = ("zarr.json", ".zgroup", ".zattrs")
    if path.is_dir() and not any((path / m).exists() for m in meta):
        found = ("an empty directory" if not any(path.iterdir())
                 else "a directory without zarr.json or .zgroup")
        raise StoreError(f"store: expected a zarr store at {path}, found {found}")


def open_store(path: str | os.PathLike, group: str | None = None, *, dask: bool = True
               ) -> xr.Dataset:
    """Open a store (or its ``truth`` group) lazily.

    With ``dask`` (default) variables are dask arrays chunked as stored, for whole-store
    passes; without, xarray indexes the zarr arrays directly, which is faster for many
    small reads (batches of cells).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"store: expected a zarr store at {path}, found nothing")
    if path.name.endswith(".partial"):
        raise FileNotFoundError(f"store: expected a complete store, found {path}: the "
                                f"temporary directory of a write that did not finish")
    check_zarr_path(path)
    ds = xr.open_zarr(path, group=group, consolidated=False, chunks={} if dask else None)
    if group:
        return ds
    if not dask and "rn" not in ds and "pet" in ds:
        # rn derived from pet must stay lazy: a dask pet, so a batch reads only its slice
        ds["pet"] = xr.open_zarr(path, consolidated=False, chunks={})["pet"]
    return with_energy(ds)


def write_store(store: xr.Dataset, truth: xr.Dataset | None, out: str | os.PathLike,
                *, overwrite: bool = False, groups: dict[str, xr.Dataset] | None = None
                ) -> Path:
    """Write a store (and its ``truth`` group, and any other ``groups``) to zarr atomically.

    The store is written under a temporary name beside ``out`` and renamed into place at
    the end, so an interrupted run leaves no half-written store under ``out``. An existing
    ``out`` is replaced only with ``overwrite=True``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out: {out} exists; pass overwrite=True (--overwrite) to replace")
    with atomic_directory(out) as tmp:
        # Unconsolidated: consolidated metadata is not part of the zarr v3 specification.
        store.to_zarr(tmp, mode="w", encoding=chunking(store), consolidated=False)
        extra = dict(groups or {})
        if truth is not None:
            extra["truth"] = truth
        for name, group in extra.items():
            group.to_zarr(tmp, group=name, mode="a", encoding=chunking(group),
                          consolidated=False)
    return out


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
