"""Analysis functions against values computed by hand on small arrays."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from h2mv_hybrid.analysis import (
    baseflow_index,
    bias,
    equifinality,
    evaporative_fraction,
    iav,
    kge,
    msc,
    nse,
    pearson_r,
    performance,
    rmse,
    runoff_coefficient,
    sdr,
    transpiration_fraction,
    tws_decomposition,
)


def series(values, start="2001-01-01", freq="MS"):
    t = pd.date_range(start, periods=len(values), freq=freq)
    return xr.DataArray(np.asarray(values, dtype=float), dims="time", coords={"time": t})


def test_metrics_by_hand():
    pred, obs = series([1, 2, 3, 4]), series([1, 2, 3, 5])
    # by hand: mean obs 2.75, Σ(obs − mean)² = 8.75, σ_pred = √1.25, σ_obs = √2.1875,
    # cov = 1.625, one error of −1.
    r = 1.625 / (np.sqrt(1.25) * np.sqrt(2.1875))
    assert float(pearson_r(pred, obs)) == pytest.approx(0.9827076298, abs=1e-9)
    assert float(pearson_r(pred, obs)) == pytest.approx(r)
    assert float(rmse(pred, obs)) == pytest.approx(0.5)
    assert float(bias(pred, obs)) == pytest.approx(-0.25)
    assert float(nse(pred, obs)) == pytest.approx(1 - 1 / 8.75)
    assert float(sdr(pred, obs)) == pytest.approx(np.sqrt(1.25 / 2.1875))
    want_kge = 1 - np.sqrt((r - 1) ** 2 + (np.sqrt(1.25 / 2.1875) - 1) ** 2 + (2.5 / 2.75 - 1) ** 2)
    assert float(kge(pred, obs)) == pytest.approx(want_kge)
    want_kge_anomaly = 1 - np.sqrt((r - 1) ** 2 + (np.sqrt(1.25 / 2.1875) - 1) ** 2)
    assert float(kge(pred, obs, bias_term=False)) == pytest.approx(want_kge_anomaly)
    for fn, perfect in ((pearson_r, 1), (rmse, 0), (bias, 0), (nse, 1), (sdr, 1), (kge, 1)):
        assert float(fn(obs, obs)) == pytest.approx(perfect)


def test_metrics_use_only_jointly_observed_entries():
    pred, obs = series([1, 2, 100, 3, 4]), series([1, 2, np.nan, 3, 5])
    ref_p, ref_o = series([1, 2, 3, 4]), series([1, 2, 3, 5])
    for fn in (pearson_r, rmse, bias, nse, sdr, kge):
        assert float(fn(pred, obs)) == pytest.approx(float(fn(ref_p, ref_o)))
    assert np.isnan(float(rmse(series([1.0, 2.0]), series([np.nan, 1.0]))))  # < 2 pairs
    with pytest.raises(ValueError):  # misaligned time axes are an error, not a silent join
        rmse(series([1, 2, 3]), series([1, 2, 3], start="2002-01-01"))


def test_seasonal_cycle_and_interannual_variability():
    t = pd.date_range("2001-01-01", periods=36, freq="MS")
    x = xr.DataArray(t.month + 10.0 * (t.year - 2001), dims="time", coords={"time": t})
    np.testing.assert_allclose(msc(x).values, np.arange(1, 13) + 10.0)  # mean year offset 10
    np.testing.assert_allclose(iav(x).values, 10.0 * (t.year - 2002))
    assert iav(x).dims == ("time",)


def test_performance_table_has_every_metric_and_component():
    t = pd.date_range("2001-01-01", periods=48, freq="MS")
    rng = np.random.default_rng(0)
    season = np.sin(2 * np.pi * np.asarray(t.month) / 12)[:, None]
    obs = xr.DataArray(season + rng.normal(0, .3, (48, 3)),
                       dims=("time", "cell"), coords={"time": t})
    pred = obs + rng.normal(0, 0.1, obs.shape)
    table = performance(pred, obs)
    assert set(table.data_vars) == {"r", "rmse", "sdr", "kge", "nse", "bias"}
    assert list(table.component.values) == ["monthly", "msc", "iav"]
    assert table["r"].dims == ("component", "cell")
    assert float(table["r"].sel(component="msc").min()) > 0.95
    perfect = performance(obs, obs)
    np.testing.assert_allclose(perfect["kge"].values, 1.0)
    # the IAV's KGE (mean ≈ 0) and, for anomalies, every KGE leave out the bias ratio
    iav_p, iav_o = iav(pred), iav(obs)
    np.testing.assert_allclose(table["kge"].sel(component="iav"),
                               kge(iav_p, iav_o, bias_term=False), rtol=1e-12)
    shifted = performance(pred + 5, obs, anomaly=True)
    np.testing.assert_allclose(shifted["kge"].sel(component="monthly"),
                               kge(pred, obs, bias_term=False), rtol=1e-12)
    assert (performance(pred + 5, obs)["kge"].sel(component="monthly") <
            shifted["kge"].sel(component="monthly")).all()


def ensemble(*members, dim="time"):
    return xr.concat([xr.DataArray(m, dims=dim) for m in members], dim="member")


def test_performance_on_dask_with_empty_cells_is_silent_and_nan_there():
    """Ocean or unobserved cells (all NaN) and a constant observation give NaN metrics,
    without numpy's "invalid value encountered in divide" at the dask compute."""
    import warnings

    time = pd.date_range("2002-01-01", periods=36, freq="MS")
    rng = np.random.default_rng(0)
    a = rng.random((36, 3))
    a[:, 0] = np.nan  # a cell with no data
    b = a + 0.1 * rng.random((36, 3))
    b[:, 2] = 1.0  # a constant observation: σ_obs = 0
    pred = xr.DataArray(a, dims=("time", "cell"), coords={"time": time}).chunk({"cell": 1})
    obs = xr.DataArray(b, dims=("time", "cell"), coords={"time": time}).chunk({"cell": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = performance(pred, obs).compute()
    for name in ("r", "sdr", "kge", "nse"):
        assert np.isnan(table[name].sel(component="monthly", cell=[0, 2])).all(), name
    assert table["r"].sel(component="monthly", cell=1) > 0.9


def test_equifinality_of_identical_members_is_zero():
    x = np.sin(np.linspace(0, 6, 50))
    out = equifinality(ensemble(x, x, x))
    for k in ("phase", "bias", "variance", "total"):
        assert float(out[k]) == pytest.approx(0.0, abs=1e-12)
    assert out.attrs["pairs"] == 3


def test_equifinality_of_phase_shifted_sines():
    t = np.arange(400) * 2 * np.pi / 100  # four whole periods
    phi = 0.7
    out = equifinality(ensemble(2 * np.sin(t), 2 * np.sin(t + phi)))
    # equal amplitude A: σ₁ = σ₂ = A/√2, r = cos φ, v = A²/2 → phase = 2 (1 − cos φ)
    assert float(out["phase"]) == pytest.approx(2 * (1 - np.cos(phi)), abs=1e-9)
    assert float(out["bias"]) == pytest.approx(0.0, abs=1e-12)
    assert float(out["variance"]) == pytest.approx(0.0, abs=1e-12)
    # an offset c adds c² / v to the bias term; a doubled amplitude (σ 1 → 2, v = 2.5)
    # gives a variance term (2 − 1)² / 2.5
    shifted = equifinality(ensemble(np.sqrt(2) * np.sin(t), np.sqrt(2) * np.sin(t) + 3.0))
    assert float(shifted["bias"]) == pytest.approx(9.0 / 1.0)
    scaled = equifinality(ensemble(np.sqrt(2) * np.sin(t), 2 * np.sqrt(2) * np.sin(t)))
    assert float(scaled["variance"]) == pytest.approx(1.0 / 2.5)
    # the three terms sum to the pair's MSE over its mean variance
    a, b = np.sqrt(2) * np.sin(t), 1.5 * np.sqrt(2) * np.sin(t + 0.3) + 0.4
    total = float(equifinality(ensemble(a, b))["total"])
    assert total == pytest.approx(np.mean((a - b) ** 2) / ((a.var() + b.var()) / 2))


def test_equifinality_needs_two_members():
    with pytest.raises(ValueError, match="member: expected at least 2 members to compare, found 1"):
        equifinality(ensemble(np.ones(5)))
    with pytest.raises(ValueError, match="x: expected a 'member' dimension, found dims"):
        equifinality(xr.DataArray(np.ones((2, 5)), dims=("run", "time")))
    with pytest.raises(ValueError, match="x: expected a 'time' dimension"):
        equifinality(ensemble(np.ones(5), np.ones(5), dim="day"))


def test_ratios_and_tws_decomposition_by_hand():
    et, rn = series([1.0, 2.0, 3.0]), series([2.0, 4.0, 4.0])
    assert float(evaporative_fraction(et, rn)) == pytest.approx(0.6)
    assert float(runoff_coefficient(series([1.0, 0.0, 1.0]), series([4.0, 0.0, 4.0]))) == 0.25
    assert float(transpiration_fraction(series([0.5, 1.0, 1.5]), et)) == pytest.approx(0.5)
    assert float(baseflow_index(series([1.0, 1.0, 1.0]), series([2.0, 1.0, 1.0]))) == 0.75
    assert np.isnan(float(evaporative_fraction(et, series([0.0, 0.0, 0.0]))))
    assert evaporative_fraction(et, rn).attrs["units"] == "1"

    swe, sm, gw = series([0, 2, 0, 2]), series([1, 1, 1, 1]), series([0, 0, 0, 4])
    parts = tws_decomposition({"swe": swe, "sm": sm, "gw": gw})
    # C_abs: swe 4, sm 0, gw 1 + 1 + 1 + 3 = 6
    assert float(parts["swe"]) == pytest.approx(0.4)
    assert float(parts["sm"]) == 0.0
    assert float(parts["gw"]) == pytest.approx(0.6)
    grid = tws_decomposition({k: xr.DataArray(np.random.default_rng(1).random((10, 4)),
                                              dims=("time", "cell")) for k in "abc"})
    np.testing.assert_allclose(sum(grid[k] for k in "abc").values, 1.0)


def _prediction_and_store(tmp_path):
    """A 3-cell, 4-day prediction store (cell 2 not predicted) and its input store."""
    from h2mv_hybrid.data.schema import annotate

    time = pd.date_range("2001-01-01", periods=4)
    cell = np.arange(3)
    daily = lambda rows: (("time", "cell"), np.array(rows, dtype=float).T)  # noqa: E731
    nan4 = [np.nan] * 4
    pred = xr.Dataset({
        "ET": daily([[1, 2, 3, 4], [0, 0, 1, 1], nan4]),
        "T": daily([[0.5, 1, 1, 2], [0, 0, 1, 0], nan4]),
        "q_total": daily([[2, 2, 0, 0], [1, 1, 1, 1], nan4]),
        "q_base": daily([[1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5], nan4]),
        "swe": daily([[0, 10, 0, 10], [0, 0, 0, 0], nan4]),
        "sm": daily([[5, 5, 5, 5], [1, 3, 1, 3], nan4]),
        "gw": daily([[0, 0, 0, 0], [2, 2, 2, 2], nan4]),
        "sm_max": (("cell",), [100.0, 50.0, np.nan]),
    }, coords={"time": time, "cell": cell, "lat": ("cell", [0.0, 1, 2]),
               "lon": ("cell", [0.0, 1, 2])})
    mm_per_w = 0.0864 / 2.45  # W m-2 → mm day-1 of latent heat
    store = xr.Dataset({
        "rn": daily([[100 / 0.0864 * 2.45 * r / 100 for r in row]
                     for row in ([2, 4, 6, 8], [1, 1, 1, 1], [1, 1, 1, 1])]),
        "prec": daily([[4, 4, 4, 4], [2, 2, 2, 2], [1, 1, 1, 1]]),
        "tair": daily([[280.0] * 4] * 3),
    }, coords=pred.coords)
    for name in ("rn", "prec", "tair"):
        annotate(store[name], name)
    assert np.isclose(float(store["rn"][0, 0]) * mm_per_w, 2.0)
    store_path, pred_path = tmp_path / "in.zarr", tmp_path / "pred.zarr"
    store.to_zarr(store_path)
    pred.attrs["input_store"] = str(store_path)
    pred.to_zarr(pred_path)
    return pred_path, store_path


def test_emergent_patterns_of_one_prediction_store_by_hand(tmp_path):
    from h2mv_hybrid.analysis import emergent_patterns

    pred_path, _ = _prediction_and_store(tmp_path)
    out = emergent_patterns(pred_path)  # the input store the prediction records
    assert all(isinstance(v.data, np.ndarray) for v in out.data_vars.values())  # computed
    expect = {
        "evaporative_fraction": [10 / 20, 2 / 4],
        "runoff_coefficient": [4 / 16, 4 / 8],
        "transpiration_fraction": [4.5 / 10, 1 / 2],
        "baseflow_index": [2 / 4, 2 / 4],
        "sm_max": [100, 50],
        # C_abs: swe 20 / sm 0 / gw 0 in cell 0; swe 0 / sm 4 / gw 0 in cell 1
        "tws_share_swe": [1, 0], "tws_share_sm": [0, 1], "tws_share_gw": [0, 0],
    }
    for name, values in expect.items():
        np.testing.assert_allclose(out[name].values[:2], values, rtol=1e-6, err_msg=name)
        assert np.isnan(out[name].values[2]), f"{name}: a cell not predicted must be NaN"
        assert out[name].attrs["units"] and out[name].attrs["long_name"]
        assert out[name].attrs["definition"]
    assert "ratio of totals" in out["evaporative_fraction"].attrs["definition"]
    assert "mean of daily ratios" in out["evaporative_fraction"].attrs["definition"]
    assert out.attrs["period"] == "2001-01-01 … 2001-01-04"


def test_emergent_patterns_refuse_a_store_that_is_not_the_input(tmp_path):
    from h2mv_hybrid.analysis import emergent_patterns

    pred_path, store_path = _prediction_and_store(tmp_path)
    other = xr.open_zarr(store_path).isel(cell=[0, 1]).load()
    with pytest.raises(ValueError, match="store: expected the cell axis of the prediction "
                                         r"\(3 values\), found 2"):
        emergent_patterns(pred_path, other)
    short = xr.open_zarr(store_path).isel(time=[0, 1, 2]).load()
    with pytest.raises(ValueError, match="expected every predicted day, found 1 missing "
                                         r"\(first 2001-01-04\)"):
        emergent_patterns(pred_path, short)
    pred = xr.open_zarr(pred_path).load()
    pred.attrs = {}
    with pytest.raises(ValueError, match="expected the input store"):
        emergent_patterns(pred)
