"""The analysis and demo figures, inspected as a reader would: titles, axis labels with
units, colour-bar labels, legend entries, scales, colours, and no overlapping text."""

import numpy as np
import pytest
import torch
import xarray as xr
from helpers.ensembles import small_stores
from helpers.figures import assert_readable, colour_distance

from h2mv_hybrid.analysis import plots
from h2mv_hybrid.analysis.ensemble import (
    ensemble_msc,
    ensemble_patterns,
    ensemble_performance,
    predicted_cells,
)
from h2mv_hybrid.analysis.spread import state_spread
from h2mv_hybrid.constraints import Constraint

pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots._plt().close("all")


def texts(fig):
    out = [fig._suptitle.get_text()] if fig._suptitle else []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_title(loc="left"), ax.get_xlabel(), ax.get_ylabel()]
    return out


def performance_table(units=True):
    metrics = ("r", "sdr", "kge", "nse", "rmse", "bias")
    rng = np.random.default_rng(0)
    ds = xr.Dataset({m: (("constraint", "component", "member"), rng.random((2, 3, 4)))
                     for m in metrics},
                    coords={"constraint": ["tws", "et"], "component": ["monthly", "msc", "iav"]})
    return ds.assign_coords(units=("constraint", ["mm", "mm day-1"])) if units else ds


def test_performance_labels_rmse_and_bias_with_each_columns_unit():
    fig = plots.plot_performance(performance_table())
    assert_readable(fig)
    axes = np.array(fig.axes).reshape(6, 2)
    assert [ax.get_title() for ax in axes[0]] == ["TWS anomaly", "ET"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [
        "Pearson r [–]", "SDR (σ_pred / σ_obs) [–]", "KGE [–]", "NSE [–]", "RMSE [mm]",
        "bias (pred − obs) [mm]"]
    assert [ax.get_ylabel() for ax in axes[4:, 1]] == ["RMSE [mm day⁻¹]", "bias [mm day⁻¹]"]
    assert not any("unit of each column" in t for t in texts(fig))
    assert [t.get_text() for t in axes[-1, 0].get_xticklabels()] == ["monthly", "MSC", "IAV"]
    # without the units coordinate the known constraints' units still label the panels
    fig = plots.plot_performance(performance_table(units=False), metrics=["rmse"])
    assert [ax.get_ylabel() for ax in fig.axes] == ["RMSE [mm]", "RMSE [mm day⁻¹]"]


def test_ensemble_performance_records_the_units_of_each_constraint():
    ens, store = small_stores(members=2, noise=0.1)
    e, s = predicted_cells(ens, store)
    perf = ensemble_performance(e, s, [Constraint("et", "ET", "monthly")])
    assert list(perf["units"].values) == ["mm day-1"]


def equifinality_table():
    variables = ["sm_max", "tws", "sm", "swe", "Es", "r_soil_frac", "snow_acc", "foo"]
    phase = [0.2, 0.02, 0.06, 0.003, 0.14, 0.9, 0.0, 0.1]
    bias = [0.1, 0.15, 2.8, 0.0, 0.03, 30.0, 0.0, 0.1]
    variance = [0.1, 0.01, 0.04, np.nan, 0.02, 0.3, 0.0, 0.1]
    total = np.nansum([phase, bias, variance], axis=0)
    return xr.Dataset({"phase": ("variable", phase), "bias": ("variable", bias),
                       "variance": ("variable", variance), "total": ("variable", total)},
                      coords={"variable": variables}, attrs={"pairs": 45})


def test_equifinality_uses_a_log_scale_long_names_and_shares_of_each_term():
    fig = plots.plot_equifinality(equifinality_table())
    assert_readable(fig)
    a, b = fig.axes
    assert a.get_xscale() == "log"  # 0.003 … 31: one linear axis would flatten most bars
    ticks = [t.get_text() for t in a.get_yticklabels()]
    assert ticks == ["static (across cells)", "SM_max, soil capacity", "states", "TWS",
                     "soil moisture", "snow water equivalent", "evapotranspiration",
                     "soil evaporation", "partitioning fractions", "fraction of input to soil",
                     "snow", "snowfall", "other", "foo"]
    bold = [t.get_text() for t in a.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["static (across cells)", "states", "evapotranspiration",
                    "partitioning fractions", "snow", "other"]
    values = [t.get_text() for t in a.texts]
    assert values == ["0.4", "0.18", "2.9", "0.003", "0.19", "31", "0", "0.3"]
    # (b): the three terms of each variable add up to the whole bar (shares of 1)
    widths = {}
    for patch in b.patches:
        y = round(patch.get_y() + patch.get_height() / 2)
        widths[y] = widths.get(y, 0.0) + patch.get_width()
    assert widths[ticks.index("soil moisture")] == pytest.approx(1.0)
    assert widths[ticks.index("snow water equivalent")] == pytest.approx(1.0)  # NaN term → 0
    assert widths[ticks.index("snowfall")] == pytest.approx(0.0)
    # the legend lies outside the panels, never over a bar
    assert a.get_legend() is None and b.get_legend() is None
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "phase term", "bias term", "variance term"]
    assert fig._suptitle.get_text() == "Equifinality across members, mean over 45 pairs"


def spread():
    time = xr.date_range("2002-01-01", periods=730, freq="D")
    rng = np.random.default_rng(0)
    base = 20 * np.sin(2 * np.pi * np.arange(730) / 365.25)
    offsets = np.array([0.0, 3.0, 7.0])
    sm = xr.DataArray(base[None, :, None] + offsets[:, None, None] + rng.normal(
        0, 1, (3, 730, 2)), dims=("member", "time", "cell"), coords={"time": time})
    return state_spread({"swe": 0 * sm, "sm": sm, "gw": 0.5 * sm, "tws": 1.5 * sm})


def test_state_spread_shows_the_member_band_apart_from_the_mean():
    fig = plots.plot_state_spread(spread())
    assert_readable(fig)
    top = fig.axes[0]
    assert top.get_legend() is None  # below the figure, not over the SWE peaks
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "range across members", "mean over members"]
    band, line = top.collections[0], top.lines[0]
    assert colour_distance(band.get_facecolor()[0], line.get_color()) > 0.3
    assert [ax.get_ylabel() for ax in fig.axes[:4]] == [
        "SWE anomaly [mm]", "SM anomaly [mm]", "GW anomaly [mm]", "TWS anomaly [mm]"]
    titles = texts(fig)
    assert "(b) time means over members" in titles
    assert "(c) TWS against SM, per member" in titles
    scatter = fig.axes[5]
    assert scatter.get_xlabel() == "SM time mean [mm]"
    assert "least squares, r = 1.00" in [t.get_text() for t in
                                         scatter.get_legend().get_texts()]
    assert fig.axes[-1].get_ylabel() == "GW time mean [mm]"  # the colour bar


