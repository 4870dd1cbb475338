"""CAMELS catchments (Caravan forcing, USGS streamflow) as a point-layout H2MV store.

A preset of the basin importer (:mod:`h2mv_hybrid.importers.basins`): the same period
alignment and point store, with the CAMELS folder layout, attribute tables and features.

The folder layout is that of shared/data/camels-caravan-41 (its README): one
``<gauge_id>.csv.gz`` per basin with ``date, P_mm, T_degC, PET_era5land_mm, Q_mm``, a
``basins.csv`` with the gauges' latitude and longitude, and the CAMELS v2.0 attribute
tables ``attributes/camels_<group>.txt`` (``;``-separated, Addor et al. 2017).

The store (dim ``cell`` = basin, with ``lat``, ``lon`` and ``gauge_id`` along it):

- ``prec`` (mm day⁻¹) and ``tair`` (K) from ERA5-Land basin means;
- ``pet`` (mm day⁻¹), the energy forcing: Oudin PET from temperature and the gauge
  latitude (:func:`h2mv_hybrid.data.pet.oudin_pet`). ERA5-Land's own potential
  evaporation column is not used: its means of 4–27 mm day⁻¹ are an artefact of that
  product (the folder's README);
- ``q`` (mm day⁻¹), observed daily streamflow, NaN where missing: the constraint's
  aggregation chooses daily or monthly comparison;
- ``static``: the CAMELS attributes of :data:`FEATURES` (soil, vegetation, topography,
  climate indices, geology), standardized over the imported basins, the raw means and
  standard deviations kept as ``feature_mean`` / ``feature_std`` attributes. Streamflow
  signatures (camels_hydro) are never features: they are computed from the observed
  runoff the model is scored on;
- ``mask``: every basin;
- group ``attributes``: every numeric CAMELS attribute of the imported basins in its own
  units (the hydrological signatures included), for comparing emergent patterns with
  them (``xr.open_zarr(store, group="attributes")``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from h2mv_hybrid.data.pet import oudin_pet
from h2mv_hybrid.data.schema import StoreError, check_store
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.importers.basins import align_period, point_store
from process_layers.constants import ZERO_CELSIUS_IN_KELVIN

#: Static features: CAMELS attribute names and their tables (Addor et al. 2017, Table 1–4).
FEATURES: dict[str, tuple[str, ...]] = {
    "soil": ("soil_depth_pelletier", "soil_depth_statsgo", "soil_porosity",
             "soil_conductivity", "max_water_content", "sand_frac", "silt_frac", "clay_frac"),
    "vege": ("frac_forest", "lai_max", "lai_diff", "gvf_max", "gvf_diff", "root_depth_50",
             "root_depth_99"),
    "topo": ("elev_mean", "slope_mean", "area_gages2"),
    "clim": ("p_mean", "pet_mean", "p_seasonality", "frac_snow", "aridity", "high_prec_freq",
             "high_prec_dur", "low_prec_freq", "low_prec_dur"),
    "geol": ("carbonate_rocks_frac", "geol_permeability"),
}
#: Attribute tables that describe streamflow: never static features (they would leak the
#: target), kept in the ``attributes`` group for evaluation.
SIGNATURE_TABLES: tuple[str, ...] = ("hydro",)
COLUMNS = ("date", "P_mm", "T_degC", "Q_mm")


def read_attributes(source: Path, basins: list[str]) -> pd.DataFrame:
    """Every numeric CAMELS attribute of ``basins`` (rows in that order), own units."""
    folder = source / "attributes"
    tables = sorted(folder.glob("camels_*.txt"))
    if not tables:
        raise FileNotFoundError(f"attributes: expected {folder}/camels_<group>.txt tables, "
                                f"found none")
    parts = []
    for path in tables:
        table = pd.read_csv(path, sep=";", dtype={"gauge_id": str}).set_index("gauge_id")
        missing = [b for b in basins if b not in table.index]
        if missing:
            raise StoreError(f"{path.name}: expected rows for every basin, found none for "
                             f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        parts.append(table.loc[basins].select_dtypes("number"))
    out = pd.concat(parts, axis=1)
    return out.loc[:, ~out.columns.duplicated()]


def read_basin(path: Path) -> pd.DataFrame:
    """One basin's daily series, indexed by date, after checking its columns and values."""
    if not path.exists():
        raise FileNotFoundError(f"{path.name}: expected the basin's series at {path}, "
                                f"found nothing")
    df = pd.read_csv(path, parse_dates=["date"])
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise StoreError(f"{path.name}: expected columns {', '.join(COLUMNS)}, found "
                         f"{', '.join(df.columns)}")
    df = df.set_index("date")
    for col in ("P_mm", "T_degC"):
        if df[col].isna().any():
            day = df.index[df[col].isna()][0].date()
            raise StoreError(f"{path.name}: expected complete forcing {col}, found "
                             f"{int(df[col].isna().sum())} missing days (first {day})")
    if (df["P_mm"] < 0).any():
        raise StoreError(f"{path.name}: expected P_mm ≥ 0 mm day-1, found min "
                         f"{df['P_mm'].min():g}")
    if (df["Q_mm"] < 0).any():
        raise StoreError(f"{path.name}: expected Q_mm ≥ 0 mm day-1, found min "
                         f"{df['Q_mm'].min():g}")
    return df


