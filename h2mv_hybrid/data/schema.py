"""The H2MV store schema: variables, dims, units, plausible ranges, and the store check.

One xarray Dataset (stored as a zarr group) holds forcing, static features, the land mask
and the observational constraints. Two spatial layouts are accepted: a regular grid
(dims ``lat``, ``lon``) and points (one dim ``cell`` with ``lat`` and ``lon`` coordinates
along it). :func:`check_store` verifies a store before any training and raises
:class:`StoreError` naming the variable, the expected and the found. See docs/data.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from process_layers.constants import LATENT_HEAT_VAPORISATION, W_M2_TO_MJ_M2_DAY

Role = Literal["forcing", "static", "mask", "constraint", "optional"]
TimeAxis = Literal["time", "month"] | None
GRID: tuple[str, ...] = ("lat", "lon")
POINTS: tuple[str, ...] = ("cell",)


class StoreError(ValueError):
    """A store does not follow the H2MV schema."""


@dataclass(frozen=True)
class Hint:
    """A likely unit mistake: when the variable's max (or min) crosses ``value``, say ``text``."""

    stat: Literal["max", "min"]
    op: Literal["<", ">"]
    value: float
    text: str


@dataclass(frozen=True)
class VariableSpec:
    """One schema variable: its role, axes, canonical units and plausible range."""

    name: str
    role: Role
    time: TimeAxis
    units: str
    long_name: str
    aliases: tuple[str, ...] = ()
    valid_range: tuple[float, float] | None = None
    extra_dims: tuple[str, ...] = ()
    hints: tuple[Hint, ...] = field(default=())
    #: optional variables only: may it have NaN on modelled cells? (inputs of a model
    #: may not; targets and loss terms may, those days are left out)
    gaps: bool = False
    #: a second time axis the store may hold it on (runoff: monthly or daily)
    alt_time: TimeAxis = None

    def dims(self, spatial: tuple[str, ...], time: TimeAxis = None) -> tuple[str, ...]:
        """Dims of this variable in a layout with the given spatial dims (on ``time``)."""
        time = time or self.time
        lead = (time,) if time else ()
        return (*lead, *self.extra_dims, *spatial)

    def accepts(self, units: str) -> bool:
        """Whether ``units`` is a spelling of this variable's unit."""
        norm = _normalise_units(units)
        return norm in {_normalise_units(u) for u in (self.units, *self.aliases)}


def _normalise_units(units: str) -> str:
    return " ".join(str(units).replace("**", "").replace("^", "").split())


_PER_DAY = ("mm d-1", "mm/day", "mm/d", "mm day**-1", "kg m-2 day-1", "kg m-2 d-1",
            "kg m**-2 day**-1")
_W_M2 = ("W m**-2", "W/m2", "W/m^2", "W m^-2", "watt m-2", "W.m-2")
_MM = ("kg m-2", "kg m**-2", "mm water equivalent", "mm w.e.")
_ONE = ("-", "", "dimensionless", "fraction", "unitless")

