"""The synthetic twin: deterministic, valid, physically consistent, written atomically."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from h2mv_hybrid import cli
from h2mv_hybrid.data import synth as synth_mod
from h2mv_hybrid.data.schema import check_store
from h2mv_hybrid.data.store import open_store, write_store
from h2mv_hybrid.data.synth import (
    SWE_PRODUCT_MIN_LAT,
    SWE_SATURATION_MM,
    TwinConfig,
    synthesize,
)
from process_layers import FLUX_NAMES, h2mv
from process_layers.parameters import ALPHA_NAMES

SMALL = TwinConfig(res=6.0, years="2001-2003", seed=3)


@pytest.fixture(scope="module")
def twin():
    return synthesize(SMALL)


@pytest.fixture(scope="module")
def written(tmp_path_factory, twin):
    path = tmp_path_factory.mktemp("twin") / "twin.zarr"
    write_store(*twin, path)
    return path


def test_deterministic_for_a_seed(twin):
    again = synthesize(SMALL)
    xr.testing.assert_identical(twin[0], again[0])
    xr.testing.assert_identical(twin[1], again[1])
    other = synthesize(TwinConfig(res=6.0, years="2001-2003", seed=4))
    assert not np.allclose(twin[0]["prec"].fillna(0), other[0]["prec"].fillna(0))


def test_store_follows_the_schema(written):
    ds = open_store(written)
    info = check_store(ds, constraints=["et", "q", "tws", "swe", "fapar"])
    assert info.layout == "grid" and info.n_features == 12 and info.n_months == 36
    assert isinstance(ds["rn"].data, __import__("dask").array.Array)  # lazily opened
    # chunks: the whole period of a patch of cells
    assert ds["rn"].chunks[0] == (ds.sizes["time"],)


def test_round_trip_true_parameters_reproduce_true_fluxes(written):
    ds, truth = open_store(written), open_store(written, group="truth")
    land = ds["mask"].values
    cells = lambda da: torch.as_tensor(da.values[..., land] if da.ndim == 3 else da.values[land])  # noqa: E731
    forcing = {k: cells(ds[k]).T.contiguous() for k in ("rn", "prec", "tair")}
    alpha = {k: cells(truth[f"alpha_{k}"]).T.contiguous() for k in ALPHA_NAMES}
    static = {"sm_max": cells(truth["sm_max"])}
    beta = {"snow": torch.tensor(truth.attrs["beta_snow"]),
            "baseflow": torch.tensor(truth.attrs["beta_baseflow"])}
    states = {k: cells(truth[f"{k}_initial"]) for k in ("swe", "sm", "gw")}
    f = h2mv.simulate(forcing, alpha, static, beta, states)
    for k in FLUX_NAMES:
        torch.testing.assert_close(f[k], cells(truth[k]).T, rtol=1e-5, atol=1e-4, msg=k)


def test_truth_closes_the_water_balance_and_is_plausible(twin):
    store, truth = twin
    land = store["mask"].values
    p_in = (truth["rainfall"] + truth["snow_acc"]).sum("time").values[land]
    out = (truth["ET"] + truth["q_total"]).sum("time").values[land]
    end = truth["tws"].isel(time=-1).values[land]
    start = sum(truth[f"{k}_initial"] for k in ("swe", "sm", "gw")).values[land]
    # float32 storage of 3 years of daily fluxes: allow rounding relative to the water moved
    assert np.all(np.abs((p_in - out) - (end - start)) < 0.05 + 1e-5 * p_in)
    prec = store["prec"].mean("time").values[land]
    assert prec.min() < 0.6 and prec.max() > 4.0  # arid and wet regions
    assert float(truth["swe"].max()) > 100  # snowy regions
    ratio = truth["ET"].mean("time").values[land] / prec
    assert 0.3 < np.median(ratio) < 0.9
    sm_max = truth["sm_max"].values[land]
    assert sm_max.min() >= 40 and sm_max.max() <= 500 and sm_max.std() > 50


def test_observation_operators(twin):
    store, truth = twin
    land = store["mask"].values
    swe = store["swe"]
    south = (store["lat"] < SWE_PRODUCT_MIN_LAT).values
    assert swe.values[:, south, :].size and np.isnan(swe.values[:, south, :]).all()
    assert float(swe.max()) <= SWE_SATURATION_MM
    assert float(store["q"].min()) >= 0 and 0 <= float(store["fapar"].min())
    assert float(store["fapar"].max()) <= 1
    # monthly ET follows the monthly mean of the true daily ET, with gaps
    et_true = truth["ET"].resample(time="MS").mean().values[:, land]
    et_obs = store["et"].values[:, land]
    ok = ~np.isnan(et_obs)
    assert 0.01 < 1 - ok.mean() < 0.15
    assert np.corrcoef(et_true[ok], et_obs[ok])[0, 1] > 0.95
    assert np.isnan(store["tws"].values[:, land]).all(axis=1).any()  # the mission gap
    assert not np.isnan(store["rn"].values[:, land]).any()  # forcing complete on land


def test_write_is_atomic_and_never_overwrites_silently(tmp_path, twin, monkeypatch):
    out = tmp_path / "store.zarr"
    write_store(*twin, out)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        write_store(*twin, out)

    def broken(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while writing the truth group")

    target = tmp_path / "fresh.zarr"
    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    with pytest.raises(KeyboardInterrupt):
        write_store(*twin, target)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["store.zarr"]  # no partial store left


def test_stores_are_zarr_2_consolidated_and_write_and_open_without_warnings(tmp_path, twin):
    """Consolidated metadata (one read to open) and text coordinates (gauge ids, feature
    names) without zarr's format-3 warnings; plain ``xr.open_zarr`` reads it silently."""
    import warnings

    attributes = xr.Dataset({"area": ("basin", [1.0, 2.0])},
                            coords={"gauge_id": ("basin", np.array(["01022500", "01031500"]))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = write_store(*twin, tmp_path / "s.zarr", groups={"attributes": attributes})
        ds = xr.open_zarr(out)
        truth = xr.open_zarr(out, group="truth")
        attrs = xr.open_zarr(out, group="attributes")
        opened = open_store(out)
    assert (out / ".zmetadata").exists() and not (out / "zarr.json").exists()
    assert ds["feature"].dtype.kind == "U" and attrs["gauge_id"].dtype.kind == "U"
    assert list(attrs["gauge_id"].values) == ["01022500", "01031500"]
    assert set(truth.data_vars) == set(twin[1].data_vars)
    assert "rn" in opened
    # a store of an earlier version (format 3, unconsolidated) still opens, silently
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's own warning on writing format-3 text
        twin[0].to_zarr(tmp_path / "v3.zarr", zarr_format=3, consolidated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "rn" in open_store(tmp_path / "v3.zarr")


def test_a_killed_writers_partial_store_is_removed_and_never_opened(tmp_path, twin):
    """``kill -9`` leaves the temporary directory: the next write of the same store
    removes it (its process is gone), a live writer's is kept, and neither opens."""
    import socket
    import subprocess
    import sys

    from h2mv_hybrid.data.store import open_store

    out = tmp_path / "store.zarr"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    dead = tmp_path / f".store.zarr.{host}-{gone}.abc123.partial"
    live = tmp_path / f".store.zarr.{host}-{os.getppid()}.def456.partial"
    for d in (dead, live):
        write_store(*twin, d)  # a complete-looking zarr tree under a temporary name
    with pytest.raises(FileNotFoundError, match=r"expected a complete store, found .*partial"):
        open_store(dead)
    write_store(*twin, out)
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "store.zarr"])


def test_one_degree_grid_works():
    store, _ = synthesize(TwinConfig(res=1.0, years="2001-2001", seed=0))
    assert store.sizes["lat"] == 180 and store.sizes["lon"] == 360
    assert 8000 < int(store["mask"].sum()) < 14000


def test_bad_settings():
    with pytest.raises(ValueError, match="years: expected 'YYYY-YYYY'"):
        synthesize(TwinConfig(years="2010-2001"))
    with pytest.raises(ValueError, match=r"res: expected a grid spacing in \[0.25, 10\]"):
        synthesize(TwinConfig(res=30))


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    cli.main(["synth", "--out", str(out), "--res", "8", "--years", "2001-2001"])
    assert "twin store:" in capsys.readouterr().out
    check_store(open_store(out))
    with pytest.raises(SystemExit) as err:
        cli.main(["synth", "--out", str(out), "--res", "8", "--years", "2001-2001"])
    assert "exists; pass overwrite=True" in str(err.value)
    assert Path(synth_mod.synth(str(out), res=8, years="2001", overwrite=True)) == out
