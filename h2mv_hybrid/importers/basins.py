"""Lumped basin time series as a point-layout H2MV store (``h2mv import basins``).

Any data set of basins (gauged catchments) comes in through a small YAML mapping that
says where the daily series are, which column is which schema variable and in which
units, and where the static attributes are::

    series:
      files: series/*.csv          # one file per basin; the basin id is the file name
      # table: all_basins.csv      # or one long table, with an id column
      # netcdf: basins.nc          # or one NetCDF with dims (basin, time)
      id: basin                    # the id column (table) or dimension (NetCDF)
      date: date                   # the date column (or the NetCDF's time dimension)
      variables:                   # schema variable: its column and units
        prec: {column: P, units: mm day-1}
        tair: {column: T, units: degC}
        pet:  {column: PET, units: mm day-1}   # optional: Oudin PET from tair otherwise
        q:    {column: Q, units: m3 s-1}       # m3 s-1 needs the basin area
        sca:  {column: [SCA_low, SCA_high], units: "%", weights: [0.7, 0.3]}  # bands
    attributes:                    # optional
      file: attributes.csv         # one row per basin (CSV or Parquet)
      id: basin
      area: area_km2               # km²: for runoff in m3 s-1
      lat: lat                     # optional: spatial folds and Oudin PET need them
      lon: lon
      features: [elev_mean, slope_mean, frac_forest]   # default: every other numeric column

Units are the schema's (``docs/data.md``) or one of :data:`CONVERSIONS` (°C → K;
m³ s⁻¹ → mm day⁻¹ with the basin area; % → fraction); anything else is refused naming
the variable, the expected and the found. Supplied PET is the energy forcing as given;
only without it is Oudin PET computed from temperature, and only then is latitude
required. Static features are stored raw, in their own units: the DataModule z-scores
them over the training basins (so no statistics of test basins enter), the CAMELS preset
(:mod:`h2mv_hybrid.importers.camels`) standardizes over the imported basins as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from h2mv_hybrid.data.pet import oudin_pet
from h2mv_hybrid.data.schema import SPECS, StoreError, annotate, check_store, month_starts
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.importers.mapping import read_mapping
from h2mv_hybrid.options import parse_record
from process_layers.constants import ZERO_CELSIUS_IN_KELVIN

#: Schema variables a basin series may hold.
SERIES_NAMES: tuple[str, ...] = ("prec", "tair", "pet", "q", "sca")
#: Units converted on import: variable → spelling → (function of values and area in km²,
#: what it does). Spellings the schema accepts need no conversion.
CONVERSIONS: dict[str, dict[str, tuple[Callable, str]]] = {
    "tair": {u: (lambda x, a: x + ZERO_CELSIUS_IN_KELVIN, "+ 273.15")
             for u in ("degC", "°C", "C", "deg C", "celsius", "degrees_Celsius")},
    "q": {u: (lambda x, a: x * 86.4 / a, "× 86.4 / area_km2")
          for u in ("m3 s-1", "m3/s", "m^3 s^-1", "m**3 s**-1", "cms")},
    "sca": {u: (lambda x, a: x / 100.0, "/ 100") for u in ("%", "percent")},
}


@dataclass
class Column:
    """One series variable: its column (or NetCDF variable) and units.

    Args:
        column: the column of the source, or several (elevation bands of a snow-cover
            product): their weighted mean over the bands observed that day.
        units: the source's units.
        weights: the bands' weights (their shares of the basin area; default equal).
    """

    column: str | list[str]
    units: str
    weights: list[float] | None = None

    @property
    def columns(self) -> list[str]:
        """The source columns."""
        return [self.column] if isinstance(self.column, str) else list(self.column)


@dataclass
class SeriesSource:
    """Where the daily series are (exactly one of ``files``, ``table``, ``netcdf``).

    Args:
        variables: schema variable → its column and units.
        files: a glob of one file per basin (CSV, optionally gzipped, or Parquet); the
            basin id is the file name up to its first dot.
        table: one long table (CSV or Parquet) with an ``id`` column.
        netcdf: one NetCDF file with dims (``id``, ``date``).
        id: the basin-id column or dimension.
        date: the date column or time dimension.
    """

    variables: dict[str, Column]
    files: str | None = None
    table: str | None = None
    netcdf: str | None = None
    id: str = "basin"
    date: str = "date"


@dataclass
class AttributeSource:
    """The static attribute table, one row per basin.

    Args:
        file: CSV or Parquet.
        id: the basin-id column.
        area: the basin-area column, km² (for runoff in m³ s⁻¹).
        lat: the latitude column, degrees north (spatial folds, Oudin PET).
        lon: the longitude column, degrees east.
        features: the static features (default: every other numeric column).
    """

    file: str
    id: str = "basin"
    area: str | None = None
    lat: str | None = None
    lon: str | None = None
    features: list[str] | None = None


@dataclass
class BasinMapping:
    """A basin data set (see the module docstring).

    Args:
        series: the daily series.
        attributes: the static attributes.
        start: first day of the store (default: the first day every basin covers).
        end: last day of the store (default: the last day every basin covers).
        title: the store's title.
    """

    series: SeriesSource
    attributes: AttributeSource | None = None
    start: str | None = None
    end: str | None = None
    title: str = "basin time series"


# -- reading -------------------------------------------------------------------------------
def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path.name}: expected a file at {path}, found nothing")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _frames_from(src: SeriesSource, root: Path) -> dict[str, pd.DataFrame]:
    """Each basin's rows (indexed by date) with the mapped columns, in source units."""
    given = [k for k in ("files", "table", "netcdf") if getattr(src, k)]
    if len(given) != 1:
        raise StoreError(f"series: expected exactly one of files, table, netcdf, found "
                         f"{', '.join(given) or 'none'}")
    columns = {f"{name}:{i}": col for name, c in src.variables.items()
               for i, col in enumerate(c.columns)}
    if src.netcdf:
        ds = xr.open_dataset(root / src.netcdf)
        for d in (src.id, src.date):
            if d not in ds.dims:
                raise StoreError(f"series.netcdf: expected dimension {d!r}, found dims "
                                 f"{', '.join(map(str, ds.dims))}")
        frames = {}
        for b in ds[src.id].values:
            one = ds.sel({src.id: b}).to_dataframe()
            frames[str(b)] = one.rename_axis(index={src.date: "date"})
    elif src.table:
        table = _read_table(root / src.table)
        frames = {str(b): g.set_index(src.date) for b, g in table.groupby(src.id, sort=False)}
    else:
        paths = sorted(root.glob(src.files))
        if not paths:
            raise FileNotFoundError(f"series.files: expected files matching {src.files} in "
                                    f"{root}, found none")
        frames = {p.name.split(".")[0]: _read_table(p).set_index(src.date) for p in paths}
    out = {}
    for b, df in frames.items():
        missing = [f"{c} ({k.split(':')[0]})" for k, c in columns.items() if c not in df.columns]
        if missing:
            raise StoreError(f"{b}: expected columns {', '.join(missing)} of the mapping, found "
                             f"{', '.join(map(str, df.columns))}")
        df = df[list(columns.values())].rename(columns={v: k for k, v in columns.items()})
        df.index = pd.DatetimeIndex(pd.to_datetime(df.index)).normalize()
        out[b] = df.sort_index()
    return out


