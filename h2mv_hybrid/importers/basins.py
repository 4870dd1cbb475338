"""Lumped basin time series as a point-layout H2MV store (``h2mv import basins``).

Any data set of basins (gauged catchments) comes in through a small YAML mapping that
says where the daily series are, which column is which schema variable and in which
units, and where the static attributes are::

    series:
      files: series/*.csv          # one file per basin; the basin id is the file name
      # table: all_basins.csv      # or one long table, with an id column
      # netcdf: basins.nc          # or one NetCDF with dims (basin, time)
      id: basin                    # the id column (table) or dimension (NetCDF)
      date: date                   # the date column (or [year, month, day] columns, or
                                   # the NetCDF's time dimension)
      variables:                   # schema variable: its column and units
        prec: {column: P, units: mm day-1}
        tair: {column: T, units: degC}
        pet:  {column: PET, units: mm day-1}   # optional: Oudin PET from tair otherwise
        rn:   {column: [SNR, TNR], units: W m-2, combine: sum}   # optional: net radiation
        q:    {column: Q, units: m3 s-1}       # m3 s-1, ft3 s-1, l s-1 need the basin area
        sca:  {column: [SCA_low, SCA_high], units: "%", weights: [0.7, 0.3]}  # bands
    attributes:                    # optional
      file: attributes.csv         # one row per basin (CSV or Parquet), or a list of tables
      id: basin
      area: area_km2               # km²: for runoff in volume per time
      lat: lat                     # optional: spatial folds and Oudin PET need them
      lon: lon
      features: [elev_mean, slope_mean, frac_forest]   # default: every other numeric column

Data sets as hydrologists get them split forcing and discharge into separate files, in
text layouts of their own: ``series`` may then be a list of sources, each with its
``variables``, merged per basin on the date; each source says how its files are laid out
(``sep``, ``header``, ``names``, ``missing``, ``id_pattern``: :class:`SeriesSource`). The
period is the one every basin's forcing covers; discharge and snow cover are placed on
it, NaN on days their source lacks (a gauge that starts later, a gap in its record).

Units are the schema's (``docs/data.md``) or one of :data:`CONVERSIONS` (°C → K;
m³ s⁻¹, ft³ s⁻¹ and l s⁻¹ → mm day⁻¹ with the basin area; % → fraction); anything else is
refused naming the variable, the expected and the found. Net radiation (``rn``), where a
data set has it, is the bucket's energy forcing, as in the H2MV paper; without it PET
stands in. Supplied PET is used as given; only without it is Oudin PET computed from
temperature, and only then is latitude required (the store keeps PET beside net radiation
for GR4J and the catchment report). Static features are stored raw, in their own units:
the DataModule z-scores them over the training basins (so no statistics of test basins
enter), the CAMELS preset (:mod:`h2mv_hybrid.importers.camels`) standardizes over the
imported basins as before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from h2mv_hybrid.data.pet import REFERENCE_ALBEDO, fao56_net_radiation, oudin_pet
from h2mv_hybrid.data.schema import SPECS, StoreError, annotate, check_store, month_starts
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.importers.mapping import read_mapping
from h2mv_hybrid.options import parse_record
from process_layers.constants import ZERO_CELSIUS_IN_KELVIN

#: Schema variables a basin series may hold.
SERIES_NAMES: tuple[str, ...] = ("prec", "tair", "pet", "rn", "q", "sca")
#: One cubic foot, m³ (0.3048³, exact).
CUBIC_FOOT_M3: float = 0.3048 ** 3
#: Forcing variables: every basin has them on every day of the store.
FORCING_SERIES: tuple[str, ...] = ("prec", "tair", "pet", "rn")
#: Units converted on import: variable → spelling → (function of values and area in km²,
#: what it does). Spellings the schema accepts need no conversion.
CONVERSIONS: dict[str, dict[str, tuple[Callable, str]]] = {
    "tair": {u: (lambda x, a: x + ZERO_CELSIUS_IN_KELVIN, "+ 273.15")
             for u in ("degC", "°C", "C", "deg C", "celsius", "degrees_Celsius")},
    "q": {**{u: (lambda x, a: x * 86.4 / a, "× 86.4 / area_km2")
             for u in ("m3 s-1", "m3/s", "m^3 s^-1", "m**3 s**-1", "cms")},
          # USGS and CAMELS-US discharge: cubic feet per second (1 ft = 0.3048 m)
          **{u: (lambda x, a: x * CUBIC_FOOT_M3 * 86.4 / a, "× 0.0283168 × 86.4 / area_km2")
             for u in ("ft3 s-1", "ft3/s", "ft^3 s^-1", "ft**3 s**-1", "cfs")},
          **{u: (lambda x, a: x * 1e-3 * 86.4 / a, "× 0.0864 / area_km2")
             for u in ("l s-1", "l/s", "L s-1", "L/s")}},
    "sca": {u: (lambda x, a: x / 100.0, "/ 100") for u in ("%", "percent")},
    # net radiation as daily sums (FAO-56 tables, reanalyses' accumulations) → daily mean
    "rn": {**{u: (lambda x, a: x * 1e6 / 86400.0, "× 10⁶ / 86 400")
              for u in ("MJ m-2 day-1", "MJ m-2 d-1", "MJ/m2/day", "MJ m**-2 day**-1")},
           **{u: (lambda x, a: x / 86400.0, "/ 86 400") for u in ("J m-2", "J/m2", "J m**-2")}},
}


@dataclass
class Column:
    """One series variable: its column (or NetCDF variable) and units.

    Args:
        column: the column of the source, or several: their weighted mean over those
            observed that day (elevation bands of a snow-cover product, tmax and tmin), or
            their sum (``combine: sum``: net shortwave and net longwave radiation).
        units: the source's units.
        weights: the columns' weights in the mean (bands' shares of the basin area;
            default equal).
        combine: ``mean`` or ``sum`` of several columns (a sum is NaN where any is).
    """

    column: str | list[str]
    units: str
    weights: list[float] | None = None
    combine: Literal["mean", "sum"] = "mean"

    @property
    def columns(self) -> list[str]:
        """The source columns."""
        return [self.column] if isinstance(self.column, str) else list(self.column)


@dataclass
class NetRadiation:
    """Net radiation from incoming shortwave, as the energy forcing ``rn``.

    FAO-56 (Allen et al. 1998, eqs. 37–40: :func:`h2mv_hybrid.data.pet.fao56_net_radiation`).

    Args:
        shortwave: incoming shortwave radiation: its column and units (``W m-2``, a daily
            mean or, with ``daylight``, a mean over the daylight hours; or ``MJ m-2
            day-1``).
        tmax: the column of daily maximum air temperature, °C.
        tmin: the column of daily minimum air temperature, °C.
        vapour_pressure: actual vapour pressure: its column and units (``Pa``, ``hPa``,
            ``kPa``).
        daylight: the column of day length, s, where the shortwave is a mean over the
            daylight hours (Daymet's srad): the day's sum is then srad · dayl.
        elevation: the attribute column of the basin's mean elevation, m (eq. 37;
            default 0 m).
        albedo: the surface albedo (FAO-56's grass reference: 0.23).
    """

    shortwave: Column
    tmax: str
    tmin: str
    vapour_pressure: Column
    daylight: str | None = None
    elevation: str | None = None
    albedo: float = REFERENCE_ALBEDO

    def columns(self) -> dict[str, str]:
        """Internal name → source column of every column it reads."""
        cols = {"fao56_shortwave:0": self.shortwave.column, "fao56_tmax:0": self.tmax,
                "fao56_tmin:0": self.tmin, "fao56_vapour_pressure:0": self.vapour_pressure.column}
        if self.daylight:
            cols["fao56_daylight:0"] = self.daylight
        return cols


@dataclass
class SeriesSource:
    r"""Where daily series are, and how their text is laid out.

    Exactly one of ``files``, ``table``, ``netcdf``.

    Args:
        variables: schema variable → its column and units.
        files: a glob of one file per basin (CSV or other delimited text, optionally
            gzipped, or Parquet); the basin id is the file name up to its first dot, or
            what ``id_pattern`` finds in it.
        table: one long table (CSV or Parquet) with an ``id`` column.
        netcdf: one NetCDF file with dims (``id``, ``date``).
        id: the basin-id column or dimension.
        date: the date column or time dimension, or the [year, month, day] columns, or the
            [year, day of year] columns (Daymet's single-pixel files).
        id_pattern: a regular expression searched in each file name: its first group (or
            the whole match) is the basin id (``"^(\d{8})_"`` for
            ``01013500_lump_cida_forcing_leap.txt``).
        sep: the column delimiter of text files: ``","`` (default), ``";"``, ``"\t"``, or
            ``whitespace`` (runs of spaces and tabs).
        header: the line (from 0) that holds the column names; the lines above it are
            skipped (CAMELS-US forcing files: 3, after latitude, elevation and area).
        names: the column names of files without a header line (``header`` lines are
            then skipped).
        missing: values that mean "no observation" (``-999``): read as NaN.
        net_radiation: net radiation computed from this source's shortwave, temperature
            and vapour-pressure columns (:class:`NetRadiation`), as ``rn``.
    """

    variables: dict[str, Column]
    files: str | None = None
    table: str | None = None
    netcdf: str | None = None
    id: str = "basin"
    date: str | list[str] = "date"
    id_pattern: str | None = None
    sep: str | None = None
    header: int = 0
    names: list[str] | None = None
    missing: list[float] | None = None
    net_radiation: NetRadiation | None = None


@dataclass
class AttributeSource:
    """The static attribute table, one row per basin.

    Args:
        file: CSV or Parquet, or a list of them (CAMELS' tables by theme), joined on
            ``id``; an entry may be a glob, whose tables' rows are stacked (Caravan's one
            table per source data set). A column in two tables keeps the first's name;
            where the later table's values differ they stay as ``<column>_<k>``, k the
            later table's place in the list (from 0).
        id: the basin-id column (read as text: leading zeros of gauge ids are kept).
        area: the basin-area column, km² (for runoff in volume per time).
        lat: the latitude column, degrees north (spatial folds, Oudin PET).
        lon: the longitude column, degrees east.
        features: the static features (default: every other numeric column).
        sep: the column delimiter of text tables (``";"`` for CAMELS' tables).
    """

    file: str | list[str]
    id: str = "basin"
    area: str | None = None
    lat: str | None = None
    lon: str | None = None
    features: list[str] | None = None
    sep: str | None = None


@dataclass
class BasinMapping:
    """A basin data set (see the module docstring).

    Args:
        series: the daily series: one source, or several (forcing and discharge in files
            of their own) merged per basin on the date.
        attributes: the static attributes.
        start: first day of the store (default: the first day every basin's forcing
            covers).
        end: last day of the store (default: the last day every basin's forcing covers).
        title: the store's title.
        fill_gaps: forcing gaps of up to this many consecutive days (rows absent, or values
            missing) are interpolated linearly in time, and counted in the printout and
            the store's ``forcing_values_filled``; longer gaps are refused. Daymet's
            365-day calendar, for one, leaves out 31 December of leap years. Discharge
            and snow cover are never filled. 0 (default): nothing is filled.
    """

    series: SeriesSource | list[SeriesSource]
    attributes: AttributeSource | None = None
    start: str | None = None
    end: str | None = None
    title: str = "basin time series"
    fill_gaps: int = 0

    @property
    def sources(self) -> list[SeriesSource]:
        """The series sources, as a list."""
        return self.series if isinstance(self.series, list) else [self.series]


# -- reading -------------------------------------------------------------------------------
def _read_table(path: Path, sep: str | None = None, header: int = 0,
                names: list[str] | None = None, text: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV (or other delimited text) or Parquet table; ``text`` columns read as strings."""
    if not path.exists():
        raise FileNotFoundError(f"{path.name}: expected a file at {path}, found nothing")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    kw: dict = {"sep": r"\s+" if sep == "whitespace" else (sep or ","),
                "dtype": {c: str for c in text} or None}
    if names:
        kw.update(header=None, names=names, skiprows=header)
    else:
        kw["header"] = header
    try:
        return pd.read_csv(path, **kw)
    except (ValueError, pd.errors.ParserError) as err:
        raise StoreError(f"{path.name}: expected a table delimited by {sep or ','!r} with "
                         f"its column names on line {header}, found: {str(err).strip()}"
                         ) from None


def _dates(df: pd.DataFrame, date: str | list[str], where: str) -> pd.DatetimeIndex:
    """The days of ``df``'s rows, from one date column or from year, month, day columns."""
    cols = [date] if isinstance(date, str) else list(date)
    if len(cols) not in (1, 2, 3):
        raise StoreError(f"{where}: date: expected one column, two (year, day of year) or "
                         f"three (year, month, day), found {cols}")
    absent = [c for c in cols if c not in df.columns]
    if absent:
        raise StoreError(f"{where}: expected the date column(s) {', '.join(cols)}, found "
                         f"{', '.join(map(str, df.columns))}")
    try:
        if len(cols) == 1:
            days = pd.to_datetime(df[cols[0]])
        elif len(cols) == 2:
            code = df[cols[0]].astype(int) * 1000 + df[cols[1]].astype(int)
            days = pd.to_datetime(code.astype(str), format="%Y%j")
        else:
            days = pd.to_datetime(pd.DataFrame({"year": df[cols[0]], "month": df[cols[1]],
                                                "day": df[cols[2]]}))
    except (ValueError, TypeError) as err:
        raise StoreError(f"{where}: expected dates in {', '.join(cols)}, found: {err}"
                         ) from None
    return pd.DatetimeIndex(days).normalize()


def _basin_id(path: Path, pattern: str | None) -> str:
    if pattern is None:
        return path.name.split(".")[0]
    found = re.search(pattern, path.name)
    if found is None:
        raise StoreError(f"{path.name}: expected a basin id matching id_pattern {pattern!r} "
                         f"in the file name, found none")
    return found.group(1) if found.groups() else found.group(0)


def _frames_from(src: SeriesSource, root: Path, where: str = "series",
                 wanted: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Each basin's rows (indexed by date) with the mapped columns, in source units.

    With ``wanted`` (basin ids), files of other basins are not read: a data set of
    thousands of basins (Caravan) imports one of them in a second.
    """
    given = [k for k in ("files", "table", "netcdf") if getattr(src, k)]
    if len(given) != 1:
        raise StoreError(f"{where}: expected exactly one of files, table, netcdf, found "
                         f"{', '.join(given) or 'none'}")
    columns = {f"{name}:{i}": col for name, c in src.variables.items()
               for i, col in enumerate(c.columns)}
    if src.net_radiation is not None:
        columns.update(src.net_radiation.columns())
    layout = {"sep": src.sep, "header": src.header, "names": src.names}
    if src.netcdf:
        if not isinstance(src.date, str):
            raise StoreError(f"{where}.date: expected the NetCDF's time dimension, found "
                             f"{src.date}")
        ds = xr.open_dataset(root / src.netcdf)
        for d in (src.id, src.date):
            if d not in ds.dims:
                raise StoreError(f"{where}.netcdf: expected dimension {d!r}, found dims "
                                 f"{', '.join(map(str, ds.dims))}")
        frames = {}
        for b in ds[src.id].values:
            one = ds.sel({src.id: b}).to_dataframe()
            frames[str(b)] = one.rename_axis(index={src.date: "date"})
    elif src.table:
        table = _read_table(root / src.table, **layout, text=(src.id,))
        if src.id not in table.columns:
            raise StoreError(f"{src.table}: expected the id column {src.id!r}, found "
                             f"{', '.join(map(str, table.columns))}")
        table.index = _dates(table, src.date, src.table)
        frames = {str(b): g for b, g in table.groupby(src.id, sort=False)}
    else:
        paths = sorted(root.glob(src.files))
        if not paths:
            raise FileNotFoundError(f"{where}.files: expected files matching {src.files} in "
                                    f"{root}, found none")
        frames, seen = {}, set()
        for p in paths:
            b = _basin_id(p, src.id_pattern)
            if b in seen:
                raise StoreError(f"{where}.files: expected one file per basin, found two for "
                                 f"{b} ({p.name})")
            seen.add(b)
            if wanted is not None and b not in wanted:
                continue
            df = _read_table(p, **layout)
            df.index = _dates(df, src.date, p.name)
            frames[b] = df
    out = {}
    for b, df in frames.items():
        missing = [f"{c} ({k.split(':')[0]})" for k, c in columns.items() if c not in df.columns]
        if missing:
            raise StoreError(f"{b}: expected columns {', '.join(missing)} of the mapping, found "
                             f"{', '.join(map(str, df.columns))}")
        # one column may feed several names (tmax: tair's mean and net radiation's longwave)
        df = pd.DataFrame({k: df[c] for k, c in columns.items()}, index=df.index)
        df.index = pd.DatetimeIndex(pd.to_datetime(df.index)).normalize()
        if src.missing:
            df = df.mask(df.isin(src.missing))
        if df.index.has_duplicates:
            day = df.index[df.index.duplicated()][0].date()
            raise StoreError(f"{b}: expected one row per day in {where}, found {day} twice")
        out[b] = df.sort_index()
    return out


def filled_gaps(df: pd.DataFrame, max_days: int, columns: list[str]
                ) -> tuple[pd.DataFrame, int]:
    """``df`` on every day from its first row to its last, gaps filled, and their count.

    Runs of at most ``max_days`` missing days of each of ``columns`` (rows absent, or NaN)
    between two values are interpolated linearly in time; longer runs and the ends stay
    NaN, and so do the other columns (discharge, snow cover) wherever they are missing.
    """
    full = df.reindex(pd.date_range(df.index[0], df.index[-1], freq="D"))
    out, filled = full.copy(), 0
    for c in columns:
        miss = full[c].isna().to_numpy()
        if not miss.any():
            continue
        run = pd.Series(miss).groupby(np.cumsum(~miss)).transform("sum").to_numpy()
        line = full[c].interpolate(method="time", limit_area="inside").to_numpy()
        fill = miss & (run <= max_days) & np.isfinite(line)
        out[c] = np.where(fill, line, full[c].to_numpy())
        filled += int(fill.sum())
    return out, filled


def merged_series(sources: list[SeriesSource], root: Path, basins: list[str] | None,
                  start: str | None, end: str | None, fill_gaps: int = 0
                  ) -> tuple[dict[str, pd.DataFrame], pd.DatetimeIndex, int]:
    """Each basin's mapped columns from every source on one daily period.

    Returns them with the period and the number of forcing values filled. The period is
    the one every basin's forcing covers (or [start, end]); forcing rows must be
    consecutive there, after gaps of up to ``fill_gaps`` days are filled
    (:func:`filled_gaps`). Sources without forcing (discharge, snow cover) are placed on
    the period: NaN where they have no row.
    """
    where = [f"series[{i}]" if len(sources) > 1 else "series" for i in range(len(sources))]
    per_source = [_frames_from(s, root, w, basins)
                  for s, w in zip(sources, where, strict=True)]
    ids = list(basins) if basins else list(per_source[0])
    for frames, w in zip(per_source, where, strict=True):
        absent = [b for b in ids if b not in frames]
        if absent:
            raise StoreError(f"basins: expected ids of the series ({w}), found "
                             f"{', '.join(absent[:5])}{' …' if len(absent) > 5 else ''} "
                             f"without a series there")
    forcing = [i for i, s in enumerate(sources)
               if set(s.variables) & set(FORCING_SERIES) or s.net_radiation is not None]
    filled = 0
    if fill_gaps > 0:
        for i in forcing:
            for b in ids:
                frame = per_source[i][b]
                names = [c for c in frame.columns
                         if c.split(":")[0] in FORCING_SERIES or c.startswith("fao56_")]
                per_source[i][b], n = filled_gaps(frame, fill_gaps, names)
                filled += n
    joined = {b: pd.concat([per_source[i][b] for i in forcing], axis=1, join="inner")
              for b in ids}
    days = align_period(joined, start, end)
    out = {}
    for b in ids:
        parts = [joined[b].loc[days[0]:days[-1]]]
        parts += [per_source[i][b].reindex(days) for i in range(len(sources))
                  if i not in forcing]
        out[b] = pd.concat(parts, axis=1)
    return out, days, filled


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


def band_mean(bands: np.ndarray, weights: list[float] | None, name: str,
              complete: bool = False) -> np.ndarray:
    """Weighted mean [days, basins] of bands [band, days, basins] over those observed.

    A band without a value on a day (a cloud) leaves the mean over the others, reweighted;
    a day without any is NaN. With ``complete`` (forcing: the mean of tmax and tmin) a day
    that lacks any column is NaN, for the store check to refuse, not a mean of the rest.
    """
    w = np.ones(len(bands)) if weights is None else np.asarray(weights, float)
    if w.shape != (len(bands),) or (w < 0).any() or w.sum() <= 0:
        raise StoreError(f"{name}.weights: expected {len(bands)} non-negative weights, found "
                         f"{weights}")
    seen = np.isfinite(bands)
    if complete:
        seen = np.broadcast_to(seen.all(0), seen.shape)
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

    ``series`` holds ``prec``, ``tair`` (K), ``pet`` and optionally ``rn``, ``q``, ``sca``;
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
    variables: dict[str, Column] = {}
    for i, src in enumerate(mapping.sources):
        twice = [k for k in src.variables if k in variables]
        if twice:
            raise StoreError(f"series[{i}].variables: expected each variable from one source, "
                             f"found {', '.join(twice)} mapped by an earlier one as well")
        variables.update(src.variables)
    unknown = [k for k in variables if k not in SERIES_NAMES]
    needed = [k for k in ("prec", "tair") if k not in variables]
    if unknown or needed:
        raise StoreError(f"series.variables: expected prec, tair (and optionally pet, rn, q, "
                         f"sca), found {', '.join(variables)}")
    derived = [s.net_radiation for s in mapping.sources if s.net_radiation is not None]
    if len(derived) > 1 or (derived and "rn" in variables):
        raise StoreError("net_radiation: expected net radiation from one place (one source's "
                         "net_radiation, or rn among the variables), found "
                         f"{len(derived) + ('rn' in variables)}")
    if mapping.fill_gaps < 0:
        raise StoreError(f"fill_gaps: expected a number of days ≥ 0, found {mapping.fill_gaps}")
    frames, days, filled = merged_series(mapping.sources, root, basins, mapping.start,
                                         mapping.end, mapping.fill_gaps)
    ids = list(frames)
    attrs = _attributes(mapping.attributes, root, ids)
    area = _column(attrs, mapping.attributes, "area")
    lat = _column(attrs, mapping.attributes, "lat")
    lon = _column(attrs, mapping.attributes, "lon")
    series = {}
    for name, col in variables.items():
        bands = np.stack([stacked(frames, ids, f"{name}:{i}") for i in range(len(col.columns))])
        if len(bands) == 1:
            raw = bands[0]
        elif col.combine == "sum":
            if col.weights is not None:
                raise StoreError(f"{name}: expected no weights for combine: sum, found "
                                 f"{col.weights}")
            raw = bands.sum(0)
        else:
            raw = band_mean(bands, col.weights, name, complete=name in FORCING_SERIES)
        series[name] = convert(name, raw, col.units, area)
    if derived:
        series["rn"] = _fao56_rn(derived[0], frames, ids, days, attrs, lat)
    for name in (n for n in FORCING_SERIES if n in series):
        gaps = ~np.isfinite(series[name])
        if gaps.any():
            day, cell = np.argwhere(gaps)[0]
            raise StoreError(f"{name}: expected complete forcing, found {int(gaps.sum())} "
                             f"missing basin-days (first {ids[cell]} on {days[day].date()}); "
                             f"fill them (fill_gaps: days, for short gaps) or shorten the "
                             f"period (start, end)")
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
    if "rn" in store:
        store["rn"].attrs["method"] = (
            "FAO-56 (Allen et al. 1998, eqs. 37-40) from incoming shortwave" if derived
            else "supplied with the data set")
    if mapping.fill_gaps:
        store.attrs.update(forcing_values_filled=filled,
                           forcing_gaps_filled=f"up to {mapping.fill_gaps} days, linearly")
    targets = [t for t in ("q", "sca") if t in store]
    check_store(store, constraints=targets or None)
    group = None
    if attrs is not None:
        group = xr.Dataset({c: ("cell", attrs[c].to_numpy(float))
                            for c in attrs.select_dtypes("number").columns},
                           coords={"gauge_id": ("cell", np.array(ids, dtype="U"))})
    return store, group


#: Vapour-pressure units → factor to kPa.
VAPOUR_PRESSURE_KPA: dict[str, float] = {"kPa": 1.0, "hPa": 0.1, "mbar": 0.1, "Pa": 1e-3}
#: Daily sums of shortwave in MJ m⁻² day⁻¹.
MJ_PER_DAY = ("MJ m-2 day-1", "MJ m-2 d-1", "MJ/m2/day", "MJ m**-2 day**-1")


def stacked(frames: dict[str, pd.DataFrame], ids: list[str], key: str) -> np.ndarray:
    """Column ``key`` of every basin's frame (:func:`merged_series`: one period) [days, basins]."""
    return np.stack([frames[b][key].to_numpy(float) for b in ids], 1)


def _fao56_rn(spec: NetRadiation, frames: dict[str, pd.DataFrame], ids: list[str],
              days: pd.DatetimeIndex, attrs: pd.DataFrame | None, lat: np.ndarray | None
              ) -> np.ndarray:
    """Net radiation [days, basins], W m⁻², from a source's shortwave columns (FAO-56)."""
    col = lambda key: stacked(frames, ids, key)  # noqa: E731
    if lat is None:
        raise StoreError("net_radiation: expected basin latitudes (attributes.lat) for the "
                         "clear-sky radiation, found none")
    units = spec.shortwave.units
    sw = col("fao56_shortwave:0")
    if units in MJ_PER_DAY:
        if spec.daylight:
            raise StoreError(f"net_radiation.daylight: expected none with a daily sum "
                             f"({units}), found {spec.daylight}")
        rs = sw
    elif SPECS["rn"].accepts(units):  # W m⁻²: over the day, or over its daylight hours
        rs = sw * (col("fao56_daylight:0") if spec.daylight else 86400.0) / 1e6
    else:
        raise StoreError(f"net_radiation.shortwave: expected units among 'W m-2', "
                         f"{', '.join(repr(u) for u in MJ_PER_DAY)}, found {units!r}")
    vp_units = spec.vapour_pressure.units
    if vp_units not in VAPOUR_PRESSURE_KPA:
        raise StoreError(f"net_radiation.vapour_pressure: expected units among "
                         f"{', '.join(VAPOUR_PRESSURE_KPA)}, found {vp_units!r}")
    ea = col("fao56_vapour_pressure:0") * VAPOUR_PRESSURE_KPA[vp_units]
    z = 0.0
    if spec.elevation is not None:
        if attrs is None or spec.elevation not in attrs.columns:
            raise StoreError(f"net_radiation.elevation: expected the attribute column "
                             f"{spec.elevation!r}, found "
                             f"{'no attributes' if attrs is None else ', '.join(attrs.columns)}")
        z = attrs[spec.elevation].to_numpy(float)[None, :]
    rn = fao56_net_radiation(rs, col("fao56_tmax:0"), col("fao56_tmin:0"), ea, lat[None, :],
                             days.day_of_year.to_numpy()[:, None], z, spec.albedo)
    return rn * 1e6 / 86400.0  # MJ m⁻² day⁻¹ → W m⁻²


def _attribute_table(root: Path, name: str, spec: AttributeSource) -> pd.DataFrame:
    """One attribute table, or every table a glob matches with their rows stacked.

    Caravan, for one, writes one table per source data set and kind of attribute.
    """
    if not any(c in name for c in "*?["):
        return _read_table(root / name, sep=spec.sep, text=(spec.id,))
    paths = sorted(root.glob(name))
    if not paths:
        raise FileNotFoundError(f"attributes.file: expected tables matching {name} in {root}, "
                                f"found none")
    return pd.concat([_read_table(p, sep=spec.sep, text=(spec.id,)) for p in paths],
                     ignore_index=True)


def _attributes(spec: AttributeSource | None, root: Path, ids: list[str]
                ) -> pd.DataFrame | None:
    if spec is None:
        return None
    files = [spec.file] if isinstance(spec.file, str) else list(spec.file)
    parts = []
    for k, name in enumerate(files):
        table = _attribute_table(root, name, spec)
        if spec.id not in table.columns:
            raise StoreError(f"attributes.id: expected column {spec.id!r} in {name}, found "
                             f"{', '.join(map(str, table.columns))}")
        table = table.assign(**{spec.id: table[spec.id].astype(str).str.strip()}
                             ).set_index(spec.id)
        missing = [b for b in ids if b not in table.index]
        if missing:
            raise StoreError(f"{name}: expected a row for every basin, found none for "
                             f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if table.index.has_duplicates:
            raise StoreError(f"{name}: expected one row per basin, found "
                             f"{table.index[table.index.duplicated()][0]} twice")
        table = table.loc[ids]
        for c in [c for c in table.columns if any(c in p.columns for p in parts)]:
            first = next(p[c] for p in parts if c in p.columns)
            # the same values twice (an id's coordinates in two tables): kept once; other
            # values under a name of their own, so that nothing is dropped
            same = first.equals(table[c]) or (
                pd.api.types.is_numeric_dtype(first) and pd.api.types.is_numeric_dtype(table[c])
                and np.allclose(first.to_numpy(float), table[c].to_numpy(float), equal_nan=True))
            table = table.drop(columns=c) if same else table.rename(columns={c: f"{c}_{k}"})
        parts.append(table)
    return pd.concat(parts, axis=1)


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
        tables = spec.file if isinstance(spec.file, str) else ", ".join(spec.file)
        raise StoreError(f"attributes.features: expected columns of {tables}, found unknown "
                         f"{', '.join(unknown)}; valid: {', '.join(map(str, attrs.columns))}")
    raw = attrs[names].astype(float)
    if raw.isna().any().any():
        col = raw.columns[raw.isna().any()][0]
        raise StoreError(f"attributes.features: expected {col} for every basin, found none "
                         f"for {', '.join(raw.index[raw[col].isna()])}; leave it out")
    return raw


def import_basins(mapping: str, out: str, basins: list[str] | None = None,
                  features: list[str] | None = None, overwrite: bool = False,
                  root: str | None = None) -> str:
    """Write a point store of basins described by a YAML mapping (``h2mv import basins``).

    Args:
        mapping: the YAML mapping (see docs/data.md, "Basin time series").
        out: the zarr store to write (atomically).
        basins: basin ids to import (default: every basin of the series).
        features: the static features (default: the mapping's ``attributes.features``,
            else every numeric attribute column but the coordinates).
        overwrite: replace an existing store.
        root: the folder the mapping's paths are relative to (default: the mapping's own
            folder), so that one mapping of a published data set's layout
            (experiments/import/) serves every copy of it.
    """
    path, raw = read_mapping(mapping, out, overwrite)
    if root is not None and not Path(root).is_dir():
        raise FileNotFoundError(f"root: expected the data set's folder at {root}, found "
                                f"nothing")
    spec = parse_record(BasinMapping, raw, str(path))
    if features is not None:
        if spec.attributes is None:
            raise StoreError("features: expected an attribute table in the mapping "
                             "(attributes.file), found none")
        spec.attributes.features = list(features)
    store, group = basin_store(spec, Path(root) if root else path.parent, basins)
    written = write_store(store, None, out, overwrite=overwrite,
                          groups={"attributes": group} if group is not None else None)
    days = store.indexes["time"]
    observed = ", ".join(f"{t} observed on {float(np.isfinite(store[t]).mean()):.1%}"
                         for t in ("q", "sca") if t in store)
    energy = f"net radiation {store['rn'].attrs['method']}, PET" if "rn" in store else "PET"
    filled = (f"; {store.attrs['forcing_values_filled']} forcing values filled in gaps of up "
              f"to {spec.fill_gaps} days" if "forcing_values_filled" in store.attrs else "")
    print(f"wrote {written}: {store.sizes['cell']} basins, {store.sizes['time']} days "
          f"({days[0].date()} … {days[-1].date()}), {store.sizes['feature']} static features, "
          f"{energy} {store['pet'].attrs['method']}; {observed or 'no observations'} of "
          f"basin-days{filled}")
    return str(written)
