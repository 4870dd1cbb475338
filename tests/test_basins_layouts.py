"""h2mv import basins on data sets as hydrologists get them: forcing and discharge in files
of their own, whitespace text with header lines, year/month/day columns, missing-value
codes, cubic feet per second, attribute tables by theme; the CAMELS-US mapping shipped in
experiments/import/ read against a folder in NCAR's layout."""

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from h2mv_hybrid import cli
from h2mv_hybrid.data.store import open_store
from h2mv_hybrid.importers.basins import CONVERSIONS, BasinMapping, basin_store
from h2mv_hybrid.importers.camels import FEATURES
from h2mv_hybrid.options import parse_record

MAPPING = Path(__file__).resolve().parents[1] / "experiments" / "import" / "camels_us_daymet.yaml"
# Two gauges in two HUC-02 regions; leading zeros are part of the ids.
GAUGES = {"01013500": ("01", 2252.7, 47.24), "02064000": ("02", 246.8, 37.23)}
FORCING_DAYS = {"01013500": pd.date_range("1980-01-01", "1982-12-31"),
                "02064000": pd.date_range("1980-01-01", "1982-11-30")}
# Streamflow starts later than the forcing in one gauge, and has -999 days.
FLOW_DAYS = {"01013500": pd.date_range("1980-01-01", "1982-12-31"),
             "02064000": pd.date_range("1980-03-01", "1982-12-31")}


def _forcing(gauge: str, seed: int) -> pd.DataFrame:
    days = FORCING_DAYS[gauge]
    rng = np.random.default_rng(seed)
    doy = days.day_of_year.to_numpy()
    tmax = 12 - 12 * np.cos(2 * np.pi * (doy - 20) / 365) + rng.normal(0, 2, len(days))
    return pd.DataFrame({
        "Year": days.year, "Mnth": days.month, "Day": days.day, "Hr": 12,
        "dayl(s)": 40000.0, "prcp(mm/day)": np.where(rng.random(len(days)) < 0.4,
                                                     rng.gamma(0.9, 8, len(days)), 0).round(2),
        "srad(W/m2)": 200.0, "swe(mm)": 0.0, "tmax(C)": tmax.round(2),
        "tmin(C)": (tmax - 9 + rng.normal(0, 1, len(days))).round(2), "vp(Pa)": 900.0})