def convert(name: str, values: np.ndarray, units: str, area_km2: np.ndarray | None
            ) -> np.ndarray:
    """``values`` [days, basins] of schema variable ``name`` from ``units`` to the schema's."""
    spec = SPECS[name]
    if spec.accepts(units):
        return values
    conversions = CONVERSIONS.get(name, {})
    if units not in conversions:
        valid = [spec.units, *spec.aliases, *conversions]
        raise StoreError(f"{name}: expected units among {', '.join(repr(u) for u in valid)}, "
                         f"found {units!r}")
    if name == "q" and area_km2 is None:
        raise StoreError(f"q: expected the basin areas (attributes.area, km²) to convert "
                         f"{units!r} to mm day-1, found none")
    fn, _ = conversions[units]
    return fn(values, area_km2)


def band_mean(bands: np.ndarray, weights: list[float] | None, name: str) -> np.ndarray:
    """Weighted mean [days, basins] of bands [band, days, basins] over those observed.

    A band without a value on a day (a cloud) leaves the mean over the others, reweighted;
    a day without any is NaN.
    """
    w = np.ones(len(bands)) if weights is None else np.asarray(weights, float)
    if w.shape != (len(bands),) or (w < 0).any() or w.sum() <= 0:
        raise StoreError(f"{name}.weights: expected {len(bands)} non-negative weights, found "
                         f"{weights}")
    seen = np.isfinite(bands)
    total = (np.where(seen, bands, 0.0) * w[:, None, None]).sum(0)
    norm = (seen * w[:, None, None]).sum(0)
    return np.where(norm > 0, total / np.where(norm > 0, norm, 1.0), np.nan)


