"""GR4J with degree-day snow: equations by hand, unit hydrographs, calibration, the store."""

import math

import numpy as np
import pytest
import xarray as xr

from h2mv_hybrid.analysis.catchments import _train_period, basin_skill, catchment_scores
from h2mv_hybrid.conceptual import calibrate as cal
from h2mv_hybrid.conceptual.gr4j import PARAMETERS, simulate, unit_hydrographs
from h2mv_hybrid.data.folds import EVERY_STAGE

TRUTH = {"x1": 320.0, "x2": -0.8, "x3": 90.0, "x4": 1.7, "ddf": 3.0, "tt": 0.5}


@pytest.mark.parametrize("x4", [0.5, 1.0, 1.3, 4.7, 10.0])
def test_unit_hydrographs_sum_to_one_over_x4_and_2x4_days(x4):
    uh1, uh2 = unit_hydrographs(x4)
    assert uh1.sum() == pytest.approx(1, abs=1e-12) and uh2.sum() == pytest.approx(1, abs=1e-12)
    assert (uh1 >= 0).all() and (uh2 >= 0).all()
    assert np.count_nonzero(uh1) == math.ceil(x4) and np.count_nonzero(uh2) == math.ceil(2 * x4)
    assert uh1[0] == pytest.approx(min(1.0, (1 / x4) ** 2.5))


def test_three_days_by_hand():
    """Rain, then snow, then melt: every equation of the module docstring, by hand."""
    p = TRUTH
    prec, pet, tair = np.array([10.0, 4.0, 0.0]), np.array([2.0, 1.0, 1.5]), np.array(
        [10.0, -3.0, 2.0])
    q, states = simulate(prec, pet, tair, p, with_states=True)
    x1, x2, x3, x4 = p["x1"], p["x2"], p["x3"], p["x4"]
    uh1, uh2 = [(1 / x4) ** 2.5, 1 - (1 / x4) ** 2.5], [0.5 * (1 / x4) ** 2.5]
    uh2.append(1 - 0.5 * (2 - 2 / x4) ** 2.5 - uh2[0])
    s, r = 0.3 * x1, 0.5 * x3
    # day 1: rain only, P > E
    th = math.tanh(8.0 / x1)
    ps = x1 * (1 - (s / x1) ** 2) * th / (1 + s / x1 * th)
    s += ps
    perc = s * (1 - (1 + (4 / 9 * s / x1) ** 4) ** -0.25)
    s -= perc
    pr1 = perc + 8.0 - ps
    f = x2 * (r / x3) ** 3.5
    r = max(0.0, r + 0.9 * pr1 * uh1[0] + f)
    qr = r * (1 - (1 + (r / x3) ** 4) ** -0.25)
    r -= qr
    q1 = qr + max(0.0, 0.1 * pr1 * uh2[0] + f)
    assert q[0] == pytest.approx(q1, abs=1e-12)
    assert states[0] == pytest.approx([0.0, s, r], abs=1e-12)
    # day 2: 4 mm of snow below TT: the pack takes them, E = 1 mm acts on S
    assert states[1, 0] == pytest.approx(4.0, abs=1e-12)
    th = math.tanh(1.0 / x1)
    s -= s * (2 - s / x1) * th / (1 + (1 - s / x1) * th)
    perc = s * (1 - (1 + (4 / 9 * s / x1) ** 4) ** -0.25)
    s -= perc
    pr2 = perc
    f = x2 * (r / x3) ** 3.5
    r = max(0.0, r + 0.9 * (pr1 * uh1[1] + pr2 * uh1[0]) + f)
    qr = r * (1 - (1 + (r / x3) ** 4) ** -0.25)
    r -= qr
    q2 = qr + max(0.0, 0.1 * (pr1 * uh2[1] + pr2 * uh2[0]) + f)
    assert q[1] == pytest.approx(q2, abs=1e-12)
    assert states[1, 1:] == pytest.approx([s, r], abs=1e-12)
    # day 3: DDF · (T − TT) = 4.5 mm of melt potential, the whole 4 mm pack melts
    assert states[2, 0] == 0.0


def test_gaps_and_missing_parameters_are_refused():
    x = np.ones(5)
    with pytest.raises(ValueError, match="prec: expected no gaps, found 1 missing"):
        simulate(np.array([1, np.nan, 1, 1, 1.0]), x, x, TRUTH)
    with pytest.raises(ValueError, match="found no \\['tt'\\]"):
        simulate(x, x, x, {k: v for k, v in TRUTH.items() if k != "tt"})