def camels_store(source: str | os.PathLike, basins: list[str] | None = None,
                 start: str | None = None, end: str | None = None,
                 features: list[str] | None = None) -> tuple[xr.Dataset, xr.Dataset]:
    """The store and the ``attributes`` group, in memory (41 basins × 34 years: 20 MB).

    Args:
        source: the folder (see the module docstring).
        basins: gauge ids to import (default: every basin of ``basins.csv``).
        start: first day of the store (default: the first day every basin covers).
        end: last day of the store (default: the last day every basin covers).
        features: CAMELS attribute names used as static features (default
            :data:`FEATURES`).
    """
    source = Path(source)
    index_path = source / "basins.csv"
    if not index_path.exists():
        raise FileNotFoundError(f"source: expected {index_path} (the basin list), found nothing")
    index = pd.read_csv(index_path, dtype={"gauge_id": str}).set_index("gauge_id")
    basins = list(basins or index.index)
    unknown = [b for b in basins if b not in index.index]
    if unknown:
        raise StoreError(f"basins: expected gauge ids of {index_path}, found "
                         f"{', '.join(unknown)}")
    frames = {b: read_basin(source / f"{b}.csv.gz") for b in basins}
    days = align_period(frames, start, end)
    series = {b: df.loc[days[0]:days[-1]] for b, df in frames.items()}

    attrs = read_attributes(source, basins)
    names = list(features) if features else [n for group in FEATURES.values() for n in group]
    absent = [n for n in names if n not in attrs.columns]
    if absent:
        raise StoreError(f"features: expected CAMELS attributes, found unknown "
                         f"{', '.join(absent)}; valid: {', '.join(attrs.columns)}")
    leaked = [n for n in names if n in _signature_columns(source)]
    if leaked:
        raise StoreError(f"features: expected no streamflow signatures (computed from the "
                         f"runoff the model is scored on), found {', '.join(leaked)}")
    raw = attrs[names]
    if raw.isna().any().any():
        col = raw.columns[raw.isna().any()][0]
        raise StoreError(f"features: expected {col} for every basin, found none for "
                         f"{', '.join(raw.index[raw[col].isna()])}; leave it out of features")
    mean, std = raw.mean(), raw.std(ddof=0).replace(0.0, 1.0)
    static = ((raw - mean) / std).to_numpy(np.float32).T  # [feature, cell]

    lat = index.loc[basins, "gauge_lat"].to_numpy(float)
    lon = index.loc[basins, "gauge_lon"].to_numpy(float)
    stack = lambda col: np.stack([series[b][col].to_numpy(np.float32) for b in basins], 1)  # noqa: E731
    tair_c = stack("T_degC")
    pet = oudin_pet(tair_c, lat[None, :], days.day_of_year.to_numpy()[:, None])
    store = point_store(
        {"prec": stack("P_mm"), "tair": tair_c + np.float32(ZERO_CELSIUS_IN_KELVIN),
         "pet": pet, "q": stack("Q_mm")}, days, basins,
        pd.DataFrame(static.T, columns=names, index=basins), lat, lon,
        "Oudin et al. 2005 (temperature, gauge latitude)", "h2mv_hybrid.importers.camels",
        "CAMELS-US basins: Caravan ERA5-Land forcing, USGS streamflow, CAMELS v2.0 "
        "attributes")
    store["static"].attrs.update(
        standardized="over the imported basins", feature_mean=mean.tolist(),
        feature_std=std.tolist())
    store.attrs["references"] = ("Kratzert et al. 2023 (Caravan); Newman et al. 2015; "
                                 "Addor et al. 2017")
    group = xr.Dataset({c: ("cell", attrs[c].to_numpy(float)) for c in attrs.columns},
                       coords={"gauge_id": ("cell", np.array(basins, dtype="U")),
                               "lat": ("cell", lat), "lon": ("cell", lon)})
    check_store(store, constraints=["q"])
    return store, group


def _signature_columns(source: Path) -> set[str]:
    out: set[str] = set()
    for t in SIGNATURE_TABLES:
        path = source / "attributes" / f"camels_{t}.txt"
        if path.exists():
            out |= set(pd.read_csv(path, sep=";", nrows=0).columns) - {"gauge_id"}
    return out


def import_camels(
    source: str,
    out: str,
    basins: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    features: list[str] | None = None,
    overwrite: bool = False,
) -> str:
    """Write a CAMELS point store (the ``h2mv import camels`` command).

    Args:
        source: folder with ``basins.csv``, ``<gauge_id>.csv.gz`` and ``attributes/``
            (e.g. ../shared/data/camels-caravan-41).
        out: the zarr store to write (atomically).
        basins: gauge ids to import (default: all).
        start: first day of the store (default: the first day all basins cover).
        end: last day of the store (default: the last day all basins cover).
        features: CAMELS attributes used as static features (default: soil, vegetation,
            topography, climate indices and geology; see docs/camels.md).
        overwrite: replace an existing store.
    """
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"out: {out} exists; pass --overwrite true to replace it")
    store, group = camels_store(source, basins, start, end, features)
    path = write_store(store, None, out, overwrite=overwrite,
                       groups={"attributes": group})
    days = store.indexes["time"]
    print(f"wrote {path}: {store.sizes['cell']} basins, {store.sizes['time']} days "
          f"({days[0].date()} … {days[-1].date()}), {store.sizes['feature']} static features; "
          f"q observed on {float(np.isfinite(store['q']).mean()):.1%} of basin-days")
    return str(path)
