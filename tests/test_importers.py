"""Real data in: Oudin PET, PET as the energy forcing, daily runoff, the CAMELS and NetCDF importers."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from helpers.camels_folder import write_camels_folder

from h2mv_hybrid import cli
from h2mv_hybrid.constraints import align
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.pet import extraterrestrial_radiation, oudin_pet
from h2mv_hybrid.data.schema import MM_DAY_AS_W_M2, StoreError, check_store, with_energy
from h2mv_hybrid.data.store import open_store
from h2mv_hybrid.importers.camels import camels_store, import_camels
from h2mv_hybrid.importers.netcdf import netcdf_store, regrid

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "camels-caravan-41"


# -- Oudin PET -------------------------------------------------------------------------
def test_extraterrestrial_radiation_matches_fao56_examples():
    # FAO-56 Example 8: 20° S on 3 September (J = 246): Ra = 32.2 MJ m-2 day-1
    assert extraterrestrial_radiation(-20.0, 246) == pytest.approx(32.2, abs=0.05)
    # polar night gives zero, polar day the whole day's sum (> equator's at the solstice)
    ra = extraterrestrial_radiation(np.array([80.0, -80.0, 0.0]), 172)
    assert ra[1] == 0.0 and ra[0] > ra[2] > 30


def test_oudin_pet_by_hand():
    re = extraterrestrial_radiation(45.0, 180)
    # PE = Re / (λ ρ) (T + 5) / 100, in mm: 20 °C → Re / 2.45 × 0.25
    assert oudin_pet(20.0, 45.0, 180) == pytest.approx(re / 2.45 * 0.25, rel=1e-12)
    assert oudin_pet(-5.0, 45.0, 180) == 0.0 and oudin_pet(-20.0, 45.0, 180) == 0.0
    # broadcasting: days × cells
    pet = oudin_pet(np.full((3, 2), 10.0), np.array([0.0, 60.0]), np.array([[1], [100], [200]]))
    assert pet.shape == (3, 2) and (pet >= 0).all()


def test_fao56_net_radiation_example_18():
    from h2mv_hybrid.data.pet import fao56_net_radiation

    # FAO-56 Example 18: Rio de Janeiro (22°54' S), 15 May (J = 135), Rs = 14.5 MJ m-2
    # day-1, Tmax 25.1 °C, Tmin 19.1 °C, ea 2.1 kPa: Rso 18.8, Rns 11.1, Rnl 3.5, Rn 7.6
    assert fao56_net_radiation(14.5, 25.1, 19.1, 2.1, -22.9, 135) == pytest.approx(7.6,
                                                                                   abs=0.05)
    # Rnl by hand from the example's rounded terms: 37.3 · 0.137 · (1.35 · 14.5 / 18.8 − 0.35)
    rso = 0.75 * extraterrestrial_radiation(-22.9, 135)
    rnl = 4.903e-9 * ((25.1 + 273.16) ** 4 + (19.1 + 273.16) ** 4) / 2 \
        * (0.34 - 0.14 * np.sqrt(2.1)) * (1.35 * 14.5 / rso - 0.35)
    assert rnl == pytest.approx(3.5, abs=0.05)
    assert fao56_net_radiation(14.5, 25.1, 19.1, 2.1, -22.9, 135) == pytest.approx(
        0.77 * 14.5 - rnl, rel=1e-12)
    # elevation raises the clear-sky Rso (eq. 37): less longwave loss at the same Rs
    assert fao56_net_radiation(14.5, 25.1, 19.1, 2.1, -22.9, 135, 2000.0) > \
        fao56_net_radiation(14.5, 25.1, 19.1, 2.1, -22.9, 135, 0.0)
    # Rs / Rso is capped at 1; in the polar night (Rso = 0) it counts as 1, no NaN
    clear = fao56_net_radiation(np.array([20.0, 40.0]), 25.1, 19.1, 2.1, -22.9, 135)
    assert clear[1] - clear[0] == pytest.approx(0.77 * 20.0, rel=1e-9)
    night = fao56_net_radiation(np.array([0.0]), -20.0, -30.0, 0.1, 80.0, 355)
    assert np.isfinite(night).all() and night[0] < 0


# -- PET as the energy forcing, daily runoff in the schema -------------------------------
@pytest.fixture(scope="module")
def camels_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("camels_src")
    write_camels_folder(path)
    return path


@pytest.fixture(scope="module")
def camels_path(tmp_path_factory, camels_dir):
    out = tmp_path_factory.mktemp("camels") / "camels.zarr"
    import_camels(str(camels_dir), str(out))
    return out


def test_pet_stands_in_for_net_radiation(camels_path):
    raw = xr.open_zarr(camels_path, consolidated=False)
    assert "rn" not in raw and "pet" in raw
    ds = with_energy(raw)
    np.testing.assert_allclose(ds["rn"].values, raw["pet"].values * MM_DAY_AS_W_M2, rtol=1e-6)
    assert ds["rn"].attrs["energy_source"] == "pet"
    # opened for batch reads (no dask), the derived rn stays lazy: nothing loaded whole
    assert open_store(camels_path, dask=False)["rn"].chunks is not None
    # the process layer's conversion of rn (× 0.0864 / 2.45) gives PET back in mm day-1
    assert MM_DAY_AS_W_M2 * 0.0864 / 2.45 == pytest.approx(1.0)
    info = check_store(raw, constraints=["q"])
    assert info.layout == "points" and info.n_cells == 6
    # rn wins where both exist: a store with its own rn is left unchanged
    both = raw.assign(rn=raw["pet"] * 0 + 100.0)
    both["rn"].attrs = {"units": "W m-2", "long_name": "net radiation"}
    assert float(with_energy(both)["rn"].max()) == 100.0


def test_missing_energy_and_gappy_pet_are_named(camels_path):
    raw = xr.open_zarr(camels_path, consolidated=False).load()
    with pytest.raises(StoreError, match="rn.*replaced by pet"):
        check_store(raw.drop_vars("pet"))
    bad = raw.copy()
    bad["pet"] = bad["pet"].where(bad["time"] != bad["time"][10])
    with pytest.raises(StoreError, match=r"pet \(the energy forcing\).*NaN at 6 cells"):
        check_store(bad)
    wrong = raw.copy()
    wrong["q"] = wrong["q"].T
    with pytest.raises(StoreError, match=r"q: expected dims \('month', 'cell'\) or "
                                          r"\('time', 'cell'\), found \('cell', 'time'\)"):
        check_store(wrong)


def test_monthly_aggregation_of_a_daily_target_by_hand():
    month_of_day = torch.tensor([0, 0, 0, 1, 1])
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0, 6.0]])
    obs = torch.tensor([[1.5, float("nan"), 2.5, float("nan"), float("nan")]])
    p, o = align(pred, obs, "monthly", month_of_day)
    # month 0: the observed days 1 and 3 only; month 1: nothing observed → NaN
    assert p[0, 0] == pytest.approx(2.0) and o[0, 0] == pytest.approx(2.0)
    assert torch.isnan(o[0, 1])
    # an observation already monthly is left alone; the prediction is averaged
    p, o = align(pred, torch.tensor([[1.0, 2.0]]), "monthly", month_of_day)
    assert torch.allclose(p, torch.tensor([[2.0, 5.0]])) and torch.equal(o, torch.tensor(
        [[1.0, 2.0]]))
    p, o = align(pred, obs, "daily", month_of_day)
    assert torch.equal(p, pred)


# -- the CAMELS importer ---------------------------------------------------------------
def test_camels_store_contents(camels_dir, camels_path):
    ds = open_store(camels_path)
    src = pd.read_csv(next(camels_dir.glob("*.csv.gz")), parse_dates=["date"])
    gid = next(camels_dir.glob("*.csv.gz")).name.split(".")[0]
    cell = int(np.flatnonzero(ds["gauge_id"].values == gid)[0])
    lat = float(ds["lat"][cell])
    np.testing.assert_allclose(ds["prec"][:, cell], src["P_mm"], rtol=1e-6)
    np.testing.assert_allclose(ds["tair"][:, cell], src["T_degC"] + 273.15, rtol=1e-6)
    np.testing.assert_allclose(ds["pet"][:, cell], oudin_pet(
        src["T_degC"].to_numpy(), lat, src["date"].dt.day_of_year.to_numpy()), rtol=1e-5)
    q = ds["q"][:, cell].values
    np.testing.assert_array_equal(np.isnan(q), src["Q_mm"].isna())  # gaps kept, not filled
    assert ds["q"].dims == ("time", "cell") and ds["mask"].all()
    st = ds["static"].values
    np.testing.assert_allclose(st.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(st.std(1), 1, atol=1e-4)
    assert "soil_depth_pelletier" in ds["feature"].values
    assert "baseflow_index" not in ds["feature"].values
    attrs = xr.open_zarr(camels_path, group="attributes", consolidated=False)
    assert "baseflow_index" in attrs and "aridity" in attrs
    assert list(attrs["gauge_id"].values) == list(ds["gauge_id"].values)
    # the ERA5-Land PET column (12 mm/day here, an artefact in the real data) is unused
    assert float(ds["pet"].max()) < 12


def test_camels_bad_input_is_named(camels_dir, tmp_path):
    with pytest.raises(StoreError, match="no streamflow signatures.*baseflow_index"):
        camels_store(camels_dir, features=["aridity", "baseflow_index"])
    with pytest.raises(StoreError, match="unknown not_an_attribute"):
        camels_store(camels_dir, features=["not_an_attribute"])
    with pytest.raises(StoreError, match="expected gauge ids"):
        camels_store(camels_dir, basins=["99999999"])
    with pytest.raises(StoreError, match="expected series over 1980-01-01"):
        camels_store(camels_dir, start="1980-01-01")
    broken = tmp_path / "broken"
    ids = write_camels_folder(broken, n_basins=2)
    df = pd.read_csv(broken / f"{ids[1]}.csv.gz")
    df.loc[40, "T_degC"] = np.nan
    df.to_csv(broken / f"{ids[1]}.csv.gz", index=False)
    with pytest.raises(StoreError, match=rf"{ids[1]}.csv.gz: expected complete forcing T_degC, "
                                         r"found 1 missing days \(first 1981-02-10\)"):
        camels_store(broken)
    soil = pd.read_csv(broken / "attributes/camels_soil.txt", sep=";", dtype={"gauge_id": str})
    soil.loc[0, "clay_frac"] = np.nan
    soil.to_csv(broken / "attributes/camels_soil.txt", sep=";", index=False)
    df.loc[40, "T_degC"] = 3.0
    df.to_csv(broken / f"{ids[1]}.csv.gz", index=False)
    with pytest.raises(StoreError, match=f"expected clay_frac for every basin, found none for "
                                         f"{ids[0]}"):
        camels_store(broken)


def test_camels_cli_refuses_to_overwrite(camels_dir, camels_path, capsys):
    with pytest.raises(SystemExit, match="exists"):
        cli.main(["import", "camels", "--source", str(camels_dir), "--out", str(camels_path)])
    out = camels_path.parent / "again.zarr"
    cli.main(["import", "camels", "--source", str(camels_dir), "--out", str(out),
              "--basins", json.dumps([str(g) for g in open_store(camels_path)["gauge_id"].values[:3]])])
    assert open_store(out).sizes["cell"] == 3 and "3 basins" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED.exists(), reason="shared/data/camels-caravan-41 not present")
def test_camels_import_of_the_real_folder(tmp_path):
    store, group = camels_store(SHARED, basins=["01022500", "09512280"], end="1982-12-31")
    assert store.sizes["cell"] == 2 and store.sizes["time"] == 730
    pet = store["pet"].mean("time").values
    assert ((pet > 0.5) & (pet < 5)).all()  # Oudin, not ERA5-Land's 4–27 mm/day
    assert float(group["baseflow_index"][0]) == pytest.approx(0.5545, abs=1e-4)  # camels_hydro


def test_hybrid_daily_and_monthly_runoff_losses_train(camels_path):
    """One batch of a point store with daily q: the daily and monthly constraints both give
    finite losses and gradients (the monthly one from the jointly observed days)."""
    from h2mv_hybrid.constraints import Constraint
    from h2mv_hybrid.model.module import H2MVHybrid
    from h2mv_hybrid.model.networks import HybridSettings

    dm = H2MVDataModule(str(camels_path), targets=["q"], n_folds=2, block_deg=4.0,
                        train_start="1982-01-01", train_end="1982-12-31", batch_size=6)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["q"].shape[1] == 365 and torch.isnan(batch["q"]).any()
    for how in ("daily", "monthly"):
        model = H2MVHybrid(stats=dm.stats, constraints=[Constraint("q", "q_total", how)],
                           network=HybridSettings(lstm_hidden=8, static_hidden=8, code_size=4,
                                                  state_feedback=False))
        loss = model.training_step(batch, 0)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# -- the NetCDF importer ---------------------------------------------------------------
def _era5land_daily(folder: Path) -> None:
    """ERA5-Land daily statistics layout: valid_time, latitude (descending), longitude 0–360,
    one file per month; t2m K, tp m day-1, ssr and str J m-2 day-1."""
    folder.mkdir(parents=True)
    lat = np.arange(60.0, 29.9, -0.5)  # 0.5° cells centred on .0/.5: edges at .25/.75
    lon = np.arange(0.0, 360.0, 0.5)
    rng = np.random.default_rng(0)
    for month in pd.date_range("2001-01-01", "2001-03-01", freq="MS"):
        t = pd.date_range(month, month + pd.offsets.MonthEnd(0), freq="D")
        shape = (len(t), len(lat), len(lon))
        ds = xr.Dataset(
            {"t2m": (("valid_time", "latitude", "longitude"),
                     (280 + rng.normal(0, 3, shape)).astype(np.float32)),
             "tp": (("valid_time", "latitude", "longitude"),
                    rng.gamma(0.5, 0.004, shape).astype(np.float32)),
             "ssr": (("valid_time", "latitude", "longitude"),
                     np.full(shape, 150.0 * 86400, np.float32)),
             "str": (("valid_time", "latitude", "longitude"),
                     np.full(shape, -60.0 * 86400, np.float32))},
            coords={"valid_time": t, "latitude": lat, "longitude": lon})
        ds["t2m"].attrs["units"] = "K"
        ds.to_netcdf(folder / f"era5land_{month:%Y%m}.nc", engine="h5netcdf")


def _grace_mascon(folder: Path) -> None:
    """GRACE JPL mascon layout: lwe_thickness in cm at mid-month, 0.5° lat/lon 0–360, a gap."""
    folder.mkdir(parents=True)
    lat = np.arange(-89.75, 90, 0.5)
    lon = np.arange(0.25, 360, 0.5)
    t = pd.to_datetime(["2001-01-16", "2001-03-16"])  # February missing (mission gap)
    lwe = np.stack([np.full((len(lat), len(lon)), v, np.float32) for v in (1.5, -2.0)])
    xr.Dataset({"lwe_thickness": (("time", "lat", "lon"), lwe)},
               coords={"time": t, "lat": lat, "lon": lon}).to_netcdf(
        folder / "GRCTellus.JPL.mascon.nc", engine="h5netcdf")


def _fluxcom_monthly(folder: Path) -> None:
    """FLUXCOM-like monthly LE (MJ m-2 day-1) on a 0.5° grid, latitude descending."""
    folder.mkdir(parents=True)
    lat = np.arange(89.75, -90, -0.5)
    lon = np.arange(-179.75, 180, 0.5)
    t = pd.date_range("2001-01-01", "2001-03-01", freq="MS")
    le = np.stack([np.full((len(lat), len(lon)), v, np.float32) for v in (2.45, 4.9, 7.35)])
    xr.Dataset({"LE": (("time", "lat", "lon"), le)}, coords={"time": t, "lat": lat, "lon": lon}
               ).to_netcdf(folder / "LE.RS_METEO.monthly.2001.nc", engine="h5netcdf")


def _static(folder: Path) -> None:
    folder.mkdir(parents=True)
    lat = np.arange(-89.75, 90, 0.5)
    lon = np.arange(-179.75, 180, 0.5)
    elev = np.add.outer(lat, lon * 0).astype(np.float32)
    lsm = np.ones_like(elev)
    lsm[(lat > 40) & (lat < 42)] = 0.0  # a band of sea
    xr.Dataset({"z": (("lat", "lon"), elev), "lsm": (("lat", "lon"), lsm)},
               coords={"lat": lat, "lon": lon}).to_netcdf(folder / "static.nc",
                                                           engine="h5netcdf")


MAPPING = """
grid: {res: 1.0, lat: [38, 46], lon: [2, 8]}
period: {start: 2001-01-01, end: 2001-03-31}
variables:
  - {name: tair, files: "era5/*.nc", source: t2m}
  - {name: prec, files: "era5/*.nc", source: tp, scale: 1000}
  - {name: rn, files: "era5/*.nc", source: [ssr, str], scale: 1.1574074e-5, regrid: interp}
  - {name: tws, files: "grace/*.nc", source: lwe_thickness, scale: 10}
  - {name: et, files: "fluxcom/*.nc", source: LE, scale: 0.40816327}