VARIABLES: tuple[VariableSpec, ...] = (
    VariableSpec(
        "rn", "forcing", "time", "W m-2", "net radiation (daily mean)", _W_M2, (-300.0, 1000.0),
        hints=(Hint("max", ">", 1e5, "looks like a daily sum in J m-2: divide by 86400"),
               Hint("max", "<", 50.0, "looks like MJ m-2 day-1: multiply by 11.574")),
    ),
    VariableSpec(
        "prec", "forcing", "time", "mm day-1", "precipitation", _PER_DAY, (0.0, 2000.0),
        hints=(Hint("min", "<", 0.0, "precipitation cannot be negative"),
               Hint("max", "<", 1.0, "looks like m day-1: multiply by 1000")),
    ),
    VariableSpec(
        "tair", "forcing", "time", "K", "air temperature at 2 m", ("kelvin", "degK", "K"),
        (170.0, 340.0), hints=(Hint("max", "<", 100.0, "looks like °C: add 273.15"),),
    ),
    VariableSpec("static", "static", None, "1", "static land-surface features", _ONE + ("mixed",),
                 extra_dims=("feature",)),
    VariableSpec("mask", "mask", None, "1", "land cells to model", _ONE + ("boolean",)),
    VariableSpec("tws", "constraint", "month", "mm", "terrestrial water storage (monthly)",
                 _MM, (-5000.0, 1e5)),
    VariableSpec("et", "constraint", "month", "mm day-1", "evapotranspiration (monthly mean)",
                 _PER_DAY, (-5.0, 30.0),
                 hints=(Hint("max", ">", 30.0, "looks like latent heat in W m-2: divide by "
                             "28.4 (λ = 2.45 MJ kg-1)"),)),
    # Runoff: monthly means (gridded products) or daily (gauges; the constraint's
    # aggregation then chooses daily or monthly comparison).
    VariableSpec("q", "constraint", "month", "mm day-1", "runoff (monthly mean, or daily)",
                 _PER_DAY, (0.0, 500.0), alt_time="time"),
    VariableSpec("fapar", "constraint", "month", "1", "fAPAR (monthly mean)", _ONE,
                 (0.0, 1.0), hints=(Hint("max", ">", 1.0, "fAPAR is a fraction in [0, 1]"),)),
    VariableSpec("swe", "constraint", "time", "mm", "snow water equivalent (daily)", _MM,
                 (0.0, 1e5)),
    # Snow-covered area (MODIS-like, cloud gaps as NaN), a basin's mean over its area or
    # elevation bands: compared with the model's snow-covered fraction (docs/data.md).
    VariableSpec("sca", "constraint", "time", "1", "snow-covered fraction (daily)", _ONE,
                 (0.0, 1.0), hints=(Hint("max", ">", 1.0, "looks like percent: divide by 100"),)),
    # Optional inputs of the other model heads (their issues fill them in the generator).
    VariableSpec("sm_layers", "optional", "time", "m3 m-3", "volumetric soil moisture by layer",
                 ("m3/m3", "m**3 m**-3"), (0.0, 1.0), extra_dims=("layer",), gaps=True),
    VariableSpec("sw_down", "optional", "time", "W m-2", "downward shortwave radiation",
                 _W_M2, (0.0, 600.0)),
    VariableSpec("lw_down", "optional", "time", "W m-2", "downward longwave radiation",
                 _W_M2, (0.0, 700.0)),
    VariableSpec("q_air", "optional", "time", "kg kg-1", "specific humidity", ("1", "kg/kg"),
                 (0.0, 0.05)),
    VariableSpec("psurf", "optional", "time", "Pa", "surface pressure", ("pascal",),
                 (3e4, 1.1e5)),
    VariableSpec("wind", "optional", "time", "m s-1", "wind speed at 10 m", ("m/s", "m s**-1"),
                 (0.0, 60.0)),
    VariableSpec("pet", "optional", "time", "mm day-1", "potential evapotranspiration",
                 _PER_DAY, (-5.0, 30.0)),
    # Daily land-surface fields (as a reanalysis gives them) for physics-guided losses.
    VariableSpec("et_daily", "optional", "time", "mm day-1",
                 "evapotranspiration (daily, land-surface model)", _PER_DAY, (-10.0, 50.0),
                 gaps=True),
    VariableSpec("q_surf_daily", "optional", "time", "mm day-1",
                 "surface runoff (daily, land-surface model)", _PER_DAY, (0.0, 2000.0),
                 gaps=True),
    VariableSpec("swe_daily", "optional", "time", "mm",
                 "snow water equivalent (daily, land-surface model)", _MM, (0.0, 1e5),
                 gaps=True),
)
SPECS: dict[str, VariableSpec] = {v.name: v for v in VARIABLES}
FORCING_NAMES: tuple[str, ...] = tuple(v.name for v in VARIABLES if v.role == "forcing")
CONSTRAINT_NAMES: tuple[str, ...] = tuple(v.name for v in VARIABLES if v.role == "constraint")
#: 1 mm day⁻¹ of evaporation as a latent heat flux, W m⁻² (λ = 2.45 MJ kg⁻¹ over one day):
#: the inverse of the process layer's conversion of ``rn`` (process_layers.constants).
MM_DAY_AS_W_M2: float = LATENT_HEAT_VAPORISATION / W_M2_TO_MJ_M2_DAY


def time_axis(ds: xr.Dataset, name: str) -> TimeAxis:
    """The time axis a store holds a variable on (``time``, ``month`` or None)."""
    lead = ds[name].dims[0] if ds[name].dims else None
    return lead if lead in ("time", "month") else None


