"""h2mv import basins: basin series in three shapes, unit conversion, PET, snow cover."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from h2mv_hybrid import cli
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.pet import oudin_pet
from h2mv_hybrid.data.schema import StoreError, check_store
from h2mv_hybrid.data.store import open_store
from h2mv_hybrid.importers.basins import BasinMapping, basin_store
from h2mv_hybrid.options import parse_record

IDS = ["alp", "jura", "plain"]
AREA = {"alp": 120.0, "jura": 493.0, "plain": 2283.0}  # km²
LAT = {"alp": 46.6, "jura": 47.2, "plain": 47.5}
DAYS = pd.date_range("2000-01-01", "2003-12-31", freq="D")


def series(basin: str, seed: int) -> pd.DataFrame:
    """Daily P (mm), T (°C), PET (mm), Q (m³ s⁻¹) and snow cover (%) of a basin."""
    rng = np.random.default_rng(seed)
    doy = DAYS.day_of_year.to_numpy()
    t = 6.0 - 9.0 * np.cos(2 * np.pi * (doy - 20) / 365) + rng.normal(0, 2, len(DAYS))
    p = np.where(rng.random(len(DAYS)) < 0.4, rng.gamma(0.9, 9.0, len(DAYS)), 0.0)
    pet = np.clip(1.5 + 1.2 * np.sin(2 * np.pi * (doy - 100) / 365), 0.1, None)
    q_mm = np.convolve(p, np.exp(-np.arange(60) / 15.0) / 15.0 * 0.5)[:len(DAYS)]
    sca = np.clip(100 * (1 - t / 4), 0, 100)
    sca[rng.random(len(DAYS)) < 0.3] = np.nan  # clouds
    q = q_mm * AREA[basin] / 86.4
    q[rng.random(len(DAYS)) < 0.03] = np.nan
    return pd.DataFrame({"date": DAYS.strftime("%Y-%m-%d"), "P": p.round(2), "T": t.round(2),
                         "PET": pet.round(3), "Q": q, "SCA": sca.round(1)})


def docs_mapping() -> str:
    """The mapping of docs/data.md's worked example, as written there."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    return re.search(r"<!-- example: basins-mapping -->\n```yaml\n(.*?)```", text, re.S).group(1)


def attributes(path: Path, coordinates: bool = True) -> None:
    table = pd.DataFrame({"basin": IDS, "area_km2": [AREA[b] for b in IDS],
                          "elev_mean": [1900.0, 900.0, 450.0], "frac_forest": [0.3, 0.5, 0.2]})
    if coordinates:
        table["lat"] = [LAT[b] for b in IDS]
        table["lon"] = [8.0, 7.0, 9.0]
    table.to_csv(path, index=False)


