"""Gridded NetCDF products (ERA5-Land, GRACE mascons, FLUXCOM …) as an H2MV grid store.

A small YAML mapping says, for every store variable, which files hold it, under which
name, how to convert its unit, how to aggregate it in time and how to regrid it::

    grid: {res: 1.0, lat: [30, 50], lon: [-10, 20]}   # target cell centres, degrees
    period: {start: 2001-01-01, end: 2002-12-31}        # the store's daily axis
    variables:
      - {name: tair, files: "era5land/*.nc", source: t2m}                  # K, daily mean
      - {name: prec, files: "era5land/*.nc", source: tp, scale: 1000}      # m → mm day-1
      - {name: rn, files: "era5land/*.nc", source: [ssr, str], scale: 1.1574e-5}  # J m-2 → W m-2
      - {name: tws, files: "grace/*.nc", source: lwe_thickness, scale: 10}  # cm → mm, monthly
      - {name: et, files: "fluxcom/*.nc", source: LE, scale: 0.408163}     # MJ m-2 d-1 → mm d-1
    static:
      - {feature: elevation, files: "static/elevation.nc", source: z}

Each entry:

- ``files``: a glob, relative to the mapping file's folder (or ``root``); opened lazily
  with :func:`xarray.open_mfdataset` (dask), so no file is ever loaded whole;
- ``source``: the variable's name in the files, or a list of names that are summed
  (net radiation = net shortwave + net longwave);
- ``scale``, ``offset``: value × scale + offset gives the schema unit (``units``, default
  the schema's own, which the store check then verifies with its range checks and hints);
- ``aggregate``: ``mean`` (default) or ``sum`` over the source steps falling in one step
  of the variable's axis (a day for daily variables, a month for monthly ones; ``q``
  takes ``axis: time`` or ``month``);
- ``regrid``: ``coarsen`` (block means over whole source cells: the target spacing must
  be an integer multiple of the source's and the target cell edges must fall on source
  cell edges), ``interp`` (bilinear) or ``auto`` (default: coarsen when possible, else
  interpolate; ERA5 grids, centred on whole multiples of their spacing, interpolate onto
  grids with edges at whole degrees).

Source coordinates named ``latitude``/``longitude``/``valid_time`` are renamed; longitudes
in 0 … 360 are wrapped to −180 … 180 and latitudes sorted ascending. Monthly time stamps
(mid-month for GRACE) fall into their month. The land mask is every cell with complete
forcing and static features over the period (and, if given, ``mask_min`` of a ``mask``
entry such as a land fraction). The store is checked (:func:`check_store`) and written
atomically, chunk by chunk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from h2mv_hybrid.data.schema import SPECS, StoreError, check_store, month_starts
from h2mv_hybrid.data.store import TILE, write_store
from h2mv_hybrid.importers.mapping import read_mapping
from h2mv_hybrid.options import check_choice

Regrid = Literal["auto", "coarsen", "interp"]
TimeAggregate = Literal["mean", "sum"]
_RENAME = {"latitude": "lat", "longitude": "lon", "valid_time": "time", "Time": "time"}
_ENTRY_KEYS = {"name", "feature", "files", "source", "scale", "offset", "units", "aggregate",
               "regrid", "axis", "long_name", "mask_min"}


def target_grid(grid: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """Cell centres (lat, lon) of the mapping's ``grid: {res, lat: [lo, hi], lon: [lo, hi]}``.

    ``lat``/``lon`` are the outer edges of the domain (default the globe); centres lie
    half a cell inside them.
    """
    if "res" not in grid:
        raise StoreError("grid.res: expected the target grid spacing in degrees, found none")
    res = float(grid["res"])
    (la0, la1), (lo0, lo1) = grid.get("lat", (-90, 90)), grid.get("lon", (-180, 180))
    for name, (a, b), n in (("lat", (la0, la1), 180), ("lon", (lo0, lo1), 360)):
        cells = (b - a) / res
        if res <= 0 or b <= a or abs(cells - round(cells)) > 1e-6 or cells > n / res + 1e-6:
            raise StoreError(f"grid.{name}: expected edges [lo, hi] spanning a whole number "
                             f"of {res}° cells, found [{a}, {b}]")
    lat = la0 + res * (np.arange(round((la1 - la0) / res)) + 0.5)
    lon = lo0 + res * (np.arange(round((lo1 - lo0) / res)) + 0.5)
    return lat, lon, res


def _standard(ds: xr.Dataset) -> xr.Dataset:
    """Rename common coordinate names, wrap longitudes, sort latitudes ascending."""
    ds = ds.rename({k: v for k, v in _RENAME.items() if k in ds.dims or k in ds.coords})
    for dim in ("lat", "lon"):
        if dim not in ds.dims:
            long = "latitude" if dim == "lat" else "longitude"
            raise StoreError(f"{dim}: expected a {dim} (or {long}) dimension in the source "
                             f"files, found dims {tuple(ds.dims)}")
    if float(ds["lon"].max()) > 180.0:
        ds = ds.assign_coords(lon=((ds["lon"] + 180.0) % 360.0) - 180.0)
    return ds.sortby("lon").sortby("lat")


def _spacing(coord: xr.DataArray) -> float:
    step = np.diff(coord.values)
    if len(step) == 0 or not np.allclose(step, step[0], rtol=1e-4):
        raise StoreError(f"{coord.name}: expected a regular source grid, found steps "
                         f"{np.unique(step.round(6))[:5].tolist()}")
    return float(step[0])


def regrid(da: xr.DataArray, lat: np.ndarray, lon: np.ndarray, res: float,
           how: Regrid = "auto") -> xr.DataArray:
    """A source field onto the target cell centres, by block means or bilinear interpolation."""
    check_choice("regrid", how, Regrid, StoreError)
    d_lat, d_lon = _spacing(da["lat"]), _spacing(da["lon"])
    k_lat, k_lon = res / d_lat, res / d_lon

    def aligned(src: xr.DataArray, step: float, first: float) -> bool:
        # a target cell edge falls on a source cell edge
        off = ((first - res / 2) - (float(src[0]) - step / 2)) / step
        return abs(off - round(off)) < 1e-6

    whole = (abs(k_lat - round(k_lat)) < 1e-6 and abs(k_lon - round(k_lon)) < 1e-6
             and round(k_lat) >= 1 and round(k_lon) >= 1
             and aligned(da["lat"], d_lat, lat[0]) and aligned(da["lon"], d_lon, lon[0]))
    if how == "coarsen" or (how == "auto" and whole):
        if not whole:
            raise StoreError(f"regrid: coarsen needs a target spacing ({res}°) that is a whole "
                             f"multiple of the source's ({d_lat:g}° × {d_lon:g}°), with cell "
                             f"edges on the source's; use interp")
        k_lat, k_lon = round(k_lat), round(k_lon)
        # trim the source to the target domain's edges, so blocks align with target cells
        edge = dict(lat=slice(lat[0] - res / 2, lat[-1] + res / 2),
                    lon=slice(lon[0] - res / 2, lon[-1] + res / 2))
        sub = da.sel(edge)
        out = sub.coarsen(lat=k_lat, lon=k_lon, boundary="trim").mean()
        return out.reindex(lat=lat, lon=lon, method="nearest", tolerance=res / 4)
    return da.interp(lat=lat, lon=lon, method="linear")


def _aggregate(da: xr.DataArray, axis: str, how: TimeAggregate, days: pd.DatetimeIndex,
               name: str) -> xr.DataArray:
    check_choice(f"{name}.aggregate", how, TimeAggregate, StoreError)
    if "time" not in da.dims:
        raise StoreError(f"{name}: expected a time dimension in the source, found dims "
                         f"{da.dims}")
    freq = "1D" if axis == "time" else "MS"
    r = da.resample(time=freq)
    da = r.mean() if how == "mean" else r.sum(min_count=1)
    target = days if axis == "time" else month_starts(days)
    da = da.reindex(time=target)  # steps the source lacks stay NaN (gaps)
    return da if axis == "time" else da.rename(time="month")


def _open(entry: dict[str, Any], root: Path, what: str) -> xr.Dataset:
    pattern = entry.get("files")
    if not pattern:
        raise StoreError(f"{what}.files: expected a file glob, found none")
    files = sorted(root.glob(pattern)) if not Path(pattern).is_absolute() else sorted(
        Path("/").glob(pattern.lstrip("/")))
    if not files:
        raise FileNotFoundError(f"{what}.files: expected files matching {root / pattern}, "
                                f"found none")
    ds = xr.open_mfdataset(files, combine="by_coords", chunks={}, data_vars="minimal",
                           coords="minimal", compat="override", join="outer")
    return _standard(ds)


def _field(entry: dict[str, Any], root: Path, what: str) -> xr.DataArray:
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise StoreError(f"{what}: expected keys among {', '.join(sorted(_ENTRY_KEYS))}, "
                         f"found {', '.join(sorted(unknown))}")
    ds = _open(entry, root, what)
    names = entry.get("source")
    names = [names] if isinstance(names, str) else list(names or [])
    if not names:
        raise StoreError(f"{what}.source: expected the variable name in the files, found none")
    absent = [n for n in names if n not in ds.data_vars]
    if absent:
        raise StoreError(f"{what}.source: expected {', '.join(absent)} in {entry['files']}, "
                         f"found {', '.join(map(str, ds.data_vars))}")
    da = ds[names[0]]
    for n in names[1:]:
        da = da + ds[n]
    return da * float(entry.get("scale", 1.0)) + float(entry.get("offset", 0.0))


def netcdf_store(mapping: dict[str, Any], root: str | os.PathLike = ".") -> xr.Dataset:
    """The store described by a mapping, built lazily (dask) and checked.

    Args:
        mapping: the parsed YAML mapping (see the module docstring).
        root: folder the ``files`` globs are relative to.
    """
    root = Path(mapping.get("root", root))
    unknown = set(mapping) - {"grid", "period", "variables", "static", "mask", "root"}
    if unknown:
        raise StoreError(f"mapping: expected keys grid, period, variables, static, mask, root; "
                         f"found {', '.join(sorted(unknown))}")
    lat, lon, res = target_grid(mapping.get("grid") or {})
    period = mapping.get("period") or {}
    if "start" not in period or "end" not in period:
        raise StoreError("period: expected {start, end} (the store's first and last day), "
                         f"found {period or 'none'}")
    days = pd.date_range(str(period["start"]), str(period["end"]), freq="D")
    out: dict[str, xr.DataArray] = {}
    for i, entry in enumerate(mapping.get("variables") or []):
        name = entry.get("name")
        what = f"variables[{i}] ({name})"
        if name not in SPECS or SPECS[name].role in ("static", "mask"):
            valid = [v for v in SPECS if SPECS[v].role not in ("static", "mask")]
            raise StoreError(f"{what}.name: expected a schema variable among "
                             f"{', '.join(valid)}, found {name!r}")
        if name in out:
            raise StoreError(f"{what}.name: expected each variable once, found {name} twice")
        spec = SPECS[name]
        axis = entry.get("axis", spec.time)
        if axis not in {spec.time, spec.alt_time} - {None}:
            raise StoreError(f"{what}.axis: expected {spec.time}"
                             f"{' or ' + spec.alt_time if spec.alt_time else ''}, found {axis}")
        da = _field(entry, root, what)
        da = _aggregate(da, axis, entry.get("aggregate", "mean"), days, what)
        da = regrid(da, lat, lon, res, entry.get("regrid", "auto"))
        da = da.transpose(*spec.dims(("lat", "lon"), axis)).astype(np.float32)
        da.attrs = {"units": entry.get("units", spec.units),
                    "long_name": entry.get("long_name", spec.long_name),
                    "source": f"{entry['files']}: {entry['source']}"}
        out[name] = da.drop_vars([c for c in da.coords if c not in da.dims])
    features, fields = [], []
    for i, entry in enumerate(mapping.get("static") or []):
        what = f"static[{i}] ({entry.get('feature')})"
        if not entry.get("feature"):
            raise StoreError(f"{what}.feature: expected the feature's name, found none")
        da = _field(entry, root, what)
        if "time" in da.dims:
            da = da.mean("time")
        da = regrid(da, lat, lon, res, entry.get("regrid", "auto"))
        features.append(str(entry["feature"]))
        fields.append(da.drop_vars([c for c in da.coords if c not in da.dims]))
    if not fields:
        raise StoreError("static: expected at least one static feature entry, found none")
    out["static"] = xr.concat(fields, dim="feature").transpose("feature", "lat", "lon") \
        .astype(np.float32).assign_attrs(units="1", long_name=SPECS["static"].long_name)
    forcing = [n for n in ("rn", "pet", "prec", "tair") if n in out]
    complete = out["static"].notnull().all("feature")
    for n in forcing:
        complete = complete & out[n].notnull().all("time")
    if mapping.get("mask"):
        entry = dict(mapping["mask"])
        threshold = float(entry.pop("mask_min", 0.5))
        frac = regrid(_field(entry, root, "mask"), lat, lon, res, entry.get("regrid", "auto"))
        if "time" in frac.dims:
            frac = frac.isel(time=0)
        complete = complete & (frac.drop_vars([c for c in frac.coords if c not in frac.dims])
                               >= threshold)
    mask = complete.compute().astype(bool)
    mask.attrs = {"units": "1", "long_name": SPECS["mask"].long_name}
    if not bool(mask.any()):
        raise StoreError("mask: expected cells with complete forcing and static features, "
                         f"found none (forcing: {', '.join(forcing) or 'none'})")
    out["mask"] = mask
    store = xr.Dataset(out, coords={"time": days, "month": month_starts(days), "lat": lat,
                                    "lon": lon, "feature": features})
    store["lat"].attrs.update(units="degrees_north")
    store["lon"].attrs.update(units="degrees_east")
    store.attrs.update(source="h2mv_hybrid.importers.netcdf")
    check_store(store)
    return store.chunk({d: TILE if d in ("lat", "lon") else -1 for d in store.dims})


def import_netcdf(mapping: str, out: str, overwrite: bool = False) -> str:
    """Write a grid store from NetCDF products (the ``h2mv import netcdf`` command).

    Args:
        mapping: YAML file: target grid, period, and per store variable its files,
            source name, unit conversion, time aggregation and regridding (docs/data.md
            "Importing gridded products").
        out: the zarr store to write (atomically, chunk by chunk).
        overwrite: replace an existing store.
    """
    path, spec = read_mapping(mapping, out, overwrite)
    store = netcdf_store(spec, root=path.parent)
    write_store(store, None, out, overwrite=overwrite)
    print(f"wrote {out}: {store.sizes['lat']} × {store.sizes['lon']} cells "
          f"({int(store['mask'].sum())} modelled), {store.sizes['time']} days, variables "
          f"{', '.join(v for v in store.data_vars if v not in ('static', 'mask'))}")
    return str(out)