def _flow(gauge: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    q = rng.gamma(2.0, 150.0, len(FLOW_DAYS[gauge])).round(2)
    q[[5, 6, 200]] = -999.0
    return q


def camels_us_folder(root: Path) -> Path:
    """A folder in NCAR's CAMELS-US layout (basin_dataset_public_v1p2 + attributes)."""
    for i, (g, (huc, area, lat)) in enumerate(GAUGES.items()):
        f = root / "basin_mean_forcing" / "daymet" / huc
        f.mkdir(parents=True, exist_ok=True)
        head = f"{lat}\n{250 + 100 * i}\n{area * 1e6:.0f}\n"
        body = _forcing(g, i).to_csv(sep="\t", index=False)
        (f / f"{g}_lump_cida_forcing_leap.txt").write_text(head + body)
        s = root / "usgs_streamflow" / huc
        s.mkdir(parents=True, exist_ok=True)
        days = FLOW_DAYS[g]
        lines = [f"{g} {d.year} {d.month:02d} {d.day:02d} {q:10.2f} {'M' if q < 0 else 'A'}"
                 for d, q in zip(days, _flow(g, i), strict=True)]
        (s / f"{g}_streamflow_qc.txt").write_text("\n".join(lines) + "\n")
    a = root / "camels_attributes_v2.0"
    a.mkdir()
    ids = list(GAUGES)
    rng = np.random.default_rng(7)
    tables = {group: {n: rng.random(len(ids)).round(3) for n in names}
              for group, names in FEATURES.items()}
    tables["topo"].update(gauge_lat=[GAUGES[g][2] for g in ids], gauge_lon=[-68.6, -78.5],
                          area_gages2=[GAUGES[g][1] for g in ids])
    tables["clim"]["high_prec_timing"] = ["son", "jja"]  # text columns, as in CAMELS
    tables["geol"]["geol_1st_class"] = ["Metamorphics", "Acid plutonic rocks"]
    tables["hydro"] = {"baseflow_index": [0.6, 0.5], "runoff_ratio": [0.5, 0.3]}
    tables["name"] = {"huc_02": [1, 2], "gauge_name": ["Fish River", "Falling River"]}
    for group, cols in tables.items():
        pd.DataFrame({"gauge_id": ids, **cols}).to_csv(a / f"camels_{group}.txt", sep=";",
                                                       index=False)
    return root


@pytest.fixture(scope="module")
def camels_us(tmp_path_factory):
    return camels_us_folder(tmp_path_factory.mktemp("camels_us") / "basin_dataset_public_v1p2")


def test_the_camels_us_mapping_reads_ncar_s_layout(camels_us, tmp_path, capsys):
    out = tmp_path / "camels_us.zarr"
    cli.main(["import", "basins", "--mapping", str(MAPPING), "--root", str(camels_us),
              "--out", str(out)])
    printed = capsys.readouterr().out
    ds = open_store(out)
    assert list(ds["gauge_id"].values) == list(GAUGES)  # leading zeros kept
    # the period is the forcing's that both basins cover
    days = pd.DatetimeIndex(ds["time"].values)
    assert days[0] == pd.Timestamp("1980-01-01") and days[-1] == pd.Timestamp("1982-11-30")
    assert f"2 basins, {len(days)} days" in printed
    for i, (g, (_, area, _)) in enumerate(GAUGES.items()):
        f = _forcing(g, i).iloc[:len(days)]
        np.testing.assert_allclose(ds["prec"].values[:, i], f["prcp(mm/day)"], rtol=1e-6)
        # tair: the mean of tmax and tmin, in K
        np.testing.assert_allclose(ds["tair"].values[:, i],
                                   (f["tmax(C)"] + f["tmin(C)"]) / 2 + 273.15, rtol=1e-6)
        # ft³ s⁻¹ → mm day⁻¹ by hand: Q · 0.3048³ m³ · 86 400 s / (A · 10⁶ m²) · 1000 mm/m
        flow = pd.Series(_flow(g, i), index=FLOW_DAYS[g]).reindex(days)
        by_hand = flow.where(flow > -999).to_numpy() * 0.3048 ** 3 * 86400 / (area * 1e6) * 1e3
        np.testing.assert_allclose(ds["q"].values[:, i], by_hand, rtol=1e-5)
    q = ds["q"].values
    assert np.isnan(q[[5, 6, 200], 0]).all() and np.isfinite(q[7:200, 0]).all()  # -999 days
    assert np.isnan(q[:60, 1]).all() and np.isfinite(q[60:65, 1]).all()  # gauge starts later
    assert list(ds["feature"].values) == [n for names in FEATURES.values() for n in names]
    assert "baseflow_index" not in ds["feature"].values  # signatures never features
    assert float(ds["lat"].values[1]) == pytest.approx(37.23)
    assert "Oudin" in ds["pet"].attrs["method"]
    attrs = open_store(out, group="attributes")
    assert "huc_02" not in attrs and "area_gages2" in attrs  # only the mapped tables


def test_conversions_by_hand():
    area = np.array([100.0])
    one = np.array([1.0])
    ft3, ls = CONVERSIONS["q"]["cfs"][0], CONVERSIONS["q"]["l/s"][0]
    # 1 ft³ s⁻¹ over 100 km²: 0.028316846592 m³ · 86 400 / 10⁸ m² = 0.02447 mm day⁻¹
    np.testing.assert_allclose(ft3(one, area), [0.028316846592 * 86400 / 1e8 * 1e3])
    np.testing.assert_allclose(ls(one, area), [1e-3 * 86400 / 1e8 * 1e3])


def _mapping(root: Path, change=None) -> tuple[BasinMapping, Path]:
    raw = yaml.safe_load(MAPPING.read_text())
    if change:
        change(raw)
    return parse_record(BasinMapping, raw, "camels_us_daymet.yaml"), root


def test_bad_layouts_are_named(camels_us, tmp_path):
    from h2mv_hybrid.data.schema import StoreError

    def store(change):
        return basin_store(*_mapping(camels_us, change))

    with pytest.raises(StoreError, match=r"expected a basin id matching id_pattern "
                                         r"'\^\(x\)' in the file name"):
        store(lambda m: m["series"][0].update(id_pattern="^(x)"))
    with pytest.raises(StoreError, match=r"series\[1\].variables: expected each variable "
                                         r"from one source, found prec"):
        store(lambda m: m["series"][1]["variables"].update(
            prec={"column": "Q", "units": "mm/day"}))
    with pytest.raises(StoreError, match=r"_lump_cida_forcing_leap.txt: expected a table "
                                         r"delimited by 'whitespace' with its column names "
                                         r"on line 0, found: Error tokenizing data"):
        store(lambda m: m["series"][0].update(header=0))  # the latitude as column names
    with pytest.raises(StoreError, match=r"expected the date column\(s\) year, month, day, "
                                         r"found Year, Mnth, Day, Hr"):
        store(lambda m: m["series"][0].update(date=["year", "month", "day"]))
    with pytest.raises(StoreError, match=r"date: expected one column, two \(year, day of "
                                         r"year\) or three \(year, month, day\)"):
        store(lambda m: m["series"][1].update(date=["Year", "Mnth", "Day", "Q"]))
    # a column in two attribute tables: kept once where equal, under a name of its own
    # (its table's place in the list) where not; lat is the first table's
    dup = tmp_path / "dup"
    dup.mkdir()
    topo = pd.read_csv(camels_us / "camels_attributes_v2.0" / "camels_topo.txt", sep=";",
                       dtype={"gauge_id": str})
    clim = pd.read_csv(camels_us / "camels_attributes_v2.0" / "camels_clim.txt", sep=";",
                       dtype={"gauge_id": str})
    clim.assign(gauge_lat=1.0, gauge_lon=topo["gauge_lon"]).to_csv(dup / "camels_clim.txt",
                                                                    sep=";", index=False)
    ds, attrs = store(lambda m: m["attributes"]["file"].__setitem__(
        1, str(dup / "camels_clim.txt")))
    assert "gauge_lon_1" not in attrs and attrs["gauge_lat_1"].values.tolist() == [1.0, 1.0]
    np.testing.assert_allclose(ds["lat"].values, [GAUGES[g][2] for g in GAUGES])
    with pytest.raises(ValueError, match=r"series\[1\]: expected keys among .*found skip"):
        store(lambda m: m["series"][1].update(skip=3))
    # a streamflow file with one day on two rows
    twice = tmp_path / "twice"
    shutil.copytree(camels_us, twice)
    path = twice / "usgs_streamflow" / "01" / "01013500_streamflow_qc.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:10] + lines[9:]) + "\n")
    with pytest.raises(StoreError, match=r"01013500: expected one row per day in series\[1\], "
                                         r"found 1980-01-10 twice"):
        basin_store(*_mapping(twice))
    # a forcing day without tmin: refused, not the mean of tmax alone
    gap = tmp_path / "gap"
    shutil.copytree(camels_us, gap)
    path = gap / "basin_mean_forcing" / "daymet" / "02" / "02064000_lump_cida_forcing_leap.txt"
    lines = path.read_text().splitlines()
    cells = lines[20].split("\t")
    lines[20] = "\t".join(cells[:9] + ["NaN"] + cells[10:])  # tmin(C) of 1980-01-17
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match=r"tair: expected complete forcing, found 1 missing "
                                         r"basin-days \(first 02064000 on 1980-01-17\)"):
        basin_store(*_mapping(gap))


