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

#: The zarr format of every store we write, with consolidated metadata (:func:`consolidate`).
#: Format 2 because zarr-python 3 warns on format 3 for both things our stores need:
#: consolidated metadata (one read to open a store, "not part of the Zarr format 3
#: specification") and text coordinates such as gauge ids and feature names (fixed-width
#: unicode "does not have a Zarr V3 specification"; variable-length strings come back as
#: numpy StringDType). Format 2 specifies both and every zarr reader reads it.
ZARR_FORMAT = 2


#: Encoding keys that describe how a source store was laid out, not what the data mean.
STORAGE_ENCODING = frozenset({"chunks", "preferred_chunks", "shards", "compressor",
                              "compressors", "filters", "serializer", "codecs",
                              "chunk_key_encoding", "dimension_separator", "object_codec",
                              "write_empty_chunks"})


def _portable(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without the storage encodings it inherited from the store it was read from.

    Data read from a format-3 store carry its codecs (``serializer``, ``compressors``),
    which a format-2 write refuses; the meaning (units, calendar, dtype, fill value) stays.
    """
    out = ds.copy()
    for name in out.variables:
        out[name].encoding = {k: v for k, v in out[name].encoding.items()
                              if k not in STORAGE_ENCODING}
    return out


def to_zarr(ds: xr.Dataset, path: str | os.PathLike, **kwargs):
    """Write ``ds`` as every store of ours is written (``ds.to_zarr`` with ``kwargs``).

    Zarr format :data:`ZARR_FORMAT`, without the storage encodings ``ds`` inherited from
    the store it was read from, and unconsolidated until the store is complete (then
    :func:`consolidate`).
    """
    return _portable(ds).to_zarr(path, zarr_format=ZARR_FORMAT, consolidated=False, **kwargs)


def open_zarr(path: str | os.PathLike, **kwargs) -> xr.Dataset:
    """``xr.open_zarr`` of a store of ours, or of an earlier version's, without a warning.

    Through its consolidated metadata where it has them (:func:`is_consolidated`), else
    without.
    """
    return xr.open_zarr(path, consolidated=is_consolidated(path), **kwargs)


def consolidate(path: str | os.PathLike) -> None:
    """Write the consolidated metadata of the store at ``path``, groups included.

    Call it after a store's last metadata change: a reader that opens it consolidated
    sees the metadata as of this call.
    """
    import zarr

    zarr.consolidate_metadata(str(path), zarr_format=ZARR_FORMAT)


def is_consolidated(path: str | os.PathLike) -> bool:
    """Whether the store at ``path`` has consolidated metadata (format 2: ``.zmetadata``).

    Stores written before format 2 have none and are opened unconsolidated, without the
    warning xarray gives when it looks for consolidated metadata and finds none.
    """
    return (Path(path) / ".zmetadata").exists()


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
    ds = open_zarr(path, group=group, chunks={} if dask else None)
    if group:
        return ds
    if not dask and "rn" not in ds and "pet" in ds:
        # rn derived from pet must stay lazy: a dask pet, so a batch reads only its slice
        ds["pet"] = open_zarr(path, chunks={})["pet"]
    return with_energy(ds)


def write_store(store: xr.Dataset, truth: xr.Dataset | None, out: str | os.PathLike,
                *, overwrite: bool = False, groups: dict[str, xr.Dataset] | None = None
                ) -> Path:
    """Write a store (and its ``truth`` group, and any other ``groups``) to zarr atomically.

    The store is zarr format :data:`ZARR_FORMAT` with consolidated metadata. It is written
    under a temporary name beside ``out`` and renamed into place at
    the end, so an interrupted run leaves no half-written store under ``out``. An existing
    ``out`` is replaced only with ``overwrite=True``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out: {out} exists; pass overwrite=True (--overwrite) to replace")
    with atomic_directory(out) as tmp:
        to_zarr(store, tmp, mode="w", encoding=chunking(store))
        extra = dict(groups or {})
        if truth is not None:
            extra["truth"] = truth
        for name, group in extra.items():
            to_zarr(group, tmp, group=name, mode="a", encoding=chunking(group))
        consolidate(tmp)  # once, at the root, after every group is in
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
