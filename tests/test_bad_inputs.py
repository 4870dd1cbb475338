"""The catalogue of bad inputs: every one refused before training, in our words.

Each case names the variable or option, what was expected and what was found. Stores are
checked by :func:`check_store` (what the DataModule runs before the first batch); paths and
options go through the real command line, which must refuse them before any data is read
(no log folder, no checkpoint). The single-topic tests (test_schema.py, test_fit_cli.py,
test_ensemble.py …) stay beside this list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_schema import small_store

from h2mv_hybrid import cli
from h2mv_hybrid.data.schema import StoreError, check_store
from h2mv_hybrid.data.store import open_store, write_store
from h2mv_hybrid.data.synth import TwinConfig, synthesize

ROOT = Path(__file__).resolve().parents[1]


def _set(name: str, fn: Callable[[xr.DataArray], xr.DataArray]) -> Callable:
    def mutate(ds: xr.Dataset) -> xr.Dataset:
        attrs = dict(ds[name].attrs)
        ds[name] = fn(ds[name])
        ds[name].attrs.update(attrs)
        return ds
    return mutate


def _attr(name: str, key: str, value: str | None) -> Callable:
    def mutate(ds: xr.Dataset) -> xr.Dataset:
        if value is None:
            del ds[name].attrs[key]
        else:
            ds[name].attrs[key] = value
        return ds
    return mutate


def _at(name: str, index: tuple, value: float) -> Callable:
    def mutate(ds: xr.Dataset) -> xr.Dataset:
        ds[name][index] = value
        return ds
    return mutate


def _shift_time(ds: xr.Dataset) -> xr.Dataset:
    t = ds.indexes["time"].to_numpy().copy()
    t[10:] = t[10:] + np.timedelta64(1, "D")
    return ds.assign_coords(time=t)


def _snow_in_metres(ds: xr.Dataset) -> xr.Dataset:
    ds = _set("tair", lambda t: t - 15.0)(ds)  # a cold domain: plenty of snowfall
    rng = np.random.default_rng(1)
    return _set("swe", lambda s: s.copy(data=rng.uniform(0, 0.4, s.shape)))(ds)


def _duplicated_cell(ds: xr.Dataset) -> xr.Dataset:
    return xr.concat([ds, ds.isel(cell=[4])], dim="cell", data_vars="minimal",
                     coords="minimal", compat="override")


def _duplicated_label(ds: xr.Dataset) -> xr.Dataset:
    labels = [f"basin{i}" for i in range(ds.sizes["cell"])]
    labels[3] = labels[2]
    return ds.assign_coords(cell=labels)


#: (case, points layout, mutation, requested constraints, fragments of the message)
STORES = [
    ("missing forcing", False, lambda d: d.drop_vars("tair"), None,
     ["tair: expected in the store", "found variables"]),
    ("missing constraint", False, lambda d: d.drop_vars("q"), ["q"],
     ["q: expected in the store"]),
    ("unknown constraint name", False, lambda d: d, ["runoff"],
     ["expected names among", "found 'runoff'"]),
    ("wrong dims", False, lambda d: d.assign(et=d["et"].transpose("lat", "month", "lon")),
     None, ["et: expected dims ('month', 'lat', 'lon')", "found ('lat', 'month', 'lon')"]),
    ("no units", False, _attr("prec", "units", None), None,
     ["prec: expected a 'units' attribute"]),
    ("wrong units", False, _attr("tair", "units", "degC"), None,
     ["tair: expected units 'K'", "found 'degC'"]),
    ("no long_name", False, _attr("q", "long_name", None), None,
     ["q: expected a 'long_name' attribute"]),
    ("tair in °C", False, _set("tair", lambda t: t - 273.15), None,
     ["tair", "found max", "looks like °C"]),
    ("rn in J m-2", False, _set("rn", lambda r: r * 86400.0), None, ["rn", "J m-2"]),
    ("rn in MJ m-2 day-1", False, _set("rn", lambda r: r * 0.0864), None,
     ["rn", "MJ m-2 day-1"]),
    ("negative precipitation", False, _at("prec", (3, 1, 1), -2.0), None,
     ["prec", "found min -2", "cannot be negative"]),
    ("prec in m day-1", False, _set("prec", lambda p: p / 1000.0), None,
     ["prec", "looks like m day-1: multiply by 1000"]),
    ("fAPAR above 1", False, _at("fapar", (1, 2, 2), 1.7), None, ["fapar", "found max 1.7"]),
    ("sca in percent", False, lambda d: d.assign(sca=d["swe"].fillna(40.0).assign_attrs(
        units="1", long_name="snow-covered fraction")), None,
     ["sca", "looks like percent: divide by 100"]),
    ("SWE in metres", False, _snow_in_metres, None,
     ["swe: expected mm", "looks like m, multiply by 1000"]),
    ("ET in m day-1", False, _set("et", lambda e: e / 1000.0), None,
     ["et: expected mm day-1", "looks like m day-1, multiply by 1000"]),
    ("ET as latent heat", False, _set("et", lambda e: e * 28.4), None,
     ["et: expected mm day-1 in [-5, 30]", "looks like latent heat in W m-2"]),
    ("runoff in m3 s-1", False, _set("q", lambda q: q * 100.0), None,
     ["q: expected mm day-1", "over 3 × the mean precipitation", "m3 s-1"]),
    ("runoff in m day-1", False, _set("q", lambda q: q / 1000.0), None,
     ["q: expected mm day-1", "looks like m day-1, multiply by 1000"]),
    ("time not daily", False, _shift_time, None,
     ["time: expected consecutive daily steps", "2001-01-10 and 2001-01-12"]),
    ("time descending", False, lambda d: d.assign_coords(time=d.indexes["time"][::-1]), None,
     ["time: expected consecutive daily steps"]),
    ("month misaligned", False, lambda d: d.assign_coords(
        month=pd.date_range("2001-02-01", periods=3, freq="MS")), None,
     ["month: expected the first day of each month covered by time", "found 2001-02-01"]),
    ("no month coordinate", False, lambda d: d.drop_vars("month").rename_dims(
        month="m"), None, ["month: expected a 'month' coordinate"]),
    ("no feature coordinate", False, lambda d: d.drop_vars("feature"), None,
     ["static: expected a 'feature' coordinate"]),
    ("empty mask", False, _at("mask", (slice(None), slice(None)), False), None,
     ["mask: expected at least one modelled (True) cell"]),
    ("mask not boolean", False, lambda d: d.assign(mask=d["mask"].astype(int).assign_attrs(
        units="1", long_name="land")), None, ["mask: expected dtype bool, found int"]),
    ("NaN forcing on a modelled cell", False, _at("rn", (5, 1, 2), np.nan), None,
     ["rn: expected complete forcing on modelled cells", "lat=0", "lon=4"]),
    ("all-NaN forcing", False, _at("prec", (slice(None),), np.nan), None,
     ["prec: expected values on modelled cells, found only NaN"]),
    ("NaN static feature", False, _at("static", (1, 2, 3), np.nan), None,
     ["static: expected every feature on modelled cells", "lat=10", "lon=6"]),
    ("no spatial layout", False, lambda d: d.rename({"lat": "y"}), None,
     ["spatial dims: expected ('lat', 'lon')", "found dims"]),
    ("NaN forcing at a point", True, _at("rn", (5, 7), np.nan), None,
     ["rn: expected complete forcing on modelled cells", "found NaN at 1 cells"]),
    ("duplicated cell", True, _duplicated_cell, None,
     ["cell: expected every modelled cell once", "repeat another's location"]),
    ("duplicated cell label", True, _duplicated_label, None,
     ["cell: expected distinct cell labels", "'basin2'"]),
]


@pytest.mark.parametrize("case, points, mutate, constraints, fragments", STORES,
                         ids=[c[0] for c in STORES])
def test_bad_store_is_refused_naming_variable_expected_and_found(case, points, mutate,
                                                                 constraints, fragments):
    ds = mutate(small_store(points))
    with pytest.raises(StoreError) as err:
        check_store(ds, constraints=constraints)
    for fragment in fragments:
        assert fragment in str(err.value), f"{case}: {fragment!r} not in: {err.value}"


def test_the_valid_store_of_the_catalogue_passes():
    """Every case above fails because of its one mutation."""
    check_store(small_store())
    check_store(small_store(points=True))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "twin.zarr"
    write_store(*synthesize(TwinConfig(res=8.0, years="2001-2003", seed=1)), path)
    return str(path)


def _paths(tmp: Path, store: str) -> dict[str, Path]:
    (tmp / "text.zarr").write_text("not a store")
    (tmp / "empty.zarr").mkdir()
    (tmp / "forcing.nc").write_bytes(b"CDF\x01" + bytes(60))
    partial = tmp / ".twin.zarr.host-1.abc.partial"
    if not partial.exists():
        write_store(open_store(store).load(), None, partial)
    return {"missing": tmp / "twn.zarr", "text": tmp / "text.zarr", "empty": tmp / "empty.zarr",
            "netcdf": tmp / "forcing.nc", "partial": partial}


#: (case, extra options of a quickstart fit, fragments of the one-line error)
OPTIONS = [
    ("store path mistyped", ["--data.store", "{missing}"],
     ["store: expected a zarr store at", "twn.zarr, found nothing"]),
    ("text file named .zarr", ["--data.store", "{text}"],
     ["store: expected a zarr store (a directory), found a file"]),
    ("empty folder named .zarr", ["--data.store", "{empty}"],
     ["store: expected a zarr store at", "found an empty directory"]),
    ("NetCDF file as the store", ["--data.store", "{netcdf}"],
     ["found the NetCDF file", "to_zarr", "h2mv import netcdf"]),
    ("temporary .partial store", ["--data.store", "{partial}"],
     ["expected a complete store", "a write that did not finish"]),
    ("constraint output the model lacks", ["--model.init_args.constraints",
                                           "[{{target: q, output: q_bogus}}]"],
     ["constraints: expected outputs of the hybrid", "found q: 'q_bogus'"]),
    ("routed runoff without routing", ["--model.init_args.constraints",
                                       "[{{target: q, output: q_routed}}]"],
     ["found q: 'q_routed'", "needs network.routing_days"]),
    ("negative learning rate", ["--model.init_args.lr", "-0.1"],
     ["model.init_args.lr: expected a finite value > 0, found -0.1"]),
    ("negative weight decay", ["--model.init_args.weight_decay", "-1"],
     ["model.init_args.weight_decay: expected a finite value ≥ 0, found -1"]),
    ("state_scale zero", ["--model.init_args.network.state_scale", "0"],
     ["state_scale", "expected", "found 0"]),
    ("spin-up cycles zero", ["--model.init_args.spinup_cycles", "0"],
     ["spinup_cycles: expected ≥ 1, found 0"]),
    ("misspelled trainer option", ["--trainer.max_epoch", "3"],
     ["unknown option trainer.max_epoch", "did you mean trainer.max_epochs"]),
    ("misspelled network option", ["--model.init_args.network.lstm_hiden", "8"],
     ["unknown option model.network.lstm_hiden", "did you mean model.network.lstm_hidden"]),
    ("misspelled data option", ["--data.batchsize", "8"],
     ["unknown option data.batchsize", "did you mean data.batch_size"]),
    ("missing checkpoint", ["--ckpt_path", "{missing}.ckpt"],
     ["--ckpt_path: expected a checkpoint file, found nothing at"]),
]


@pytest.mark.parametrize("case, extra, fragments", OPTIONS, ids=[c[0] for c in OPTIONS])
def test_bad_path_or_option_is_refused_before_any_data(case, extra, fragments, store,
                                                       tmp_path, capsys):
    paths = _paths(tmp_path, store)
    extra = [e.format(**{k: str(v) for k, v in paths.items()}) for e in extra]
    root = tmp_path / "run"
    args = ["fit", "--config", str(ROOT / "experiments/quickstart.yaml"), "--data.store",
            store, "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1", *extra]
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as err:
        cli.main(args)
    message = str(err.value.code) + capsys.readouterr().err
    for fragment in fragments:
        assert fragment in message, f"{case}: {fragment!r} not in: {message[-2000:]}"
    assert not (root / "checkpoints").exists() and not list(root.rglob("*.ckpt"))
    assert time.perf_counter() - t0 < 60  # refused at parse or store check, not in a step


def test_cv_member_out_of_range_is_refused_before_the_store(tmp_path):
    from h2mv_hybrid.ensemble import cross_validate

    with pytest.raises(ValueError, match=r"members: expected 0 … 2 for 3 folds, found \[5\]"):
        cross_validate(ROOT / "experiments/quickstart.yaml", 3, members=[5], root=tmp_path,
                       overrides=["--data.store", str(tmp_path / "nowhere.zarr")])