def test_net_radiation_is_the_energy_forcing_where_a_data_set_has_it(tmp_path, capsys):
    """Caravan-like series (ERA5-Land net shortwave and net longwave, W m⁻²): their sum is
    ``rn``, the bucket's energy forcing as in the H2MV paper; Oudin PET stays beside it."""
    from h2mv_hybrid.data.schema import energy_source

    days = pd.date_range("2000-01-01", "2001-12-31")
    rng = np.random.default_rng(3)
    (tmp_path / "timeseries").mkdir()
    for b in ("camelsch_2009", "lamah_399"):
        pd.DataFrame({
            "date": days.strftime("%Y-%m-%d"),
            "total_precipitation_sum": rng.gamma(0.8, 4, len(days)).round(2),
            "temperature_2m_mean": rng.normal(8, 6, len(days)).round(2),
            "surface_net_solar_radiation_mean": rng.uniform(20, 250, len(days)).round(1),
            "surface_net_thermal_radiation_mean": rng.uniform(-90, -20, len(days)).round(1),
            "streamflow": rng.gamma(2, 1, len(days)).round(3)}).to_csv(
            tmp_path / "timeseries" / f"{b}.csv", index=False)
    pd.DataFrame({"gauge_id": ["camelsch_2009", "lamah_399"], "gauge_lat": [46.9, 47.8],
                  "gauge_lon": [8.3, 13.0], "area": [493.0, 2283.0]}).to_csv(
        tmp_path / "attributes.csv", index=False)
    mapping = {
        "series": {"files": "timeseries/*.csv", "variables": {
            "prec": {"column": "total_precipitation_sum", "units": "mm/day"},
            "tair": {"column": "temperature_2m_mean", "units": "degC"},
            "rn": {"column": ["surface_net_solar_radiation_mean",
                              "surface_net_thermal_radiation_mean"], "units": "W m-2",
                   "combine": "sum"},
            "q": {"column": "streamflow", "units": "mm/day"}}},
        "attributes": {"file": "attributes.csv", "id": "gauge_id", "lat": "gauge_lat",
                       "lon": "gauge_lon"}}
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    out = tmp_path / "caravan.zarr"
    cli.main(["import", "basins", "--mapping", str(tmp_path / "mapping.yaml"), "--out",
              str(out)])
    assert "net radiation supplied with the data set, PET Oudin" in capsys.readouterr().out
    ds = open_store(out)
    assert energy_source(ds) == "rn" and "Oudin" in ds["pet"].attrs["method"]
    for i, b in enumerate(("camelsch_2009", "lamah_399")):
        raw = pd.read_csv(tmp_path / "timeseries" / f"{b}.csv")
        np.testing.assert_allclose(ds["rn"].values[:, i],
                                   raw["surface_net_solar_radiation_mean"]
                                   + raw["surface_net_thermal_radiation_mean"], rtol=1e-6)
    # daily sums in MJ m⁻² day⁻¹ → the daily mean in W m⁻², by hand: 8.64 MJ = 100 W · 1 day
    np.testing.assert_allclose(CONVERSIONS["rn"]["MJ m-2 day-1"][0](np.array([8.64]), None),
                               [100.0])
    from h2mv_hybrid.data.schema import StoreError

    mapping["series"]["variables"]["rn"]["weights"] = [1.0, 1.0]
    with pytest.raises(StoreError, match=r"rn: expected no weights for combine: sum"):
        basin_store(parse_record(BasinMapping, mapping, "mapping.yaml"), tmp_path)