VARIABLES = {"prec": {"column": "P", "units": "mm/day"}, "tair": {"column": "T", "units": "degC"},
             "pet": {"column": "PET", "units": "mm day-1"}, "q": {"column": "Q", "units": "m3 s-1"}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("basins")
    # A: one CSV per basin, runoff in m³ s⁻¹, PET supplied, coordinates
    a = root / "per_basin"
    (a / "series").mkdir(parents=True)
    for i, b in enumerate(IDS):
        series(b, i).to_csv(a / "series" / f"{b}.csv.gz", index=False)
    attributes(a / "attributes.csv")
    (a / "mapping.yaml").write_text(docs_mapping())  # the worked example of docs/data.md
    # B: one long table, runoff already in mm day⁻¹, no PET (Oudin from T and latitude)
    b_dir = root / "long_table"
    b_dir.mkdir()
    frames = []
    for i, b in enumerate(IDS):
        f = series(b, i)
        f["Q"] = f["Q"] * 86.4 / AREA[b]
        frames.append(f.assign(station=b))
    pd.concat(frames).to_csv(b_dir / "all.csv", index=False)
    attributes(b_dir / "attributes.csv")
    variables = {k: v for k, v in VARIABLES.items() if k != "pet"}
    variables["q"] = {"column": "Q", "units": "mm d-1"}
    (b_dir / "mapping.yaml").write_text(yaml.safe_dump({
        "series": {"table": "all.csv", "id": "station", "date": "date", "variables": variables},
        "attributes": {"file": "attributes.csv", "id": "basin", "lat": "lat", "lon": "lon",
                       "features": ["elev_mean"]}}))
    # C: NetCDF (basin, time), temperature in K, PET supplied, no coordinates at all
    c = root / "netcdf"
    c.mkdir()
    data = {k: (("basin", "time"), np.stack([series(b, i)[k].to_numpy(float)
                                             for i, b in enumerate(IDS)]))
            for k in ("P", "T", "PET", "Q", "SCA")}
    data["T"] = (data["T"][0], data["T"][1] + 273.15)
    # snow cover in two elevation bands: the upper one snowier, clouded on other days
    low = data.pop("SCA")[1]
    high = np.clip(low + 30.0, 0, 100)
    high[:, ::3] = np.nan
    data["SCA_low"], data["SCA_high"] = (("basin", "time"), low), (("basin", "time"), high)
    xr.Dataset(data, coords={"basin": IDS, "time": DAYS}).to_netcdf(c / "basins.nc")
    attributes(c / "attributes.csv", coordinates=False)
    variables = dict(VARIABLES, tair={"column": "T", "units": "K"},
                     sca={"column": ["SCA_low", "SCA_high"], "units": "%",
                          "weights": [0.7, 0.3]})
    (c / "mapping.yaml").write_text(yaml.safe_dump({
        "series": {"netcdf": "basins.nc", "id": "basin", "date": "time", "variables": variables},
        "attributes": {"file": "attributes.csv", "id": "basin", "area": "area_km2"}}))
    return root


def test_three_shapes_import_through_the_cli(folders, capsys):
    stores = {}
    for name in ("per_basin", "long_table", "netcdf"):
        out = folders / f"{name}.zarr"
        cli.main(["import", "basins", "--mapping", str(folders / name / "mapping.yaml"),
                  "--out", str(out)])
        assert "3 basins, 1461 days" in capsys.readouterr().out
        stores[name] = ds = open_store(out)
        check_store(ds, constraints=["q"])
        assert list(ds["gauge_id"].values) == IDS
    raw = {b: series(b, i) for i, b in enumerate(IDS)}
    a, b, c = stores["per_basin"], stores["long_table"], stores["netcdf"]
    for i, basin in enumerate(IDS):
        # supplied PET used as given; Oudin only without it
        np.testing.assert_allclose(a["pet"].values[:, i], raw[basin]["PET"], rtol=1e-6)
        np.testing.assert_allclose(c["pet"].values[:, i], raw[basin]["PET"], rtol=1e-6)
        oudin = oudin_pet(raw[basin]["T"].to_numpy(), LAT[basin], DAYS.day_of_year.to_numpy())
        np.testing.assert_allclose(b["pet"].values[:, i], oudin, rtol=1e-5, atol=1e-6)
        # m³ s⁻¹ → mm day⁻¹ by hand: Q · 86 400 s / (A · 10⁶ m²) · 1000 mm/m
        by_hand = raw[basin]["Q"].to_numpy() * 86400 / (AREA[basin] * 1e6) * 1000
        np.testing.assert_allclose(a["q"].values[:, i], by_hand, rtol=1e-6)
        np.testing.assert_allclose(b["q"].values[:, i], by_hand, rtol=1e-5)
        np.testing.assert_allclose(a["tair"].values[:, i], raw[basin]["T"] + 273.15, rtol=1e-6)
        np.testing.assert_allclose(c["tair"].values[:, i], raw[basin]["T"] + 273.15, rtol=1e-6)
        # bands by hand: 0.7 low + 0.3 high where both are seen; low alone where the high
        # band is clouded; NaN where both are
        low = raw[basin]["SCA"].to_numpy()
        high = np.clip(low + 30.0, 0, 100)
        high[::3] = np.nan
        both = 0.7 * low + 0.3 * high
        by_hand = np.where(np.isnan(high), low, np.where(np.isnan(low), high, both)) / 100
        np.testing.assert_allclose(c["sca"].values[:, i], by_hand, rtol=1e-6)
    assert "supplied" in a["pet"].attrs["method"] and "Oudin" in b["pet"].attrs["method"]
    assert list(a["feature"].values) == ["area_km2", "elev_mean", "frac_forest"]  # raw units
    assert a["static"].sel(feature="elev_mean").values.tolist() == [1900.0, 900.0, 450.0]
    assert list(b["feature"].values) == ["elev_mean"]
    assert np.isnan(c["lat"].values).all()  # no coordinates: imported all the same
    out = folders / "chosen.zarr"
    cli.main(["import", "basins", "--mapping", str(folders / "per_basin" / "mapping.yaml"),
              "--out", str(out), "--features", "frac_forest", "elev_mean", "--basins", "jura",
              "alp"])
    chosen = open_store(out)
    assert list(chosen["feature"].values) == ["frac_forest", "elev_mean"]
    assert list(chosen["gauge_id"].values) == ["jura", "alp"]
    with pytest.raises(ValueError, match="lat, lon: expected coordinates of every modelled "
                                         "cell for spatial folds"):
        H2MVDataModule(str(folders / "netcdf.zarr"), targets=["q"], n_folds=2).setup("fit")


def test_bad_mappings_are_named(folders):
    root = folders / "per_basin"
    raw = yaml.safe_load((root / "mapping.yaml").read_text())

    def store(change):
        spec = yaml.safe_load(yaml.safe_dump(raw))
        change(spec)
        return basin_store(parse_record(BasinMapping, spec, "mapping.yaml"), root)

    with pytest.raises(StoreError, match=r"q: expected units among 'mm day-1'.*'m3 s-1'.*"
                                         r"'cfs'.*'l/s'.*found 'mm/h'"):
        store(lambda s: s["series"]["variables"]["q"].update(units="mm/h"))
    with pytest.raises(StoreError, match="q: expected the basin areas"):
        store(lambda s: s["attributes"].pop("area"))
    with pytest.raises(StoreError, match="pet: expected PET among the series, or basin "
                                         "latitudes"):
        store(lambda s: (s["series"]["variables"].pop("pet"), s["attributes"].pop("lat")))
    with pytest.raises(StoreError, match=r"alp: expected columns Q_mm \(q\) of the mapping, "
                                         r"found date, P, T, PET, Q, SCA"):
        store(lambda s: s["series"]["variables"]["q"].update(column="Q_mm"))
    with pytest.raises(StoreError, match="attributes.features: expected columns of "
                                         "attributes.csv, found unknown soil"):
        store(lambda s: s["attributes"].update(features=["soil"]))
    with pytest.raises(ValueError, match=r"mapping.yaml: series: expected keys among "
                                         r".*found folder"):
        store(lambda s: s["series"].update(folder="x"))


def test_a_snow_cover_constraint_trains_on_a_snowy_basin(folders):
    from h2mv_hybrid.constraints import Constraint
    from h2mv_hybrid.model.module import H2MVHybrid
    from h2mv_hybrid.model.networks import HybridSettings

    store = str(folders / "snow.zarr")
    cli.main(["import", "basins", "--mapping", str(folders / "netcdf" / "mapping.yaml"),
              "--out", store])
    dm = H2MVDataModule(store, targets=["q", "sca"], split="temporal", batch_size=3,
                        train_start="2001-01-01", train_end="2001-12-31",
                        val_start="2002-01-01", val_end="2002-12-31",
                        test_start="2003-01-01", test_end="2003-12-31")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["sca"].shape == batch["q"].shape and torch.isnan(batch["sca"]).any()
    torch.manual_seed(0)
    model = H2MVHybrid(stats=dm.stats, constraints=[
        Constraint("q", "q_total", "daily"), Constraint("sca", "snow_cover", "daily")],
        network=HybridSettings(lstm_hidden=8, static_hidden=8, code_size=4,
                               state_feedback=False))
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    k = model.observers["snow_cover"].raw
    assert torch.isfinite(k.grad) and float(k.grad) != 0.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    out = model(batch, "val")
    assert 0 <= float(out.daily["snow_cover"].min()) and float(out.daily["snow_cover"].max()) < 1
    assert float(out.daily["snow_cover"].max()) > 0  # there is snow in winter


def test_snow_covered_fraction_by_hand_and_gradcheck():
    from process_layers.snow import snow_covered_fraction

    swe = torch.tensor([0.0, 30.0, 300.0], dtype=torch.float64, requires_grad=True)
    k = torch.tensor(30.0, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(snow_covered_fraction(swe, k).detach(),
                               torch.tensor([0.0, 1 - np.exp(-1), 1 - np.exp(-10)],
                                            dtype=torch.float64))
    assert torch.autograd.gradcheck(snow_covered_fraction, (swe, k))