def test_msc_has_panel_titles_units_and_a_legend_outside_the_panels():
    ens, store = small_stores(members=3, noise=0.1)
    e, s = predicted_cells(ens, store)
    fig = plots.plot_msc(ensemble_msc(e, s, [Constraint("et", "ET", "monthly")]))
    assert_readable(fig)
    ax = fig.axes[0]
    assert ax.get_title() == "(a) ET" and ax.get_ylabel() == "ET [mm day⁻¹]"
    assert ax.get_legend() is None
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "members (range)", "members (mean)", "observed"]


def test_pattern_maps_have_letters_units_and_the_right_title():
    ens, store = small_stores(members=3, noise=0.1)
    e, s = predicted_cells(ens, store)
    maps = ensemble_patterns(e, s, ens)
    fig = plots.plot_patterns(maps, list(plots.RATIO_PATTERNS))
    assert_readable(fig)
    assert fig._suptitle.get_text() == "Emergent patterns, mean over 3 members"
    assert [ax.get_title() for ax in fig.axes[:4] if ax.get_title()][:2] == [
        "(a) evaporative fraction ET/Rn", "(b) runoff coefficient Q/P"]
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bars == ["ET / Rn [–]", "Q / P [–]", "T / ET [–]", "Q_base / Q_total [–]"]
    # SM_max maps are not "emergent patterns": no such title unless one is given
    fig = plots.plot_patterns(maps, ["sm_max", "sm_max_spread"])
    assert fig._suptitle is None or "Emergent patterns" not in fig._suptitle.get_text()
    fig = plots.plot_patterns(maps, ["sm_max", "sm_max_spread"], title="Learned SM_max")
    assert fig._suptitle.get_text() == "Learned SM_max"
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bars == ["SM_max [mm]", "max − min over members [mm]"]
    assert_readable(fig)