static:
  - {feature: elevation, files: "static/*.nc", source: z}
mask: {files: "static/*.nc", source: lsm, mask_min: 0.5}
"""


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    root = tmp_path_factory.mktemp("products")
    _era5land_daily(root / "era5")
    _grace_mascon(root / "grace")
    _fluxcom_monthly(root / "fluxcom")
    _static(root / "static")
    (root / "mapping.yaml").write_text(MAPPING)
    return root


def test_netcdf_store_from_three_product_layouts(products):
    import yaml

    store = netcdf_store(yaml.safe_load(MAPPING), root=products)
    # lazy until written: dask arrays, no file loaded whole
    assert all(store[v].chunks is not None for v in ("tair", "prec", "rn", "tws", "et"))
    np.testing.assert_allclose(store["lat"], np.arange(38.5, 46, 1.0))
    np.testing.assert_allclose(store["lon"], np.arange(2.5, 8, 1.0))
    assert store["tair"].dims == ("time", "lat", "lon") and store.sizes["time"] == 90
    # unit conversions: J m-2 day-1 → W m-2, cm → mm, MJ m-2 day-1 → mm day-1
    np.testing.assert_allclose(store["rn"].values, 90.0, rtol=1e-5)
    tws = store["tws"].values
    np.testing.assert_allclose(tws[0], 15.0) and np.testing.assert_allclose(tws[2], -20.0)
    assert np.isnan(tws[1]).all()  # the mission gap stays a gap
    np.testing.assert_allclose(store["et"].values[:, 0, 0], [1.0, 2.0, 3.0], rtol=1e-5)
    # ERA5 cells are centred on .0/.5: not aligned with 1° cells, so interpolated; the
    # target centre 38.5 °N 2.5 °E is a source centre, so bilinear gives its value
    src = xr.open_mfdataset(sorted((products / "era5").glob("*.nc")), engine="h5netcdf")
    np.testing.assert_allclose(store["tair"].values[5, 0, 0],
                               src["t2m"].isel(valid_time=5).sel(latitude=38.5,
                                                                 longitude=2.5), rtol=1e-6)
    # GRACE and FLUXCOM 0.5° cells (centred on .25/.75) coarsen: 2 × 2 block means
    assert np.isfinite(store["tair"].values).all()
    # the sea band (40–42 °N) is masked; everything else is modelled
    mask = store["mask"].values
    assert not mask[(store["lat"].values > 40) & (store["lat"].values < 42)].any()
    assert mask[store["lat"].values < 40].all()
    assert list(store["feature"].values) == ["elevation"]


def test_regrid_coarsens_aligned_grids_and_interpolates_others():
    lat = np.arange(0.25, 4, 0.5)
    lon = np.arange(10.25, 14, 0.5)
    da = xr.DataArray(np.add.outer(lat, lon), dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    out = regrid(da, np.array([0.5, 1.5]), np.array([10.5, 11.5]), 1.0)
    # block mean of the four 0.5° cells of the 1° cell 0–1 °N, 10–11 °E
    assert float(out[0, 0]) == pytest.approx(np.mean([0.25, 0.75]) + np.mean([10.25, 10.75]))
    assert float(out[1, 1]) == pytest.approx(1.5 + 11.5)
    lin = regrid(da, np.array([1.0]), np.array([11.0]), 0.7)  # not a whole multiple
    assert float(lin[0, 0]) == pytest.approx(12.0)
    with pytest.raises(StoreError, match="whole multiple"):
        regrid(da, np.array([1.0]), np.array([11.0]), 0.7, how="coarsen")


def test_netcdf_cli_writes_a_checked_store(products, tmp_path, capsys):
    out = tmp_path / "grid.zarr"
    cli.main(["import", "netcdf", "--mapping", str(products / "mapping.yaml"), "--out", str(out)])
    ds = open_store(out)
    info = check_store(ds, constraints=["tws", "et"])
    assert info.layout == "grid" and info.n_cells == int(ds["mask"].sum()) > 0
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_netcdf_mapping_errors_are_named(products, tmp_path):
    import yaml

    base = yaml.safe_load(MAPPING)
    bad = dict(base, variables=[{"name": "tmp2m", "files": "era5/*.nc", "source": "t2m"}])
    with pytest.raises(StoreError, match="expected a schema variable.*found 'tmp2m'"):
        netcdf_store(bad, root=products)
    bad = dict(base, variables=[{"name": "tair", "files": "era5/*.nc", "source": "t2"}])
    with pytest.raises(StoreError, match="expected t2 in era5/\\*.nc, found t2m, tp, ssr, str"):
        netcdf_store(bad, root=products)
    bad = dict(base, variables=[{"name": "tair", "files": "nothing/*.nc", "source": "t2m"}])
    with pytest.raises(FileNotFoundError, match="found none"):
        netcdf_store(bad, root=products)
    # °C where K is expected: the store check says so before anything is written
    bad = dict(base)
    bad["variables"] = [dict(v) for v in base["variables"]]
    bad["variables"][0]["offset"] = -273.15
    with pytest.raises(StoreError, match="tair.*looks like °C"):
        netcdf_store(bad, root=products)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(dict(bad, root=str(products))))
    with pytest.raises(SystemExit, match="looks like °C"):
        cli.main(["import", "netcdf", "--mapping", str(tmp_path / "m.yaml"),
                  "--out", str(tmp_path / "x.zarr")])
    assert not (tmp_path / "x.zarr").exists()