def align_period(frames: dict[str, pd.DataFrame], start: str | None, end: str | None
                 ) -> pd.DatetimeIndex:
    """The daily period every basin covers (or [start, end]), checked basin by basin."""
    first = max(df.index[0] for df in frames.values())
    last = min(df.index[-1] for df in frames.values())
    days = pd.date_range(start or first, end or last, freq="D")
    if len(days) < 2:
        raise StoreError(f"start, end: expected a period of at least 2 days, found {start} … "
                         f"{end}")
    for b, df in frames.items():
        if df.index[0] > days[0] or df.index[-1] < days[-1]:
            raise StoreError(f"{b}: expected series over {days[0].date()} … "
                             f"{days[-1].date()}, found {df.index[0].date()} … "
                             f"{df.index[-1].date()}")
        span = df.loc[days[0]:days[-1]]
        if len(span) != len(days) or not (span.index == days).all():
            raise StoreError(f"{b}: expected consecutive daily dates, found "
                             f"{len(span)} rows for {len(days)} days")
    return days


# -- the store -----------------------------------------------------------------------------
def point_store(series: dict[str, np.ndarray], days: pd.DatetimeIndex, ids: list[str],
                static: pd.DataFrame, lat: np.ndarray, lon: np.ndarray,
                pet_method: str, source: str, title: str) -> xr.Dataset:
    """A point store of basins from schema-unit series [days, basins] and static features.

    ``series`` holds ``prec``, ``tair`` (K), ``pet`` and optionally ``q``, ``sca``;
    ``static`` has one row per basin (in ``ids`` order) and one column per feature.
    """
    dims = ("time", "cell")
    data = {name: (dims, v.astype(np.float32)) for name, v in series.items()}
    data["static"] = (("feature", "cell"), static.to_numpy(np.float32).T)
    data["mask"] = (("cell",), np.ones(len(ids), bool))
    store = xr.Dataset(data, coords={
        "time": days, "month": month_starts(days), "feature": list(static.columns),
        "lat": ("cell", lat), "lon": ("cell", lon),
        "gauge_id": ("cell", np.array(ids, dtype="U"))})
    for name in store.data_vars:
        if name not in ("q", "sca"):
            annotate(store[name], name)
    if "q" in store:
        store["q"].attrs.update(units="mm day-1", long_name="observed streamflow (daily)")
    if "sca" in store:
        store["sca"].attrs.update(units="1", long_name="snow-covered fraction of the basin")
    store["pet"].attrs["method"] = pet_method
    store.attrs.update(source=source, title=title)
    return store


def basin_store(mapping: BasinMapping, root: str | os.PathLike = ".",
                basins: list[str] | None = None) -> tuple[xr.Dataset, xr.Dataset | None]:
    """The store and its ``attributes`` group (every numeric attribute), in memory."""
    root = Path(root)
    src = mapping.series
    unknown = [k for k in src.variables if k not in SERIES_NAMES]
    needed = [k for k in ("prec", "tair") if k not in src.variables]
    if unknown or needed:
        raise StoreError(f"series.variables: expected prec, tair (and optionally pet, q, sca), "
                         f"found {', '.join(src.variables)}")
    frames = _frames_from(src, root)
    ids = list(basins) if basins else list(frames)
    absent = [b for b in ids if b not in frames]
    if absent:
        raise StoreError(f"basins: expected ids of the series, found {', '.join(absent)}")
    frames = {b: frames[b] for b in ids}
    days = align_period(frames, mapping.start, mapping.end)
    attrs = _attributes(mapping.attributes, root, ids)
    area = _column(attrs, mapping.attributes, "area")
    lat = _column(attrs, mapping.attributes, "lat")
    lon = _column(attrs, mapping.attributes, "lon")
    series = {}
    for name, col in src.variables.items():
        bands = np.stack([np.stack([frames[b].loc[days[0]:days[-1], f"{name}:{i}"].to_numpy(
            float) for b in ids], 1) for i in range(len(col.columns))])
        raw = bands[0] if len(bands) == 1 else band_mean(bands, col.weights, name)
        series[name] = convert(name, raw, col.units, area)
    if "pet" in series:
        method = "supplied with the data set"
    else:
        if lat is None:
            raise StoreError("pet: expected PET among the series, or basin latitudes "
                             "(attributes.lat) for Oudin PET, found neither")
        series["pet"] = oudin_pet(series["tair"] - ZERO_CELSIUS_IN_KELVIN, lat[None, :],
                                  days.day_of_year.to_numpy()[:, None])
        method = "Oudin et al. 2005 (temperature, basin latitude)"
    static = _features(attrs, mapping.attributes, ids)
    nan = np.full(len(ids), np.nan)
    store = point_store(series, days, ids, static, nan if lat is None else lat,
                        nan if lon is None else lon, method, "h2mv_hybrid.importers.basins",
                        mapping.title)
    targets = [t for t in ("q", "sca") if t in store]
    check_store(store, constraints=targets or None)
    group = None
    if attrs is not None:
        group = xr.Dataset({c: ("cell", attrs[c].to_numpy(float))
                            for c in attrs.select_dtypes("number").columns},
                           coords={"gauge_id": ("cell", np.array(ids, dtype="U"))})
    return store, group


