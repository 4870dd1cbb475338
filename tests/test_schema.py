"""The store check: one test per bad-input case of the schema."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from h2mv_hybrid.data.schema import StoreError, annotate, check_store, month_starts


def small_store(points: bool = False, n_days: int = 70) -> xr.Dataset:
    """A valid in-memory store: 4 × 5 grid (or 20 points), 70 days from 2001-01-01."""
    rng = np.random.default_rng(0)
    time = pd.date_range("2001-01-01", periods=n_days, freq="D")
    month = month_starts(time)
    lat, lon = np.array([-10.0, 0.0, 10.0, 20.0]), np.array([0.0, 2.0, 4.0, 6.0, 8.0])
    spatial = ("lat", "lon")
    shape = (4, 5)
    coords = {"time": time, "month": month, "lat": lat, "lon": lon,
              "feature": ["elevation", "sand", "clay"]}
    mask = np.ones(shape, bool)
    mask[0, 0] = False
    data = {
        "rn": (("time", *spatial), rng.uniform(20, 200, (n_days, *shape))),
        "prec": (("time", *spatial), rng.exponential(2.0, (n_days, *shape))),
        "tair": (("time", *spatial), rng.uniform(260, 300, (n_days, *shape))),
        "static": (("feature", *spatial), rng.normal(size=(3, *shape))),
        "mask": (spatial, mask),
        "et": (("month", *spatial), rng.uniform(0, 4, (len(month), *shape))),
        "q": (("month", *spatial), rng.uniform(0, 2, (len(month), *shape))),
        "tws": (("month", *spatial), rng.normal(0, 50, (len(month), *shape))),
        "fapar": (("month", *spatial), rng.uniform(0, 1, (len(month), *shape))),
        "swe": (("time", *spatial), np.full((n_days, *shape), np.nan)),
    }
    ds = xr.Dataset(data, coords=coords)
    for name in ds.data_vars:
        annotate(ds[name], name)
    if points:
        ds = ds.stack(cell=("lat", "lon")).reset_index("cell")
        ds = ds.assign_coords(lat=("cell", ds["lat"].values), lon=("cell", ds["lon"].values))
        ds = ds.transpose(*[d for d in ("time", "month", "layer", "feature", "cell") if d in ds.dims])
    return ds


def _fails(ds, *fragments, **kw):
    with pytest.raises(StoreError) as err:
        check_store(ds, **kw)
    for fragment in fragments:
        assert fragment in str(err.value), f"{fragment!r} not in: {err.value}"


@pytest.mark.parametrize("points", [False, True])
def test_valid_store(points):
    info = check_store(small_store(points), constraints=["et", "q"])
    assert info.layout == ("points" if points else "grid")
    assert info.n_cells == 19 and info.n_features == 3 and info.n_days == 70
    assert info.n_months == 3 and set(info.constraints) == {"et", "q", "tws", "fapar", "swe"}


def test_missing_variable():
    _fails(small_store().drop_vars("tair"), "tair: expected in the store", "found variables")


def test_missing_requested_constraint():
    _fails(small_store().drop_vars("q"), "q: expected in the store", constraints=["q"])
    _fails(small_store(), "expected names among", "found 'runoff'", constraints=["runoff"])


def test_wrong_dims():
    ds = small_store()
    ds["et"] = ds["et"].transpose("lat", "month", "lon")
    _fails(ds, "et: expected dims ('month', 'lat', 'lon')", "found ('lat', 'month', 'lon')")


def test_missing_and_wrong_units():
    ds = small_store()
    del ds["prec"].attrs["units"]
    _fails(ds, "prec: expected a 'units' attribute")
    ds = small_store()
    ds["tair"].attrs["units"] = "degC"
    _fails(ds, "tair: expected units 'K'", "found 'degC'")


def test_unit_spellings_are_accepted():
    ds = small_store()
    ds["prec"].attrs["units"] = "kg m-2 day-1"
    ds["rn"].attrs["units"] = "W m**-2"
    ds["tws"].attrs["units"] = "kg m-2"
    check_store(ds)


def test_missing_long_name():
    ds = small_store()
    del ds["q"].attrs["long_name"]
    _fails(ds, "q: expected a 'long_name' attribute")


def test_temperature_in_celsius():
    ds = small_store()
    ds["tair"] = ds["tair"] - 273.15
    ds["tair"].attrs.update(units="K", long_name="air temperature")
    _fails(ds, "tair", "found max", "looks like °C")


def test_radiation_in_joules_or_megajoules():
    for factor, text in ((86400.0, "J m-2"), (0.0864, "MJ m-2 day-1")):
        ds = small_store()
        ds["rn"] = ds["rn"] * factor
        ds["rn"].attrs.update(units="W m-2", long_name="net radiation")
        _fails(ds, "rn", text)


def test_negative_precipitation():
    ds = small_store()
    ds["prec"][3, 1, 1] = -2.0
    _fails(ds, "prec", "found min -2", "cannot be negative")


def test_fapar_outside_unit_interval():
    ds = small_store()
    ds["fapar"][1, 2, 2] = 1.7
    _fails(ds, "fapar", "found max 1.7")


def test_time_axis_not_daily_or_not_monotonic():
    ds = small_store()
    t = ds.indexes["time"].to_numpy().copy()
    t[10:] = t[10:] + np.timedelta64(1, "D")
    _fails(ds.assign_coords(time=t), "time: expected consecutive daily steps",
           "2001-01-10 and 2001-01-12")
    t = ds.indexes["time"].to_numpy().copy()[::-1]
    _fails(ds.assign_coords(time=t), "time: expected consecutive daily steps")


def test_month_axis_misaligned():
    ds = small_store()
    ds = ds.assign_coords(month=pd.date_range("2001-02-01", periods=3, freq="MS"))
    _fails(ds, "month: expected the first day of each month covered by time",
           "2001-01-01 … 2001-03-01", "found 2001-02-01")


def test_empty_mask_and_wrong_dtype():
    ds = small_store()
    ds["mask"][:] = False
    _fails(ds, "mask: expected at least one modelled (True) cell")
    ds = small_store()
    ds["mask"] = ds["mask"].astype(int)
    ds["mask"].attrs.update(units="1", long_name="land")
    _fails(ds, "mask: expected dtype bool, found int")


@pytest.mark.parametrize("points", [False, True])
def test_nan_forcing_on_modelled_cells(points):
    ds = small_store(points)
    if points:
        ds["rn"][5, 7] = np.nan
        _fails(ds, "rn: expected complete forcing on modelled cells", "found NaN at 1 cells",
               "lat=0", "lon=4")
    else:
        ds["rn"][5, 1, 2] = np.nan
        _fails(ds, "rn: expected complete forcing", "lat=0", "lon=4")
    # NaN on a cell that is not modelled is fine
    ds = small_store()
    ds["rn"][5, 0, 0] = np.nan
    check_store(ds)


def test_all_nan_forcing_and_static():
    ds = small_store()
    ds["prec"][:] = np.nan
    _fails(ds, "prec: expected values on modelled cells, found only NaN")
    ds = small_store()
    ds["static"][1, 2, 3] = np.nan
    _fails(ds, "static: expected every feature on modelled cells", "lat=10", "lon=6")


def test_wrong_spatial_layout():
    ds = small_store().rename({"lat": "y"})
    _fails(ds, "spatial dims: expected ('lat', 'lon')", "found dims")