def test_tws_decomposition_labels_do_not_collide():
    ens, store = small_stores(members=3, noise=0.1)
    e, s = predicted_cells(ens, store)
    maps = ensemble_patterns(e, s, ens)
    shares = maps[["tws_share_gw", "tws_share_swe", "tws_share_sm"]]
    fig = plots.plot_tws_decomposition(shares)
    assert_readable(fig)
    maps_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in maps_axes] == [
        "(a) snow (SWE)", "(b) soil moisture (SM)", "(c) groundwater (GW)"]
    assert [ax.get_ylabel() for ax in maps_axes] == ["latitude (°N)", "", ""]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [ax.get_xlabel() for ax in bars] == ["share of TWS variability, C_rel [–]"] * 3


def test_demo_bucket_figure_dates_spinup_and_distinct_colours():
    from h2mv_hybrid.demo import SPINUP_DAYS, plot_series
    from h2mv_hybrid.sites import site_climates, site_coefficients, site_forcing
    from process_layers import h2mv

    forcing = site_forcing(2, 730, seed=0, dtype=torch.float64)
    alpha, static, beta = site_coefficients(forcing, seed=0)
    fluxes = h2mv.simulate(forcing, alpha, static, beta, h2mv.initial_states(2, dtype=torch.float64))
    fig = plot_series(fluxes, forcing["prec"], [c.name for c in site_climates(2)])
    assert_readable(fig)
    import matplotlib.dates as mdates

    storage, flux = fig.axes[0], fig.axes[1]
    assert isinstance(storage.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    start, end = storage.get_xlim()
    assert mdates.num2date(start).year == 2000 or mdates.num2date(start).year == 2001
    colours = {line.get_label(): line.get_color() for ax in (storage, flux)
               for line in ax.lines}
    for a, b in (("SWE", "GW"), ("SWE", "total runoff"), ("GW", "total runoff"),
                 ("SM", "TWS"), ("ET", "baseflow")):
        assert colour_distance(colours[a], colours[b]) > 0.25, (a, b)
    rain = next(ax for ax in fig.axes if ax.get_ylabel() == "precipitation [mm day⁻¹]")
    low, high = rain.get_ylim()
    assert low > high  # bars hang from the top: the fluxes stay visible below them
    spans = [p for p in storage.patches if p.get_label().startswith("spin-up")]
    assert len(spans) == 1
    x0, x1 = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    assert x1 - x0 == pytest.approx(SPINUP_DAYS - 1)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["SWE", "SM", "GW", "TWS", "spin-up (storages start empty)", "ET",
                      "total runoff", "baseflow", "precipitation"]
    assert storage.get_ylabel() == "storage [mm]" and flux.get_ylabel() == "flux [mm day⁻¹]"


def test_identifiability_heat_maps_are_labelled_and_readable():
    import pandas as pd

    variants = ["all", "without tws", "without et"]
    rows = []
    for j, v in enumerate(variants):
        rows += [{"variant": v, "quantity": c, "metric": "kge (monthly)", "value": 0.9 - 0.1 * j}
                 for c in ("tws", "et", "q")]
        rows += [{"variant": v, "quantity": q, "metric": "equifinality", "value": 0.1 * 2 ** j}
                 for q in ("sm_max", "T", "q_base")]
    fig = plots.plot_identifiability(pd.DataFrame(rows))
    assert_readable(fig)
    a, b = fig.axes[:2]
    assert [t.get_text() for t in a.get_yticklabels()] == [
        "tws (constraint)", "et (constraint)", "q (constraint)"]
    assert [t.get_text() for t in b.get_yticklabels()] == [
        "SM_max (soil capacity)", "transpiration", "baseflow"]
    assert [t.get_text() for t in b.get_xticklabels()] == ["without tws", "without et"]
    assert {t.get_text() for t in b.texts} == {"×2", "×4"}
    bars = [ax.get_ylabel() for ax in fig.axes[2:]]
    assert bars == ["KGE of monthly values [–]",
                    "log₂ (equifinality / with all constraints) [–]"]