def _attributes(spec: AttributeSource | None, root: Path, ids: list[str]
                ) -> pd.DataFrame | None:
    if spec is None:
        return None
    table = _read_table(root / spec.file)
    if spec.id not in table.columns:
        raise StoreError(f"attributes.id: expected column {spec.id!r} in {spec.file}, found "
                         f"{', '.join(map(str, table.columns))}")
    table = table.assign(**{spec.id: table[spec.id].astype(str)}).set_index(spec.id)
    missing = [b for b in ids if b not in table.index]
    if missing:
        raise StoreError(f"{spec.file}: expected a row for every basin, found none for "
                         f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    return table.loc[ids]


def _column(attrs: pd.DataFrame | None, spec: AttributeSource | None, what: str
            ) -> np.ndarray | None:
    name = getattr(spec, what, None) if spec is not None else None
    if name is None:
        return None
    if name not in attrs.columns:
        raise StoreError(f"attributes.{what}: expected column {name!r}, found "
                         f"{', '.join(map(str, attrs.columns))}")
    values = attrs[name].to_numpy(float)
    if not np.isfinite(values).all():
        raise StoreError(f"attributes.{what}: expected {name} for every basin, found none for "
                         f"{', '.join(attrs.index[~np.isfinite(values)])}")
    return values


def _features(attrs: pd.DataFrame | None, spec: AttributeSource | None, ids: list[str]
              ) -> pd.DataFrame:
    """The static features, raw (a constant one without attributes: the model needs one)."""
    if attrs is None:
        return pd.DataFrame({"constant": np.ones(len(ids))}, index=ids)
    skip = {getattr(spec, k) for k in ("lat", "lon")} - {None}
    names = spec.features or [c for c in attrs.select_dtypes("number").columns
                              if c not in skip]
    unknown = [n for n in names if n not in attrs.columns]
    if unknown:
        raise StoreError(f"attributes.features: expected columns of {spec.file}, found unknown "
                         f"{', '.join(unknown)}; valid: {', '.join(map(str, attrs.columns))}")
    raw = attrs[names].astype(float)
    if raw.isna().any().any():
        col = raw.columns[raw.isna().any()][0]
        raise StoreError(f"attributes.features: expected {col} for every basin, found none "
                         f"for {', '.join(raw.index[raw[col].isna()])}; leave it out")
    return raw


def import_basins(mapping: str, out: str, basins: list[str] | None = None,
                  features: list[str] | None = None, overwrite: bool = False) -> str:
    """Write a point store of basins described by a YAML mapping (``h2mv import basins``).

    Args:
        mapping: the YAML mapping (see docs/data.md, "Basin time series"); its paths are
            relative to its own folder.
        out: the zarr store to write (atomically).
        basins: basin ids to import (default: every basin of the series).
        features: the static features (default: the mapping's ``attributes.features``,
            else every numeric attribute column but the coordinates).
        overwrite: replace an existing store.
    """
    path, raw = read_mapping(mapping, out, overwrite)
    spec = parse_record(BasinMapping, raw, str(path))
    if features is not None:
        if spec.attributes is None:
            raise StoreError("features: expected an attribute table in the mapping "
                             "(attributes.file), found none")
        spec.attributes.features = list(features)
    store, group = basin_store(spec, path.parent, basins)
    written = write_store(store, None, out, overwrite=overwrite,
                          groups={"attributes": group} if group is not None else None)
    days = store.indexes["time"]
    observed = ", ".join(f"{t} observed on {float(np.isfinite(store[t]).mean()):.1%}"
                         for t in ("q", "sca") if t in store)
    print(f"wrote {written}: {store.sizes['cell']} basins, {store.sizes['time']} days "
          f"({days[0].date()} … {days[-1].date()}), {store.sizes['feature']} static features, "
          f"PET {store['pet'].attrs['method']}; {observed or 'no observations'} of basin-days")
    return str(written)