def synthetic_basin(years=5, seed=0):
    rng = np.random.default_rng(seed)
    n = 365 * years
    doy = np.arange(n) % 365
    tair = 8 - 12 * np.cos(2 * np.pi * doy / 365) + rng.normal(0, 3, n)
    prec = np.where(rng.random(n) < 0.35, rng.gamma(0.8, 9.0, n), 0.0)
    pet = np.clip(2.2 - 1.8 * np.cos(2 * np.pi * doy / 365), 0.1, None)
    return prec, pet, tair


def test_calibration_finds_a_known_basin_and_predicts_its_later_years():
    prec, pet, tair = synthetic_basin()
    q = simulate(prec, pet, tair, TRUTH)
    q[::17] = np.nan  # gauge gaps
    train = np.zeros(len(q), bool)
    train[365:365 * 3] = True
    best, score = cal.calibrate_basin(prec, pet, tair, q, train, maxiter=40, popsize=10)
    assert score > 0.995
    later = simulate(prec, pet, tair, best)[365 * 3:]
    assert cal.nse_of(later, q[365 * 3:]) > 0.99
    # a model that cannot fit (every parameter at a bound) scores far lower: not vacuous
    worst = {n: b[0] for n, b in cal.BOUNDS.items()}
    assert cal.nse_of(simulate(prec, pet, tair, worst)[train], q[train]) < 0.5


def small_store(n_cells=2, years=4):
    days = xr.date_range("1990-01-01", periods=365 * years, freq="D")
    data = {v: [] for v in ("prec", "pet", "tair", "q")}
    for c in range(n_cells):
        prec, pet, tair = synthetic_basin(years, seed=c)
        for k, v in (("prec", prec), ("pet", pet), ("tair", tair + 273.15),
                     ("q", simulate(prec, pet, tair, TRUTH))):
            data[k].append(v)
    ds = xr.Dataset({k: (("time", "cell"), np.array(v).T) for k, v in data.items()},
                    coords={"time": days, "gauge_id": ("cell", [f"0{c}" for c in range(n_cells)])})
    ds["tair"].attrs["units"] = "K"
    return ds


def test_calibrated_store_is_an_ensemble_in_the_temporal_role():
    store = small_store()
    out = cal.calibrate_store(store, "1991-01-01", "1992-12-31", "1993-01-01", None,
                              maxiter=15, popsize=8, log=lambda *_: None)
    assert dict(out["q_total"].sizes) == {"member": 1, "cell": 2, "time": 364}
    assert (out["fold"] == EVERY_STAGE).all() and set(PARAMETERS) <= set(out.data_vars)
    assert _train_period(out) == ("1991-01-01", "1992-12-31")
    assert (out["nse_train"] > 0.95).all()
    # scored beside a (spatially split) hybrid: every basin in the temporal group only
    q2 = xr.concat([out["q_total"], out["q_total"].assign_coords(member=[1]) * 1.1], "member")
    hybrid = xr.Dataset({"q_total": q2, "fold": ("cell", np.array([0, 1]))})
    clim = out["q_total"].isel(member=0, drop=True) * 0 + 1.0
    groups, table = catchment_scores(store, {"hybrid": hybrid, "GR4J": out}, clim)
    gr4j = table[table.model == "GR4J"]
    assert set(gr4j.group) == {"temporal"} and (gr4j.basins == 2).all()
    want = basin_skill(out["q_total"], store["q"])["nse"].isel(member=0)
    np.testing.assert_allclose(groups["nse"].sel(model="GR4J", group="temporal"), want)


def test_store_errors_name_what_is_wrong(tmp_path):
    store = small_store()
    with pytest.raises(ValueError, match="found no pet"):
        cal.calibrate_store(store.drop_vars("pet"), "1991-01-01", "1991-12-31")
    gap = store.copy(deep=True)
    gap["prec"][5, 1] = np.nan
    with pytest.raises(ValueError, match="basin 01: prec: expected no gaps, found 1 missing"):
        cal.calibrate_store(gap, "1991-01-01", "1991-12-31", log=lambda *_: None)
    dry = store.copy(deep=True)
    dry["q"][:, 0] = np.nan
    with pytest.raises(ValueError, match="basin 00: q: expected at least 30 observed"):
        cal.calibrate_store(dry, "1991-01-01", "1991-12-31", log=lambda *_: None)
    with pytest.raises(ValueError, match="found none in 2001-01-01"):
        cal.calibrate_store(store, "2001-01-01", "2001-12-31")
    (tmp_path / "gr4j.zarr").mkdir()
    with pytest.raises(FileExistsError, match="pass --overwrite true"):
        cal.gr4j(str(tmp_path / "in.zarr"), str(tmp_path / "gr4j.zarr"), "1991-01-01",
                 "1991-12-31")