def with_energy(ds: xr.Dataset) -> xr.Dataset:
    """The store with its energy forcing ``rn``, from ``pet`` where it has no net radiation.

    The bucket's energy limit is available energy in mm day⁻¹ (the process layer converts
    ``rn`` by λ). A store without ``rn`` but with potential evapotranspiration ``pet``
    (mm day⁻¹; catchment data sets, or Oudin PET from temperature,
    :func:`h2mv_hybrid.data.pet.oudin_pet`) gets ``rn`` = ``pet`` × λ / 86 400 s, its
    latent-heat equivalent, so that the process layer sees PET as its energy limit: the
    evaporative fraction then means ET / PET. A store with ``rn`` is returned unchanged
    (``rn`` wins over ``pet``); so is one with neither, which the check reports.
    """
    if "rn" in ds.data_vars or "pet" not in ds.data_vars:
        return ds
    rn = ds["pet"] * MM_DAY_AS_W_M2
    rn.attrs = {"units": "W m-2", "energy_source": "pet",
                "long_name": "available energy: potential evapotranspiration (pet) as its "
                             "latent-heat equivalent"}
    return ds.assign(rn=rn)


def energy_source(ds: xr.Dataset) -> str:
    """``rn`` or ``pet``: which store variable the energy forcing comes from."""
    return "rn" if "rn" in ds.data_vars and "energy_source" not in ds["rn"].attrs else (
        "pet" if "pet" in ds.data_vars else "rn")


@dataclass(frozen=True)
class StoreInfo:
    """What :func:`check_store` learned about a valid store."""

    layout: Literal["grid", "points"]
    spatial_dims: tuple[str, ...]
    constraints: tuple[str, ...]
    n_days: int
    n_months: int
    n_features: int
    n_cells: int  # modelled cells (mask True)


def spatial_layout(ds: xr.Dataset) -> tuple[Literal["grid", "points"], tuple[str, ...]]:
    """Grid (lat, lon dims) or points (a ``cell`` dim with lat/lon coordinates)."""
    if "cell" in ds.dims:
        for coord in ("lat", "lon"):
            if coord not in ds.coords or ds[coord].dims != ("cell",):
                raise StoreError(
                    f"{coord}: expected a coordinate along 'cell' in the point layout, found "
                    f"{'dims ' + str(ds[coord].dims) if coord in ds.coords else 'none'}"
                )
        return "points", POINTS
    if "lat" in ds.dims and "lon" in ds.dims:
        return "grid", GRID
    raise StoreError(
        f"spatial dims: expected ('lat', 'lon') (grid) or ('cell',) with lat/lon coordinates "
        f"(points), found dims {tuple(ds.dims)}"
    )


