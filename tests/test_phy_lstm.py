"""The PHY-LSTM heads: twin variables, inputs served, the losses, scores and h2mv compare."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from h2mv_hybrid import cli
from h2mv_hybrid.analysis.climate import ZONES, koppen_zone
from h2mv_hybrid.analysis.soil_moisture import soil_moisture_scores, summarize
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.schema import StoreError, check_store
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.data.synth import (
    FEATURES,
    STEFAN_BOLTZMANN,
    SURFACE_EMISSIVITY,
    TwinConfig,
    residual_water_content,
    synthesize,
)
from h2mv_hybrid.ensemble.compare import load_spec
from h2mv_hybrid.heads.phy_lstm import SoilMoistureLSTM

# Fits through the real CLI: left out of the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments" / "phy_lstm"
INPUTS = ["sw_down", "lw_down", "q_air", "psurf", "wind", "sm_layers", "et_daily",
          "q_surf_daily", "swe_daily"]


@pytest.fixture(scope="module")
def twin():
    return synthesize(TwinConfig(res=8.0, years="2001-2003", seed=2))


@pytest.fixture(scope="module")
def store(twin, tmp_path_factory):
    path = tmp_path_factory.mktemp("phy") / "twin.zarr"
    write_store(*twin, path)
    return str(path)


# -- the twin ------------------------------------------------------------------------------

def test_twin_layers_close_the_bucket_water_balance(twin):
    store, truth = twin
    thickness = 1000.0 * (store["depth_bottom"] - store["depth_top"])
    theta_r = residual_water_content(store["static"].sel(feature="clay"))
    storage = ((store["sm_layers"] - theta_r) * thickness).sum("layer")
    scale = float(truth["sm"].max())
    err = float(np.nanmax(np.abs((storage - truth["sm"]).values)))
    assert err < 1e-5 * scale  # float32 precision of the stored θ
    # every layer within [θ_r, θ_r + SM_max / 1 m]
    upper = theta_r + truth["sm_max"] / 1000.0
    assert bool(((store["sm_layers"] >= theta_r - 1e-6) | store["sm_layers"].isnull()).all())
    assert bool(((store["sm_layers"] <= upper + 1e-6) | store["sm_layers"].isnull()).all())


def test_twin_radiation_closes_the_energy_budget(twin):
    store, _ = twin
    albedo = store["static"].sel(feature="albedo")
    lw_up = SURFACE_EMISSIVITY * STEFAN_BOLTZMANN * store["tair"].astype("f8") ** 4
    rn = (1 - albedo) * store["sw_down"] + store["lw_down"] - lw_up
    assert float(np.nanmax(np.abs((rn - store["rn"]).values))) < 0.05  # W m⁻², float32


def test_twin_daily_fields_are_the_bucket_fluxes(twin):
    store, truth = twin
    for name, flux in (("et_daily", "ET"), ("q_surf_daily", "q_surf"), ("swe_daily", "swe")):
        xr.testing.assert_allclose(store[name].reset_coords(drop=True),
                                   truth[flux].reset_coords(drop=True))


def test_twin_passes_the_schema_with_every_input(twin):
    info = check_store(twin[0], inputs=INPUTS)
    assert info.n_cells > 0
    assert FEATURES.index("clay") >= 0


# -- schema errors -------------------------------------------------------------------------

def test_missing_or_unknown_inputs_are_named(twin):
    store = twin[0]
    with pytest.raises(StoreError, match="sm_layers: expected in the store.*synth --overwrite"):
        check_store(store.drop_vars("sm_layers"), inputs=["sm_layers"], check_values=False)
    with pytest.raises(StoreError, match="inputs: expected names among.*found 'soil'"):
        check_store(store, inputs=["soil"], check_values=False)


def test_gaps_in_meteorology_refused_in_targets_allowed(twin):
    store = twin[0].copy()
    mask = store["mask"].values
    i, j = np.argwhere(mask)[0]
    wind = store["wind"].load().copy()
    wind[5, i, j] = np.nan
    with pytest.raises(StoreError, match="wind: expected complete forcing.*NaN at 1 cells"):
        check_store(store.assign(wind=wind), inputs=["wind"])
    sm = store["sm_layers"].load().copy()
    sm[5, 0, i, j] = np.nan
    check_store(store.assign(sm_layers=sm), inputs=["sm_layers"])  # gaps allowed


def test_layer_depths_are_checked(twin):
    store = twin[0]
    flipped = store.assign_coords(depth_top=("layer", [0.0, 0.5, 0.28], {"units": "m"}))
    with pytest.raises(StoreError, match="depth_top, depth_bottom: expected layers"):
        check_store(flipped, check_values=False)
    no_units = store.assign_coords(depth_bottom=("layer", [0.07, 0.28, 1.0]))
    with pytest.raises(StoreError, match="depth_bottom: expected units 'm'"):
        check_store(no_units, check_values=False)


# -- the DataModule serves the inputs ------------------------------------------------------

def datamodule(store, **kw):
    args = dict(store=store, targets=[], inputs=INPUTS, n_folds=3, train_start="2001-02-01",
                train_end="2002-12-31", spinup_years=0.02, batch_size=8)
    args.update(kw)
    return H2MVDataModule(**args)


def test_inputs_served_with_their_statistics(store):
    dm = datamodule(store)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    n_days = batch["forcing"].shape[1]
    assert batch["sm_layers"].shape == (batch["forcing"].shape[0], n_days, 3)
    assert batch["wind"].shape == batch["forcing"].shape[:2]
    assert int(batch["spinup_days"]) == 7
    stats = dm.stats
    assert len(stats.input_mean["sm_layers"]) == 3 and len(stats.input_mean["wind"]) == 1
    assert stats.layer_thickness_mm == pytest.approx([70.0, 210.0, 720.0])
    assert 0.02 < stats.input_mean["sm_layers"][0] < 0.6


# -- the module ----------------------------------------------------------------------------

def test_module_names_missing_inputs_and_short_windows(store):
    dm = datamodule(store, inputs=["sm_layers"])
    with pytest.raises(ValueError, match="data.inputs: expected .*add lw_down, sw_down.*to data.inputs"):
        SoilMoistureLSTM(dm.stats)
    dm = datamodule(store, inputs=["sm_layers", "sw_down", "lw_down", "q_air", "psurf",
                                   "wind"])
    with pytest.raises(ValueError, match="add et_daily, q_surf_daily, swe_daily"):
        SoilMoistureLSTM(dm.stats, physics="surface")
    dm = datamodule(store, spinup_years=0.0)
    model = SoilMoistureLSTM(dm.stats)
    dm.setup("fit")
    with pytest.raises(ValueError, match="spinup_years: expected at least 6 days"):
        model.training_step(next(iter(dm.train_dataloader())), 0)


def test_losses_follow_eq8(store):
    dm = datamodule(store)
    model = SoilMoistureLSTM(dm.stats, physics="surface", w_data=0.3, w_phy=0.7)
    std = model.y_std
    obs = torch.tensor([0.20, 0.25, 0.24, 0.20])
    prev = torch.tensor([0.22, 0.20, 0.25, 0.24])
    direction = torch.tensor([1.0, 1.0, -1.0, -1.0])
    keep = torch.tensor([True, True, True, False])
    pred = torch.tensor([0.21, 0.24, 0.27, 0.30])
    total, rmse, phy = model.losses(pred, obs, prev, direction, keep)
    assert float(rmse) == pytest.approx(math.sqrt(((pred - obs) ** 2).mean()) / std, rel=1e-5)
    # day 0: 0.21 < 0.22 with a rise expected → 0.01; day 2: 0.27 > 0.25, a fall → 0.02
    assert float(phy) == pytest.approx((0.01 + 0.02) / 4 / std, rel=1e-4)
    assert float(total) == pytest.approx(0.3 * float(rmse) + 0.7 * float(phy), rel=1e-6)
    plain = SoilMoistureLSTM(dm.stats)
    total, rmse, phy = plain.losses(pred, obs, prev, None, None)
    assert float(total) == float(rmse) and float(phy) == 0.0


def test_forecast_windows_end_on_the_target_day(store):
    """The forecast of day d reads days d−6 … d: changing day d+1 leaves it unchanged."""
    dm = datamodule(store)
    dm.setup("fit")
    model = SoilMoistureLSTM(dm.stats).eval()
    batch = next(iter(dm.val_dataloader()))
    base = model.forecast_period(batch)
    start = int(batch["spinup_days"])
    d = 30
    later = {k: v.clone() for k, v in batch.items()}
    later["forcing"][:, start + d + 1:, :] += 5.0
    changed = model.forecast_period(later)
    assert torch.equal(base[:, :d + 1], changed[:, :d + 1])
    assert not torch.equal(base[:, d + 1], changed[:, d + 1])
    early = {k: v.clone() for k, v in batch.items()}
    early["forcing"][:, start + d - 6, :] += 5.0  # first day of day d's window
    assert not torch.equal(base[:, d], model.forecast_period(early)[:, d])
    assert torch.equal(base[:, d + 1], model.forecast_period(early)[:, d + 1])


# -- scores --------------------------------------------------------------------------------

def test_koppen_zones_by_hand():
    months = np.arange(12)
    warm = 26 + 0 * months
    boreal = -15 + 30 * np.sin(np.pi * months / 11)  # −15 … 15 °C
    tundra = -20 + 25 * np.sin(np.pi * months / 11)  # warmest month 5 °C
    mild = 8 + 8 * np.sin(np.pi * months / 11)  # 8 … 16 °C
    t = np.stack([warm, warm, mild, boreal, tundra], 1)
    wet = np.full(12, 150.0)
    dry = np.full(12, 5.0)
    p = np.stack([wet, dry, wet, wet, wet], 1)
    zones = koppen_zone(t, p, np.array([0.0, 20.0, 45.0, 60.0, 70.0]))
    assert [ZONES[z] for z in zones] == ["tropical", "arid", "temperate", "continental",
                                        "polar"]


def scores_case(offset=0.0):
    """A point store of 4 cells over a year and an ensemble of 2 members forecasting layer 1.

    Cells: wet and hot (tropical), hot and dry (arid), mild (temperate), cold winters
    (continental).
    """
    n_days, n = 365, 4
    time = pd.date_range("2001-01-01", periods=n_days, freq="D")
    rng = np.random.default_rng(0)
    t = np.arange(n_days)[:, None]
    sm = 0.2 + 0.05 * np.sin(t / 5 + np.arange(n)) + 0.01 * rng.standard_normal((n_days, n))
    layer = np.stack([sm, sm * 0.9, sm * 0.8], 1)  # (time, layer, cell)
    season = -np.cos(2 * np.pi * t / 365)  # coldest in January
    tair = np.concatenate([300.0 + 0 * t, 300.0 + 0 * t, 285.0 + 6 * season,
                           270.0 + 15 * season], 1)
    prec = rng.gamma(0.5, 4.0, (n_days, n))
    prec[:, 0] *= 3.0  # well above the arid threshold (680 mm at 27 °C)
    prec[:, 1] *= 0.01
    spatial = ("time", "cell")
    store = xr.Dataset(
        {"prec": (spatial, prec), "tair": (spatial, tair),
         "et_daily": (spatial, 1.0 + 0.5 * rng.random((n_days, n))),
         "q_surf_daily": (spatial, 0.1 * rng.random((n_days, n))),
         "swe_daily": (spatial, 0 * sm),
         "sm_layers": (("time", "layer", "cell"), layer),
         "mask": ("cell", np.ones(n, bool))},
        coords={"time": time, "lat": ("cell", [0.0, 20.0, 45.0, 55.0]),
                "lon": ("cell", np.zeros(n)), "layer": [1, 2, 3],
                "depth_top": ("layer", [0.0, 0.07, 0.28]),
                "depth_bottom": ("layer", [0.07, 0.28, 1.0])})
    pred = np.stack([sm[10:] + offset, sm[10:] + 2 * offset])
    ens = xr.Dataset({"sm_layer1": (("member", "time", "cell"), pred)},
                     coords={"member": [0, 4], "time": time[10:],
                             "lat": store["lat"], "lon": store["lon"]})
    return ens, store


def test_perfect_forecast_scores_and_reference_inconsistency():
    ens, store = scores_case()
    scores = soil_moisture_scores(ens, store)
    assert scores.sizes == {"member": 2, "cell": 4}
    assert list(scores["member"].values) == [0, 4]
    np.testing.assert_allclose(scores["R"], 1.0)
    np.testing.assert_allclose(scores["RMSE"], 0.0, atol=1e-12)
    np.testing.assert_allclose(scores["R2"], 1.0)
    np.testing.assert_allclose(scores["KGE"], 1.0)
    # a perfect forecast is exactly as (in)consistent as the observations
    for k in ("", "_deep", "_level"):
        np.testing.assert_allclose(scores[f"inconsistency{k}"].isel(member=0),
                                   scores[f"observed_inconsistency{k}"])
    overall, by_zone = summarize(scores)
    assert overall.loc[0, "R"] == pytest.approx(1.0) and overall.loc[0, "cells"] == 4
    assert list(scores["zone"].values) == [0, 1, 2, 3]  # tropical, arid, temperate, continental
    assert list(by_zone["zone"]) == ["tropical", "arid", "temperate", "continental"]
    assert by_zone["cells"].sum() == 4


def test_offset_forecast_scores_by_hand():
    ens, store = scores_case(offset=0.01)
    scores = soil_moisture_scores(ens, store)
    np.testing.assert_allclose(scores["RMSE"].sel(member=0), 0.01, rtol=1e-9)
    np.testing.assert_allclose(scores["RMSE"].sel(member=4), 0.02, rtol=1e-9)
    np.testing.assert_allclose(scores["R"], 1.0)
    obs = store["sm_layers"].isel(layer=0).isel(time=slice(10, None)).drop_vars(
        ["layer", "depth_top", "depth_bottom"])
    r2 = 1 - 0.01**2 / obs.var("time").values  # 1 − SSE / SST
    np.testing.assert_allclose(scores["R2"].sel(member=0), r2, rtol=1e-9)
    kge = 1 - np.abs(1 + 0.01 / obs.mean("time").values - 1)  # only the bias ratio
    np.testing.assert_allclose(scores["KGE"].sel(member=0), kge, rtol=1e-9)
    # a constant offset changes no day-to-day change: same inconsistency as observed
    np.testing.assert_allclose(scores["inconsistency"].sel(member=4),
                               scores["observed_inconsistency"])


# -- the specs and h2mv compare ------------------------------------------------------------

SPECS = sorted(p for p in EXPERIMENTS.glob("*.yaml") if "variants:" in p.read_text())


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_specs_parse(spec, monkeypatch):
    monkeypatch.chdir(ROOT)
    s = load_spec(spec)
    assert s.variants and all(v.config.is_file() for v in s.variants)
    if spec.stem == "weight_sweep":
        ratios = [v.overrides for v in s.variants if v.overrides]
        assert len(ratios) == 10  # C1–C5 and D1–D5
        assert ratios[0] == ["--model.init_args.w_data=0.1", "--model.init_args.w_phy=0.9"]


def test_bad_specs_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"variants": [{"name": "x"}]}))
    with pytest.raises(ValueError, match=r"variants\[0\]: expected keys name, config"):
        load_spec(bad)
    bad.write_text(yaml.safe_dump({"folds": 3, "variant": []}))
    with pytest.raises(ValueError, match="expected keys among .*found variant"):
        load_spec(bad)
    cfg = "experiments/phy_lstm/lstm.yaml"
    bad.write_text(yaml.safe_dump({"variants": [{"name": "a b", "config": cfg},
                                                {"name": "a-b", "config": cfg}]}))
    with pytest.raises(ValueError, match="distinct names"):
        load_spec(bad)


def test_compare_runs_the_three_way_table(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    spec = tmp_path / "spec.yaml"
    root = tmp_path / "cmp"
    spec.write_text(yaml.safe_dump({
        "root": str(root), "folds": 3, "members": [1],
        "overrides": [f"--data.store={store}", "--trainer.max_epochs=1",
                      "--trainer.enable_progress_bar=false", "--data.batch_size=16",
                      "--data.train_start=2001-02-01", "--data.train_end=2002-06-30",
                      "--data.val_start=2002-07-01", "--data.val_end=2002-12-31",
                      "--data.test_start=2003-01-01", "--data.test_end=2003-12-31",
                      "--model.init_args.hidden=16",
                      "--trainer.logger=false", "--trainer.check_val_every_n_epoch=1"],
        "variants": [{"name": n, "config": f"experiments/phy_lstm/{c}.yaml"} for n, c in
                     (("LSTM", "lstm"), ("PHY-LSTM", "phy_lstm"), ("PHYs-LSTM", "phys_lstm"))],
    }))
    cli.main(["compare", "--spec", str(spec)])
    out = capsys.readouterr().out
    table = pd.read_csv(root / "comparison.csv")
    assert list(table["variant"]) == ["LSTM", "PHY-LSTM", "PHYs-LSTM"]
    for col in ("R", "RMSE", "R2", "KGE", "inconsistency", "inconsistency_deep"):
        assert table[col].notna().all(), col
    assert (table["members"] == 1).all()
    assert ((table["inconsistency"] >= 0) & (table["inconsistency"] <= 1)).all()
    assert "PHYs-LSTM" in out and "incons. ΔW" in out and "observed" in out
    zones = pd.read_csv(root / "by_zone.csv")
    assert set(zones["zone"]) <= set(ZONES) and len(zones) >= 3
    ens = xr.open_zarr(root / "phy_lstm" / "ensemble.zarr", consolidated=False)
    assert list(ens["member"].values) == [1] and "sm_layer1" in ens
    assert ens["sm_layer1"].attrs["units"] == "m3 m-3"
    assert ens.sizes["time"] == 365
    # h2mv predict writes the head's forecast through the same prediction writer
    member = root / "lstm" / "member_1"
    out = tmp_path / "pred.zarr"
    cli.main(["predict", "--config", str(member / "config.yaml"),
              "--ckpt_path", str(next((member / "checkpoints").glob("best*.ckpt"))),
              "--trainer.callbacks+=h2mv_hybrid.callbacks.prediction.ZarrPredictionWriter",
              f"--trainer.callbacks.output={out}"])
    pred = xr.open_zarr(out, consolidated=False)
    assert pred["sm_layer1"].attrs["units"] == "m3 m-3" and pred.sizes["time"] == 365
    assert int(pred["sm_layer1"].isel(time=0).notnull().sum()) == int(
        H2MVDataModule(store=store, n_folds=3).cells("predict").sum())
    capsys.readouterr()
    # a rerun trains nothing and leaves the stores as they are
    mtime = (root / "lstm" / "member_1" / "done.json").stat().st_mtime
    cli.main(["compare", "--spec", str(spec)])
    assert (root / "lstm" / "member_1" / "done.json").stat().st_mtime == mtime
    assert "up to date" in capsys.readouterr().out


def test_twin_eq10_is_the_soil_change_plus_recharge(twin):
    """On the twin, ΔW (eq. 10) = ΔSM + r_gw + the snowfall β_snow scales away (A1)."""
    store, truth = twin
    dw = (store["prec"] - store["et_daily"] - store["q_surf_daily"]
          - store["swe_daily"].diff("time"))
    undercatch = store["prec"] - truth["rainfall"] - truth["snow_acc"]  # (1 − β) P on snow days
    assert float(undercatch.max()) > 1.0  # the twin has snow days
    closure = dw - truth["sm"].diff("time") - truth["r_gw"] - undercatch
    assert float(np.nanmax(np.abs(closure.values))) < 1e-3  # mm day⁻¹, float32 stores
