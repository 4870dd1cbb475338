"""Ensemble analyses on small hand-made ensembles, and their figures."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers.ensembles import TIME, series, small_stores
from helpers.figures import assert_readable

from h2mv_hybrid.analysis import plots
from h2mv_hybrid.analysis.ensemble import (
    constraint_series,
    ensemble_equifinality,
    ensemble_msc,
    ensemble_patterns,
    ensemble_performance,
    member_range,
    predicted_cells,
)
from h2mv_hybrid.analysis.spread import area_mean, state_spread
from h2mv_hybrid.constraints import Constraint


def test_state_spread_by_hand():
    x = series(1)[0]  # time, cell
    offsets = np.array([0.0, 3.0, 7.0])
    sm = xr.DataArray(x[None] + offsets[:, None, None], dims=("member", "time", "cell"),
                      coords={"time": TIME})
    tws = 2 * sm + 5  # TWS mean = 2 · SM mean + 5 across members
    out = state_spread({"sm": sm, "tws": tws})
    np.testing.assert_allclose(out["anomaly_range"].sel(state="sm"), 0, atol=1e-9)
    means = out["mean"].sel(state="sm").values
    np.testing.assert_allclose(means - means[0], offsets, atol=1e-9)
    np.testing.assert_allclose(out["anomaly"].sel(state="sm").mean("time"), 0, atol=1e-9)
    assert out.attrs["sm_tws_slope"] == pytest.approx(2.0)
    assert out.attrs["sm_tws_intercept"] == pytest.approx(5.0)
    assert out.attrs["sm_tws_r"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'member'"):
        state_spread({"sm": sm.isel(member=0)})


def test_area_mean_weights_by_cos_lat():
    x = xr.DataArray([1.0, 3.0, np.nan], dims="cell",
                     coords={"lat": ("cell", [0.0, 60.0, 30.0])})
    # weights 1 and 0.5; the NaN cell drops out
    assert float(area_mean(x, ["cell"])) == pytest.approx((1 * 1 + 3 * 0.5) / 1.5)
    y = xr.DataArray([1.0, 3.0], dims="cell")
    assert float(area_mean(y, ["cell"])) == 2.0


def test_predicted_cells_and_perfect_members_score_perfectly():
    ens, store = small_stores()
    e, s = predicted_cells(ens, store)
    assert e.sizes["cell"] == 3 and s.sizes["cell"] == 3
    np.testing.assert_array_equal(e["lat"].values, s["lat"].values)
    perf = ensemble_performance(e, s, [Constraint("et", "ET", "monthly")])
    assert perf["r"].dims == ("constraint", "component", "member")
    np.testing.assert_allclose(perf["r"].sel(component=["monthly", "msc"]), 1.0, atol=1e-6)
    np.testing.assert_allclose(perf["rmse"], 0.0, atol=1e-6)
    np.testing.assert_allclose(perf["kge"].sel(component="monthly"), 1.0, atol=1e-6)
    stats = member_range(perf)
    assert list(stats["stat"].values) == ["min", "mean", "max"]
    msc = ensemble_msc(e, s, [Constraint("et", "ET", "monthly")])
    np.testing.assert_allclose(msc["et_pred"].isel(member=0), msc["et_obs"], rtol=1e-6)


def test_constraint_series_anomaly_and_saturation():
    ens, store = small_stores()
    e, s = predicted_cells(ens, store)
    s = s.assign(tws=s["et"] * 20 + 100)  # a product offset by 95 mm from the model's TWS
    pred, obs = constraint_series(e, s, Constraint("tws", "tws", "monthly", anomaly=True))
    np.testing.assert_allclose(pred.isel(member=0), obs, atol=1e-6)  # offsets cancel
    np.testing.assert_allclose(obs.mean("time"), 0, atol=1e-9)
    swe_obs = xr.full_like(e["ET"].isel(member=0), 250.0)
    s2 = s.assign(swe=swe_obs.drop_vars("member"))
    e2 = e.assign(swe=e["ET"] * 0 + 300.0)  # both above a 200 mm saturation: a match
    pred, obs = constraint_series(e2, s2, Constraint("swe", "swe", "daily", saturation=200.0))
    np.testing.assert_allclose(pred.isel(member=0), obs)
    with pytest.raises(ValueError, match="expected output 'fapar'"):
        constraint_series(e, s, Constraint("fapar", "fapar", "monthly"))


def test_patterns_by_hand():
    ens, store = small_stores()
    e, s = predicted_cells(ens, store)
    maps = ensemble_patterns(e, s, ens)
    assert maps["runoff_coefficient"].dims == ("lat", "lon")
    assert np.isnan(maps["runoff_coefficient"].sel(lat=50.0, lon=20.0))  # not predicted
    rn_mm = 100 * 0.0864 / 2.45
    mean_et = float(ens["ET"].isel(member=0, lat=0, lon=0).mean())
    assert float(maps["evaporative_fraction"].sel(lat=10.0, lon=0.0)) == pytest.approx(
        mean_et / rn_mm, rel=1e-5)
    assert float(maps["runoff_coefficient"].sel(lat=10.0, lon=0.0)) == pytest.approx(
        0.25 * mean_et / 4.0, rel=1e-5)
    assert float(maps["transpiration_fraction"].sel(lat=10.0, lon=0.0)) == pytest.approx(0.5)
    assert float(maps["baseflow_index"].sel(lat=10.0, lon=0.0)) == pytest.approx(0.4)
    # sm and gw vary alike, swe not at all: Getirana shares 0.5, 0.5, 0
    assert float(maps["tws_share_sm"].sel(lat=10.0, lon=0.0)) == pytest.approx(0.5)
    assert float(maps["tws_share_swe"].sel(lat=10.0, lon=0.0)) == pytest.approx(0.0)
    assert float(maps["sm_max"].sel(lat=10.0, lon=0.0)) == pytest.approx(100.5)  # mean of 100, 101
    assert float(maps["sm_max_spread"].sel(lat=10.0, lon=0.0)) == pytest.approx(1.0)


def test_ensemble_equifinality_identical_and_offset_members():
    ens, store = small_stores()
    e, _ = predicted_cells(ens, store)
    eq = ensemble_equifinality(e, ["ET", "sm_max", "tws_anomaly"])
    np.testing.assert_allclose(eq["total"].sel(variable="ET"), 0, atol=1e-12)
    # sm_max 100 vs 101 at every cell: no spatial variance, so the index is undefined
    assert np.isnan(float(eq["total"].sel(variable="sm_max")))
    shifted = e.assign(tws=e["tws"] + xr.DataArray([0.0, 30.0], dims="member"))
    eq = ensemble_equifinality(shifted, ["tws", "tws_anomaly"])
    assert float(eq["bias"].sel(variable="tws")) > 0
    np.testing.assert_allclose(eq["total"].sel(variable="tws_anomaly"), 0, atol=1e-9)
    with pytest.raises(ValueError, match="expected 'fapar'"):
        ensemble_equifinality(e, ["fapar"])


# -- figures -----------------------------------------------------------------------------

def labels(fig):
    out = []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
    return " | ".join(out)


def test_map_has_geographic_axes_and_a_colour_bar_with_units():
    da = xr.DataArray(np.arange(12.0).reshape(3, 4), dims=("lat", "lon"),
                      coords={"lat": [-30.0, 0.0, 30.0], "lon": [-90.0, 0.0, 90.0, 180.0]},
                      name="sm_max", attrs={"units": "mm", "long_name": "SM_max"})
    fig = plots.plot_map(da)
    text = labels(fig)
    assert "longitude (°E)" in text and "latitude (°N)" in text and "SM_max [mm]" in text
    with pytest.raises(ValueError, match="expected lat and lon"):
        plots.plot_map(da.rename(lat="y"))
    plots._plt().close("all")


def test_every_analysis_has_a_figure(tmp_path):
    ens, store = small_stores(members=3, noise=0.1)
    e, s = predicted_cells(ens, store)
    perf = ensemble_performance(e, s, [Constraint("et", "ET", "monthly")])
    fig = plots.plot_performance(perf)
    assert len(fig.axes) == len(perf.data_vars)  # one row per metric, one column
    assert "Pearson r" in labels(fig)
    fig = plots.plot_msc(ensemble_msc(e, s, [Constraint("et", "ET", "monthly")]))
    assert "ET [mm day⁻¹]" in labels(fig) and "month" in labels(fig)
    assert plots.pretty_units("W m-2") == "W m⁻²" and plots.pretty_units("1") == "–"
    eq = ensemble_equifinality(e, ["sm_max", "sm", "ET", "T", "q_base", "q_total"])
    fig = plots.plot_equifinality(eq)
    assert "equifinality index" in labels(fig)
    spread = state_spread({k: e[k] for k in ("swe", "sm", "gw", "tws")})
    fig = plots.plot_state_spread(spread)
    assert "SM time mean [mm]" in labels(fig) and "TWS time mean [mm]" in labels(fig)
    maps = ensemble_patterns(e, s, ens)
    fig = plots.plot_patterns(maps)
    assert "(b) runoff coefficient Q/P" in labels(fig) and "Q / P [–]" in labels(fig)
    fig = plots.plot_tws_decomposition(maps[["tws_share_swe", "tws_share_sm", "tws_share_gw"]])
    assert "(b) soil moisture (SM)" in labels(fig)
    fold = xr.DataArray([[-1, 0], [1, -9]], dims=("lat", "lon"),
                        coords={"lat": [10.0, 50.0], "lon": [0.0, 20.0]})
    fig = plots.plot_folds(fold)
    assert_readable(fig)
    assert [t.get_text() for t in fig.axes[-1].get_yticklabels()] == ["test", "0", "1"]
    path = plots.save(fig, tmp_path / "fig" / "tws.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "fig").glob(".*"))  # no temporary file left


def test_analyze_names_a_missing_or_wrong_ensemble(tmp_path):
    from h2mv_hybrid import cli
    from h2mv_hybrid.analysis.ensemble import open_ensemble

    with pytest.raises(SystemExit, match="ensemble: expected a zarr store at"):
        cli.main(["analyze", "--ensemble", str(tmp_path / "nope.zarr")])
    ens, _ = small_stores()
    ens.isel(member=0, drop=True).to_zarr(tmp_path / "one.zarr", consolidated=False)
    with pytest.raises(ValueError, match="expected a 'member' dimension"):
        open_ensemble(tmp_path / "one.zarr")
    ens.to_zarr(tmp_path / "ens.zarr", consolidated=False)
    with pytest.raises(ValueError, match="records no input store"):
        open_ensemble(tmp_path / "ens.zarr")


def test_extrapolation_index_and_skill_classes_by_hand():

    from h2mv_hybrid.analysis.extrapolation import extrapolation_index, skill_by_extrapolation

    # one feature: training cells at 0 … 9, a cell inside their range and two beyond it
    x = np.array([*range(10), 4.5, 19.0, -11.0], dtype=float)[:, None]
    train = np.array([True] * 10 + [False] * 3)
    got = extrapolation_index(x, train, k=1)
    # standardized distances all scale by one std, so the index is in units of the
    # training cells' median nearest-neighbour distance (1 apart)
    np.testing.assert_allclose(got, [1.0] * 10 + [0.5, 10.0, 11.0], rtol=1e-12)
    # three training cells (0, 1, 2): k = 5 falls to 2; their own distances 1.5, 1, 1.5
    # (median 1.5); cell 4.5 lies 2.5 and 3.5 from its two nearest: index 3 / 1.5 = 2
    few = extrapolation_index(x, np.arange(13) < 3, k=5)
    np.testing.assert_allclose(few[[0, 1, 2, 4]], [1.0, 2 / 3, 1.0, 2.5 / 1.5], rtol=1e-12)
    np.testing.assert_allclose(few[10], 3.0 / 1.5, rtol=1e-12)
    with pytest.raises(ValueError, match="expected at least 2 training cells, found 1"):
        extrapolation_index(x, np.arange(13) < 1, k=5)
    index = xr.DataArray([[0.5, 1.2, 2.5, 7.0], [0.2, 0.9, 1.7, np.nan]], dims=("member", "cell"))
    skill = xr.DataArray([0.9, 0.8, 0.5, 0.1], dims="cell")
    table = skill_by_extrapolation(index, skill).set_index("index")
    assert list(table.index) == ["0–1", "1–1.5", "1.5–2", "2–3", "≥ 3"]
    assert list(table["member_cells"]) == [3, 1, 1, 1, 1]
    assert table.loc["0–1", "median"] == pytest.approx(np.median([0.9, 0.9, 0.8]))
    assert table.loc["≥ 3", "median"] == pytest.approx(0.1)
    assert isinstance(table, pd.DataFrame)


def test_skill_of_an_anomaly_constraint_leaves_out_the_bias_ratio():
    """TWS is scored as anomalies, whose mean is ~0: with KGE's bias ratio μ_pred/μ_obs
    the score of a near-perfect prediction would be meaningless (and mostly negative)."""
    from h2mv_hybrid.analysis.extrapolation import ensemble_skill_by_extrapolation

    ens, store = small_stores(members=2, noise=0.0)
    rng = np.random.default_rng(3)
    sm = ens["sm"].isel(member=0).resample(time="MS").mean()
    store["tws"] = (("month", "lat", "lon"), sm.values + rng.normal(0, 0.3, sm.shape))
    e, s = predicted_cells(ens, store)
    index = xr.Dataset({"extrapolation_index": (("member", "cell"), np.full((2, e.sizes["cell"]), 0.5))})
    tws = Constraint("tws", "sm", "monthly", anomaly=True)
    table = ensemble_skill_by_extrapolation(e, s, index, [tws])
    assert table["median"].iloc[0] > 0.9


def test_ensemble_extrapolation_of_points_and_of_one_basin():
    """Per member over a point ensemble; a member trained on one basin (a single-basin
    temporal fit: every stage on the same cell) has no distance scale and gets NaN."""
    from h2mv_hybrid.analysis.extrapolation import ensemble_extrapolation
    from h2mv_hybrid.data.folds import EVERY_STAGE

    def stores(n, folds):
        time = pd.date_range("2000-01-01", periods=10)
        r = np.random.default_rng(0)
        coords = {"lat": ("cell", np.arange(n) * 1.0), "lon": ("cell", np.zeros(n))}
        store = xr.Dataset(
            {"static": (("cell", "feature"), r.normal(size=(n, 3))),
             **{v: (("cell", "time"), r.normal(size=(n, 10))) for v in ("prec", "tair", "rn")}},
            coords={**coords, "time": time, "feature": ["a", "b", "c"]})
        ens = xr.Dataset({"fold": ("cell", np.asarray(folds))},
                         coords={**coords, "time": time, "member": [0, 1, 2]})
        return ens, store

    ens, store = stores(1, [EVERY_STAGE])
    index = ensemble_extrapolation(ens, store, ens)["extrapolation_index"]
    assert index.shape == (3, 1) and bool(index.isnull().all())
    ens, store = stores(6, [EVERY_STAGE] * 6)  # several basins, temporal: every member alike
    index = ensemble_extrapolation(ens, store, ens, k=2)["extrapolation_index"]
    assert bool(index.notnull().all()) and float(index.std("member").max()) < 1e-12


def test_extrapolation_figure_has_its_titles_labels_and_classes():
    from h2mv_hybrid.analysis.extrapolation import skill_by_extrapolation

    index = xr.Dataset({"extrapolation_index": (("member", "cell"),
                                                [[0.5, 1.2, 2.5, 7.0], [0.2, 0.9, 1.7, 3.2]])},
                       coords={"lat": ("cell", [0.0, 1, 2, 3]), "lon": ("cell", [0.0, 1, 2, 3])})
    table = skill_by_extrapolation(index["extrapolation_index"],
                                   xr.DataArray([0.9, 0.8, 0.5, 0.1], dims="cell"))
    table.insert(0, "constraint", "q")
    fig = plots.plot_extrapolation(index, table)
    assert_readable(fig)
    text = labels(fig)
    assert "(a) extrapolation index, mean over members" in text
    assert "(b) skill by distance to the training cells" in text
    assert "extrapolation index [–]" in text and "per-cell KGE" in text
    assert "distance to the training cells [–]\n(1 = a typical training cell)" in text
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == [
        "0–1\n(n = 3)", "1–1.5\n(n = 1)", "1.5–2\n(n = 1)", "2–3\n(n = 1)", "≥ 3\n(n = 2)"]
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["runoff"]


def test_sensitivity_maps_have_titles_and_units():
    cells = {"lat": ("cell", [0.0, 10.0, 20.0]), "lon": ("cell", [0.0, 10.0, 20.0])}
    data = {f"q_{x}": (("member", "cell", "season"), np.random.default_rng(0).random((2, 3, 5)))
            for x in ("prec", "rn", "tair")}
    result = xr.Dataset(data, coords={**cells, "season": ["all", "DJF", "MAM", "JJA", "SON"]},
                        attrs={"period": "2001-01-01 … 2001-12-31", "members": 2})
    fig = plots.plot_sensitivity(result, season="JJA")
    assert_readable(fig)
    text = labels(fig)
    assert "(a) elasticity of runoff to precipitation" in text
    assert "(c) sensitivity of runoff to a warming" in text
    bars = [ax.get_ylabel() for ax in fig.axes[3:]]
    assert bars == ["(dQ/Q) / (dP/P) [–]", "(dQ/Q) / (dRn/Rn) [–]", "(dQ/Q) per K [K⁻¹]"]
    assert "season JJA, mean over 2 members" in fig._suptitle.get_text()


def test_scatter_of_a_learned_against_an_observed_quantity():
    model = xr.DataArray([1.0, 2.0, 3.0, np.nan], dims="cell")
    observed = xr.DataArray([1.5, 2.5, 2.0, 1.0], dims="cell")
    fig = plots.plot_scatter(model, observed, "CAMELS stream_elas [–]", "model ε_P [–]",
                             "elasticity of runoff to precipitation")
    assert_readable(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "CAMELS stream_elas [–]" and ax.get_ylabel() == "model ε_P [–]"
    assert "Spearman ρ = 0.50, Pearson r = 0.50, n = 3" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1:1"]