def month_starts(time: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """First day of every month covered by a daily time axis."""
    return pd.date_range(time[0].to_period("M").to_timestamp(), time[-1], freq="MS")


def _check_time(ds: xr.Dataset) -> None:
    if "time" not in ds.coords:
        raise StoreError("time: expected a daily 'time' coordinate, found none")
    try:
        time = pd.DatetimeIndex(ds.indexes["time"])
    except (TypeError, ValueError) as err:
        raise StoreError(f"time: expected dates, found {ds['time'].dtype} ({err})") from err
    if len(time) < 2:
        raise StoreError(f"time: expected at least 2 days, found {len(time)}")
    step = np.diff(time.values).astype("timedelta64[s]").astype(np.int64)
    if not (step == 86400).all():
        i = int(np.argmax(step != 86400))
        raise StoreError(
            f"time: expected consecutive daily steps, found a step of {step[i] / 86400:g} days "
            f"between {time[i].date()} and {time[i + 1].date()}"
        )
    if "month" in ds.coords:
        months = pd.DatetimeIndex(ds.indexes["month"])
        expected = month_starts(time)
        if len(months) != len(expected) or not (months == expected).all():
            raise StoreError(
                f"month: expected the first day of each month covered by time "
                f"({expected[0].date()} … {expected[-1].date()}, {len(expected)} months), found "
                f"{months[0].date() if len(months) else 'none'} … "
                f"{months[-1].date() if len(months) else 'none'} ({len(months)} months)"
            )


def _check_attrs_and_dims(ds: xr.Dataset, spec: VariableSpec, spatial: tuple[str, ...]) -> None:
    da = ds[spec.name]
    expected = spec.dims(spatial)
    allowed = [expected] + ([spec.dims(spatial, spec.alt_time)] if spec.alt_time else [])
    if da.dims not in allowed:
        raise StoreError(f"{spec.name}: expected dims {' or '.join(map(str, allowed))}, "
                         f"found {da.dims}")
    units = da.attrs.get("units")
    if units is None:
        raise StoreError(f"{spec.name}: expected a 'units' attribute ({spec.units!r}), found none")
    if not spec.accepts(units):
        raise StoreError(
            f"{spec.name}: expected units {spec.units!r} (or {', '.join(map(repr, spec.aliases))}),"
            f" found {units!r}"
        )
    if not da.attrs.get("long_name"):
        raise StoreError(f"{spec.name}: expected a 'long_name' attribute, found none")


#: Unit mistakes of observations that stay inside their valid range, found by comparing
#: their magnitude with the precipitation of the same cells: (variable, test on the
#: variable's statistics and the water, what it looks like). ``prec_mean`` is mm day⁻¹
#: over modelled cells and days, ``cold_prec_max`` the largest sum over the period of
#: precipitation on days below 0 °C in one cell (mm).
MAGNITUDE_HINTS: dict[str, tuple[tuple[Callable[[dict, dict], bool], str], ...]] = {
    "swe": ((lambda v, w: 0 < v["max"] < 1.0 and w["cold_prec_max"] > 50.0,
             "snowfall reaches {cold_prec_max:.0f} mm but SWE never 1 mm: looks like m, "
             "multiply by 1000"),),
    "et": ((lambda v, w: 0 < v["max"] < 0.05 and w["prec_mean"] > 0.1,
            "ET never reaches 0.05 while precipitation averages {prec_mean:.2g} mm day-1: "
            "looks like m day-1, multiply by 1000"),),
    "q": ((lambda v, w: v["mean"] > 3.0 * w["prec_mean"] > 0,
           "mean runoff {mean:.3g} is over 3 × the mean precipitation {prec_mean:.3g} mm "
           "day-1: looks like a discharge in m3 s-1 (or l s-1); divide by the area: "
           "q [mm day-1] = Q [m3 s-1] × 86.4 / area [km2]"),
          (lambda v, w: 0 < v["max"] < 0.05 and w["prec_mean"] > 0.1,
           "runoff never reaches 0.05 while precipitation averages {prec_mean:.2g} mm day-1: "
           "looks like m day-1, multiply by 1000")),
}


def _magnitude_check(spec: VariableSpec, stats: dict[str, float], water: dict[str, float]
                     ) -> None:
    if any(np.isnan(v) for v in stats.values()):
        return  # an entirely unobserved constraint is allowed
    for test, text in MAGNITUDE_HINTS[spec.name]:
        if test(stats, water):
            raise StoreError(
                f"{spec.name}: expected {spec.units}, found min {stats['min']:g}, mean "
                f"{stats['mean']:g}, max {stats['max']:g} — " + text.format(**stats, **water))


def _value_checks(ds: xr.Dataset, specs: list[VariableSpec], mask: xr.DataArray) -> None:
    """Min/max of every ranged variable over modelled cells, in one dask pass."""
    import dask

    ranged = [s for s in specs if s.valid_range is not None]
    lazy = []
    for s in ranged:
        da = ds[s.name].where(mask)
        lazy += [da.min(), da.max()]
    observed = [s for s in ranged if s.name in MAGNITUDE_HINTS]
    lazy += [ds[s.name].where(mask).mean() for s in observed]
    if observed:  # the water the observations are measured against
        prec = ds["prec"].where(mask)
        cold = prec.where(ds["tair"] < 273.15).sum("time")
        lazy += [prec.mean(), cold.max()]
    with warnings.catch_warnings():
        # Ocean tiles are all NaN by design; their nanmin/nanmax warnings say nothing.
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        values = [float(v) for v in dask.compute(*lazy)]
    for i, s in enumerate(ranged):
        vmin, vmax = values[2 * i], values[2 * i + 1]
        if np.isnan(vmin):
            if s.role == "forcing":
                raise StoreError(f"{s.name}: expected values on modelled cells, found only NaN")
            continue  # an entirely unobserved constraint is allowed
        for h in s.hints:
            v = vmax if h.stat == "max" else vmin
            if (v < h.value) if h.op == "<" else (v > h.value):
                raise StoreError(
                    f"{s.name}: expected {s.units} in [{s.valid_range[0]:g}, "
                    f"{s.valid_range[1]:g}], found {h.stat} {v:g} — {h.text}"
                )
        lo, hi = s.valid_range
        if vmin < lo or vmax > hi:
            raise StoreError(
                f"{s.name}: expected values in [{lo:g}, {hi:g}] {s.units}, found min {vmin:g} "
                f"and max {vmax:g}"
            )
    # after the ranges: a forcing in the wrong unit (tair in °C) is named first
    if observed:
        n = 2 * len(ranged)
        water = {"prec_mean": values[-2], "cold_prec_max": values[-1]}
        for i, s in enumerate(observed):
            k = ranged.index(s)
            stats = {"min": values[2 * k], "max": values[2 * k + 1], "mean": values[n + i]}
            _magnitude_check(s, stats, water)


def _first_cell(bad: xr.DataArray) -> str:
    idx = np.argwhere(np.asarray(bad.values))[0]
    labels = []
    for dim, i in zip(bad.dims, idx, strict=True):
        labels.append(f"{dim}={bad[dim].values[i]:.4g}" if dim in bad.coords else f"{dim}={i}")
    if bad.dims == ("cell",):
        labels += [f"lat={float(bad.lat[idx[0]]):.4g}", f"lon={float(bad.lon[idx[0]]):.4g}"]
    return ", ".join(labels)


def _check_layers(ds: xr.Dataset) -> None:
    """``sm_layers`` needs the depth bounds of its layers (m) to turn θ into mm."""
    for name in ("depth_top", "depth_bottom"):
        if name not in ds.coords or ds[name].dims != ("layer",):
            raise StoreError(
                f"{name}: expected a coordinate along 'layer' (m) for sm_layers, found "
                f"{'dims ' + str(ds[name].dims) if name in ds.coords else 'none'}"
            )
        if ds[name].attrs.get("units") != "m":
            raise StoreError(f"{name}: expected units 'm', found "
                             f"{ds[name].attrs.get('units')!r}")
    top, bottom = ds["depth_top"].values, ds["depth_bottom"].values
    if not ((bottom > top).all() and (np.diff(top) > 0).all() and (top >= 0).all()):
        raise StoreError(
            f"depth_top, depth_bottom: expected layers from the surface down, each with "
            f"bottom > top ≥ 0 m, found tops {top.tolist()} and bottoms {bottom.tolist()}"
        )


def _check_names(ds: xr.Dataset, required: list[str], wanted: list[str], extra: list[str]
                 ) -> None:
    """Asked-for constraints and inputs are schema variables; every needed one is there."""
    for name in wanted:
        if name not in SPECS or SPECS[name].role != "constraint":
            raise StoreError(
                f"constraints: expected names among {', '.join(CONSTRAINT_NAMES)}, found {name!r}"
            )
    for name in extra:
        if name not in SPECS or SPECS[name].role != "optional" or SPECS[name].time != "time":
            valid = [v.name for v in VARIABLES if v.role == "optional" and v.time == "time"]
            raise StoreError(f"inputs: expected names among {', '.join(valid)}, found {name!r}")
    missing = [n for n in required + wanted + extra if n not in ds.data_vars]
    if missing:
        hint = ""
        if ds.attrs.get("source") == "h2mv_hybrid.data.synth":
            hint = ("; this twin was written by an older version: write it again with "
                    "h2mv synth --overwrite (or delete it to let the DataModule recreate it)")
        if "rn" in missing:
            hint += "; rn may be replaced by pet (potential evapotranspiration, mm day-1)"
        raise StoreError(
            f"{', '.join(missing)}: expected in the store (required: {', '.join(required)}), "
            f"found variables {', '.join(map(str, ds.data_vars)) or 'none'}{hint}"
        )


def _check_used_values(ds: xr.Dataset, present: list[VariableSpec], mask: xr.DataArray,
                       spatial: tuple[str, ...], used_names: list[str], extra: list[str]) -> None:
    """Value ranges of the variables used; no NaN in forcing, gap-free inputs, static."""
    used = set(used_names)
    if energy_source(ds) == "pet":  # PET standing in for rn: checked in its own unit
        used = (used - {"rn"}) | {"pet"}
    _value_checks(ds, [s for s in present if s.name in used], mask)
    complete = [*FORCING_NAMES, *(n for n in extra if not SPECS[n].gaps)]
    for name in complete:
        null = ds[name].isnull()
        bad = (null.any([d for d in null.dims if d not in spatial]) & mask).load()
        if name == "rn" and energy_source(ds) == "pet":
            name = "pet (the energy forcing)"
        if bool(bad.any()):
            raise StoreError(
                f"{name}: expected complete forcing on modelled cells, found NaN at "
                f"{int(bad.sum())} cells (first: {_first_cell(bad)}); fill the gaps or set "
                f"mask False there"
            )
    bad = (ds["static"].isnull().any("feature") & mask).load()
    if bool(bad.any()):
        raise StoreError(
            f"static: expected every feature on modelled cells, found NaN at "
            f"{int(bad.sum())} cells (first: {_first_cell(bad)})"
        )


def _check_unique_cells(ds: xr.Dataset, mask: xr.DataArray) -> None:
    """No point-layout cell twice: by label, or by location with the same static features."""
    if "cell" in ds.coords:
        labels = pd.Index(np.asarray(ds["cell"].values))
        if labels.has_duplicates:
            dup = labels[labels.duplicated()].unique()
            raise StoreError(f"cell: expected distinct cell labels, found {len(dup)} repeated "
                             f"(first: {dup[0]!r})")
    keep = np.flatnonzero(np.asarray(mask.values))
    table = pd.DataFrame(np.asarray(ds["static"].isel(cell=keep).values).T)
    table.insert(0, "lat", np.asarray(ds["lat"].values)[keep])
    table.insert(1, "lon", np.asarray(ds["lon"].values)[keep])
    twice = table.duplicated(keep=False).to_numpy()
    if twice.any():
        first = table[twice].iloc[0]
        raise StoreError(
            f"cell: expected every modelled cell once, found {int(twice.sum())} cells that "
            f"repeat another's location and static features (first at lat {first['lat']:.4g}, "
            f"lon {first['lon']:.4g}); remove the duplicates")


def check_store(
    ds: xr.Dataset,
    *,
    constraints: Iterable[str] | None = None,
    inputs: Iterable[str] | None = None,
    check_values: bool = True,
) -> StoreInfo:
    """Check a store against the schema before anything is trained on it.

    Args:
        ds: the store, opened lazily (``xr.open_zarr``) or in memory.
        constraints: constraint variables that must be present (default: none required;
            the constraints found are reported).
        inputs: optional daily variables that must be present (the extra inputs and
            loss terms of a model head, see :data:`VARIABLES`).
        check_values: also scan the used data (forcing, the constraints, the inputs) for
            implausible values, and forcing and gap-free inputs for NaN on modelled cells
            (one streaming dask pass).

    Raises:
        StoreError: naming the variable, the expected and the found.
    """
    ds = with_energy(ds)
    layout, spatial = spatial_layout(ds)
    _check_time(ds)
    required = [*FORCING_NAMES, "static", "mask"]
    wanted, extra = list(constraints or []), list(inputs or [])
    _check_names(ds, required, wanted, extra)
    present = [SPECS[n] for n in ds.data_vars if n in SPECS]
    if "month" not in ds.coords and any(
            time_axis(ds, s.name) == "month" or (s.time == "month" and s.alt_time is None)
            for s in present):
        raise StoreError(
            "month: expected a 'month' coordinate for the monthly constraints, found none"
        )
    for spec in present:
        _check_attrs_and_dims(ds, spec, spatial)
    if "sm_layers" in ds.data_vars:
        _check_layers(ds)
    if "feature" not in ds.coords:
        raise StoreError("static: expected a 'feature' coordinate naming each feature, found none")

    mask = ds["mask"]
    if mask.dtype != bool:
        raise StoreError(f"mask: expected dtype bool, found {mask.dtype}")
    mask = mask.load()
    if layout == "points":
        _check_unique_cells(ds, mask)
    n_cells = int(mask.sum())
    if n_cells == 0:
        raise StoreError("mask: expected at least one modelled (True) cell, found none")

    if check_values:
        served = wanted if constraints is not None else [
            s.name for s in present if s.role == "constraint"]
        _check_used_values(ds, present, mask, spatial, [*FORCING_NAMES, *extra, *served],
                           extra)
    return StoreInfo(
        layout=layout,
        spatial_dims=spatial,
        constraints=tuple(s.name for s in present if s.role == "constraint"),
        n_days=ds.sizes["time"],
        n_months=ds.sizes.get("month", 0),
        n_features=ds.sizes["feature"],
        n_cells=n_cells,
    )


def annotate(da: xr.DataArray, name: str) -> xr.DataArray:
    """Set the schema's ``units`` and ``long_name`` on a variable."""
    spec = SPECS[name]
    da.attrs.update(units=spec.units, long_name=spec.long_name)
    return da