def _daymet_pixel(path: Path, years: range, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    """A Daymet single-pixel file: metadata lines, year + day-of-year dates, and the 365-day
    calendar (31 December of leap years left out)."""
    days = pd.DatetimeIndex([d for d in pd.date_range(f"{years[0]}-01-01", f"{years[-1]}-12-31")
                             if not (d.is_leap_year and d.month == 12 and d.day == 31)
                             and str(d.date()) not in drop])
    rng = np.random.default_rng(11)
    df = pd.DataFrame({"year": days.year, "yday": days.day_of_year, "dayl (s)": 40000.0,
                       "prcp (mm/day)": rng.gamma(0.8, 4, len(days)).round(2),
                       "srad (W/m^2)": 300.0, "swe (kg/m^2)": 0.0,
                       "tmax (deg c)": rng.normal(15, 5, len(days)).round(2),
                       "tmin (deg c)": rng.normal(5, 5, len(days)).round(2), "vp (Pa)": 800.0})
    meta = ("Latitude: 42.4  Longitude: -72.5\nX & Y on Lambert Conformal Conic: 1 2\n"
            "Tile: 11934\nElevation: 300 meters\nAll years; all variables; Daymet 4\n"
            "How to cite: Thornton et al.\nTemporal coverage: 1980-1981\n")
    df["Q"] = rng.gamma(2, 1, len(days)).round(3)
    df.loc[40, "Q"] = np.nan  # a day without discharge: never filled
    path.write_text(meta + df.to_csv(index=False))
    return df.set_index(days)


def test_short_forcing_gaps_are_filled_when_asked_and_counted(tmp_path, capsys):
    """Daymet's single-pixel files: [year, yday] dates and no 31 December in leap years."""
    from h2mv_hybrid.data.schema import StoreError

    (tmp_path / "pixels").mkdir()
    raw = _daymet_pixel(tmp_path / "pixels" / "amherst.csv", range(1980, 1982))
    (tmp_path / "attributes.csv").write_text("basin,lat,lon\namherst,42.4,-72.5\n")
    mapping = {"series": {"files": "pixels/*.csv", "header": 7, "date": ["year", "yday"],
                          "variables": {
                              "prec": {"column": "prcp (mm/day)", "units": "mm/day"},
                              "tair": {"column": ["tmax (deg c)", "tmin (deg c)"],
                                       "units": "degC"},
                              "q": {"column": "Q", "units": "mm/day"}}},
               "attributes": {"file": "attributes.csv", "lat": "lat", "lon": "lon"}}
    with pytest.raises(StoreError, match=r"amherst: expected consecutive daily dates"):
        basin_store(parse_record(BasinMapping, mapping, "m.yaml"), tmp_path)
    mapping["fill_gaps"] = 1
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    out = tmp_path / "pixel.zarr"
    cli.main(["import", "basins", "--mapping", str(tmp_path / "m.yaml"), "--out", str(out)])
    # prcp, tmax and tmin on 1980-12-31
    assert "3 forcing values filled in gaps of up to 1 days" in capsys.readouterr().out
    ds = open_store(out)
    assert ds.attrs["forcing_values_filled"] == 3 and ds.sizes["time"] == 731
    day = ds.sel(time="1980-12-31").isel(cell=0)
    before, after = raw.loc["1980-12-30"], raw.loc["1981-01-01"]
    np.testing.assert_allclose(float(day["prec"]), (before["prcp (mm/day)"]
                                                    + after["prcp (mm/day)"]) / 2, rtol=1e-6)
    mean = lambda r: (r["tmax (deg c)"] + r["tmin (deg c)"]) / 2  # noqa: E731
    np.testing.assert_allclose(float(day["tair"]), (mean(before) + mean(after)) / 2 + 273.15,
                               rtol=1e-6)
    q = ds["q"].values[:, 0]
    assert np.isnan(q[40]) and np.isnan(float(day["q"])) and np.isfinite(q[41:365]).all()
    for d in ("1981-03-01", "1981-12-31"):  # days that were there are untouched
        np.testing.assert_allclose(float(ds["prec"].sel(time=d)[0]),
                                   raw.loc[d, "prcp (mm/day)"], rtol=1e-6)
    # a gap longer than fill_gaps is refused by its first day, not filled
    _daymet_pixel(tmp_path / "pixels" / "amherst.csv", range(1980, 1982),
                  drop=("1981-06-10", "1981-06-11"))
    with pytest.raises(StoreError, match=r"prec: expected complete forcing, found 2 missing "
                                         r"basin-days \(first amherst on 1981-06-10\); fill "
                                         r"them \(fill_gaps"):
        basin_store(parse_record(BasinMapping, mapping, "m.yaml"), tmp_path)


def test_net_radiation_from_daymet_shortwave(camels_us, tmp_path, capsys):
    """The CAMELS-US mapping with FAO-56 net radiation from Daymet's srad (a daylight mean),
    dayl, tmax, tmin and vp, and the basins' mean elevation."""
    from h2mv_hybrid.data.pet import fao56_net_radiation
    from h2mv_hybrid.data.schema import StoreError, energy_source

    raw = yaml.safe_load(MAPPING.read_text())
    raw["series"][0]["net_radiation"] = {
        "shortwave": {"column": "srad(W/m2)", "units": "W m-2"}, "daylight": "dayl(s)",
        "tmax": "tmax(C)", "tmin": "tmin(C)",
        "vapour_pressure": {"column": "vp(Pa)", "units": "Pa"}, "elevation": "elev_mean"}
    (tmp_path / "rn.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "rn.zarr"
    cli.main(["import", "basins", "--mapping", str(tmp_path / "rn.yaml"), "--root",
              str(camels_us), "--out", str(out)])
    assert "net radiation FAO-56" in capsys.readouterr().out
    ds = open_store(out)
    assert energy_source(ds) == "rn"
    elev = pd.read_csv(camels_us / "camels_attributes_v2.0" / "camels_topo.txt", sep=";",
                       dtype={"gauge_id": str}).set_index("gauge_id")["elev_mean"]
    days = pd.DatetimeIndex(ds["time"].values)
    for i, (g, (_, _, lat)) in enumerate(GAUGES.items()):
        f = _forcing(g, i).iloc[:len(days)]
        rs = f["srad(W/m2)"] * f["dayl(s)"] / 1e6  # MJ m-2 over the daylight hours
        by_hand = fao56_net_radiation(rs.to_numpy(), f["tmax(C)"].to_numpy(),
                                      f["tmin(C)"].to_numpy(), f["vp(Pa)"].to_numpy() / 1e3,
                                      lat, days.day_of_year.to_numpy(), elev[g]) * 1e6 / 86400
        np.testing.assert_allclose(ds["rn"].values[:, i], by_hand, rtol=1e-5)
    raw["series"][0]["net_radiation"]["vapour_pressure"]["units"] = "mmHg"
    with pytest.raises(StoreError, match=r"net_radiation.vapour_pressure: expected units "
                                         r"among kPa, hPa, mbar, Pa, found 'mmHg'"):
        basin_store(parse_record(BasinMapping, raw, "m.yaml"), camels_us)
    raw["series"][0]["net_radiation"]["vapour_pressure"]["units"] = "Pa"
    raw["series"][0]["variables"]["rn"] = {"column": "srad(W/m2)", "units": "W m-2"}
    with pytest.raises(StoreError, match=r"net_radiation: expected net radiation from one "
                                         r"place"):
        basin_store(parse_record(BasinMapping, raw, "m.yaml"), camels_us)


CARAVAN = MAPPING.parent / "caravan.yaml"


def test_the_caravan_mapping_reads_only_the_basins_asked_for(tmp_path, capsys):
    """Caravan's layout: a CSV per basin under timeseries/csv/<source>/, three attribute
    tables per source; the shipped mapping imports two basins of two sources."""
    spec = yaml.safe_load(CARAVAN.read_text())
    # HydroATLAS codes: three letters, the unit, the aggregation (ele_mt_sav)
    hydroatlas = [f for f in spec["attributes"]["features"]
                  if re.fullmatch(r"[a-z]{3}_[a-z]{2}_[a-z0-9]{3}", f)]
    caravan = [f for f in spec["attributes"]["features"] if f not in hydroatlas + ["area"]]
    days = pd.date_range("1990-01-01", "1992-12-31")
    rng = np.random.default_rng(5)
    basins = {"camels": ["camels_01022500", "camels_01031500"], "camelsch": ["camelsch_2009"],
              "lamah": ["lamah_399"]}
    raw = {}
    for source, ids in basins.items():
        ts = tmp_path / "timeseries" / "csv" / source
        ts.mkdir(parents=True)
        for b in ids:
            q = rng.gamma(2, 1, len(days)).round(3)
            q[:30] = np.nan  # not yet gauged
            raw[b] = pd.DataFrame({
                "date": days.strftime("%Y-%m-%d"),
                "total_precipitation_sum": rng.gamma(0.8, 4, len(days)).round(2),
                "temperature_2m_mean": rng.normal(8, 6, len(days)).round(2),
                "surface_net_solar_radiation_mean": 120.0,
                "surface_net_thermal_radiation_mean": -50.0, "streamflow": q})
            raw[b].to_csv(ts / f"{b}.csv", index=False)
        att = tmp_path / "attributes" / source
        att.mkdir(parents=True)
        n = len(ids)
        pd.DataFrame({"gauge_id": ids, "gauge_name": ["x"] * n, "country": ["y"] * n,
                      "gauge_lat": rng.uniform(40, 48, n), "gauge_lon": rng.uniform(-80, 15, n),
                      "area": rng.uniform(100, 2000, n)}).to_csv(
            att / f"attributes_other_{source}.csv", index=False)
        pd.DataFrame({"gauge_id": ids, **{f: rng.random(n) for f in hydroatlas},
                      "area": rng.uniform(100, 2000, n)}).to_csv(  # HydroATLAS' own area
            att / f"attributes_hydroatlas_{source}.csv", index=False)
        pd.DataFrame({"gauge_id": ids, **{f: rng.random(n) for f in caravan}}).to_csv(
            att / f"attributes_caravan_{source}.csv", index=False)
    # a basin not asked for, whose file would be refused if it were read
    (tmp_path / "timeseries" / "csv" / "lamah" / "lamah_399.csv").write_text("no;table\n")
    out = tmp_path / "caravan.zarr"
    cli.main(["import", "basins", "--mapping", str(CARAVAN), "--root", str(tmp_path),
              "--out", str(out), "--basins", "camelsch_2009", "camels_01022500"])
    assert "2 basins, 1096 days" in capsys.readouterr().out
    ds = open_store(out)
    assert list(ds["gauge_id"].values) == ["camelsch_2009", "camels_01022500"]
    assert list(ds["feature"].values) == spec["attributes"]["features"]
    for i, b in enumerate(["camelsch_2009", "camels_01022500"]):
        np.testing.assert_allclose(ds["q"].values[:, i], raw[b]["streamflow"], rtol=1e-6)
        np.testing.assert_allclose(ds["tair"].values[:, i],
                                   raw[b]["temperature_2m_mean"] + 273.15, rtol=1e-6)
    assert np.isnan(ds["q"].values[:30]).all()
    attrs = open_store(out, group="attributes")
    assert "area" in attrs and "area_1" in attrs  # HydroATLAS' area kept beside the first
    with pytest.raises(SystemExit, match="lamah_399.csv: expected the date column"):  # skipped above
        cli.main(["import", "basins", "--mapping", str(CARAVAN), "--root", str(tmp_path),
                  "--out", str(tmp_path / "all.zarr")])
