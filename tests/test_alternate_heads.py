"""The multi-task LSTM, the CNN-LSTM with its Richards loss, the tree baselines, and their tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml

from h2mv_hybrid import cli
from h2mv_hybrid.analysis.ensemble import predicted_cells
from h2mv_hybrid.analysis.skill import balance_closure, output_scores, summarize_outputs
from h2mv_hybrid.analysis.soil_profile import profile_inconsistency
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.schema import StoreError
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.data.synth import TwinConfig, synthesize
from h2mv_hybrid.ensemble.baselines import tabular_features
from h2mv_hybrid.ensemble.compare import load_spec
from h2mv_hybrid.heads.cnn_lstm import CNN_FORCINGS, PatchCNNLSTM
from h2mv_hybrid.heads.multitask_lstm import MultiTaskLSTM
from process_layers import richards
from process_layers.layered_balance import balance_residual, storage_change

# Fits through the real CLI: left out of the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MTL_INPUTS = ["sw_down", "lw_down", "q_air", "psurf", "wind", "sm_layers", "et_daily",
              "q_surf_daily"]
CNN_INPUTS = ["sw_down", "lw_down", "q_air", "wind", "sm_layers", "et_daily"]
PATCH_INPUTS = ["sm_layers", *CNN_FORCINGS, "static"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("heads") / "twin.zarr"
    write_store(*synthesize(TwinConfig(res=8.0, years="2001-2003", seed=3)), path)
    return str(path)


def datamodule(store, **kw):
    args = dict(store=store, targets=[], inputs=MTL_INPUTS, n_folds=3,
                train_start="2002-01-01", train_end="2002-06-30", val_start="2002-07-01",
                val_end="2002-12-31", test_start="2003-01-01", test_end="2003-12-31",
                spinup_years=1.0, batch_size=16)
    args.update(kw)
    return H2MVDataModule(**args)


def cnn_datamodule(store, **kw):
    return datamodule(store, inputs=CNN_INPUTS, patch=3, patch_inputs=PATCH_INPUTS,
                      spinup_years=0.1, **kw)


# -- the DataModule: data scarcity and patches ----------------------------------------------

def test_train_fraction_draws_a_seeded_subset_of_training_cells_only(store):
    full, half = datamodule(store), datamodule(store, train_fraction=0.5)
    n = int(full.cells("train").sum())
    sub = half.cells("train")
    assert int(sub.sum()) == round(0.5 * n)
    assert not (sub & ~full.cells("train")).any()
    assert np.array_equal(sub, datamodule(store, train_fraction=0.5).cells("train"))
    assert not np.array_equal(sub, datamodule(store, train_fraction=0.5,
                                              member=1).cells("train") & full.cells("train"))
    for stage in ("val", "test"):
        assert np.array_equal(half.cells(stage), full.cells(stage))
    assert half.stats.input_mean["sm_layers"] != full.stats.input_mean["sm_layers"]
    with pytest.raises(ValueError, match=r"train_fraction: expected a share in \(0, 1\]"):
        datamodule(store, train_fraction=0.0)


def test_patches_are_the_neighbourhood_padded_at_the_edges(store):
    dm = cnn_datamodule(store)
    dm.setup()
    data = dm.batches("train")
    edge = np.flatnonzero((data.cols == 0) | (data.rows == data.ds.sizes["lat"] - 1))
    inner = np.flatnonzero((data.cols > 0) & (data.cols < data.ds.sizes["lon"] - 1)
                           & (data.rows > 0) & (data.rows < data.ds.sizes["lat"] - 1))
    positions = np.concatenate([edge[:2], inner[:6]])
    batch = data[positions]
    order = np.sort(positions)
    n_days = batch["forcing"].shape[1]
    assert batch["sm_layers_patch"].shape == (len(order), n_days, 3, 3, 3)
    assert batch["static_patch"].shape == (len(order), batch["static"].shape[1], 3, 3)
    assert torch.equal(batch["sm_layers_patch"][:, :, :, 1, 1].nan_to_num(),
                       batch["sm_layers"].nan_to_num())
    w = dm.window("train")
    prec = data.ds["prec"].values[w.first_day:w.end_day]
    mask = data.ds["mask"].values
    for i, pos in enumerate(order):
        r, c = data.rows[pos], data.cols[pos]
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                got = batch["prec_patch"][i, :, dr + 1, dc + 1].numpy()
                inside = 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1]
                if inside:
                    np.testing.assert_array_equal(got, prec[:, rr, cc].astype(np.float32))
                else:
                    assert np.isnan(got).all()
                assert float(batch["patch_valid"][i, dr + 1, dc + 1]) == float(
                    inside and bool(mask[rr, cc]))


def test_patch_settings_are_checked(store):
    with pytest.raises(ValueError, match="patch: expected an odd number"):
        datamodule(store, patch=2, patch_inputs=["prec"])
    with pytest.raises(ValueError, match="patch_inputs: expected the variables"):
        datamodule(store, patch=3)
    dm = datamodule(store, inputs=["sm_layers"], patch=3, patch_inputs=["sm_layers", "wind"])
    with pytest.raises(StoreError, match="patch_inputs: expected .*found wind"):
        dm.setup()


# -- the multi-task LSTM ------------------------------------------------------------------

def test_water_balance_by_hand():
    theta = torch.tensor([[[0.10, 0.20, 0.30], [0.12, 0.19, 0.30], [0.12, 0.19, 0.31]]])
    thickness = torch.tensor([70.0, 210.0, 720.0])
    # day 1: 70·0.02 − 210·0.01 = −0.7 mm; day 2: 720·0.01 = 7.2 mm
    assert storage_change(theta, thickness)[0].tolist() == pytest.approx([-0.7, 7.2], abs=1e-4)
    prec = torch.tensor([[0.0, 5.0, 10.0]])
    et = torch.tensor([[0.0, 2.0, 1.0]])
    runoff = torch.tensor([[0.0, 1.0, 0.5]])
    b = balance_residual(prec, et, runoff, theta, thickness)
    assert b[0].tolist() == pytest.approx([5 - 2 - 1 + 0.7, 10 - 1 - 0.5 - 7.2], abs=1e-4)
    eps = torch.tensor([[0.0, 2.7, 1.3]])
    assert balance_residual(prec, et, runoff, theta, thickness, eps).abs().max() < 1e-4


def test_multitask_checks_its_inputs_and_tasks(store):
    dm = datamodule(store, inputs=["sm_layers"])
    with pytest.raises(ValueError, match="data.inputs: expected .*add lw_down"):
        MultiTaskLSTM(dm.stats)
    dm = datamodule(store)
    with pytest.raises(ValueError, match=r"physics 'learned' needs .*missing \['et_daily'\]"):
        MultiTaskLSTM(dm.stats, tasks=["sm_layer1", "sm_layer2", "sm_layer3"],
                      physics="learned")
    with pytest.raises(ValueError, match="tasks: sm_layer4 expected a layer in 1 … 3"):
        MultiTaskLSTM(dm.stats, tasks=["sm_layer4"])
    short = datamodule(store, spinup_years=0.5)
    short.setup()
    model = MultiTaskLSTM(short.stats)
    with pytest.raises(ValueError, match="spinup_years: expected at least 365 days"):
        model.validation_step(next(iter(short.val_dataloader())), 0)


def test_multitask_loss_is_the_tasks_rmse_plus_the_balance_term(store):
    dm = datamodule(store)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    model = MultiTaskLSTM(dm.stats, physics="fixed", w_phy=0.5, hidden=8, head_hidden=4).eval()
    out = model(batch)
    scored = batch["forcing"].shape[1] - int(batch["spinup_days"])
    terms = model.losses(out, batch, 0, None, scored)
    by_hand = 0.0
    for i, t in enumerate(model.tasks):
        y = (batch["sm_layers"][..., int(t[-1]) - 1] if t.startswith("sm") else
             batch["et_daily"])[:, -scored:]
        by_hand += float(torch.sqrt((((out[t][:, -scored:] - y) / model.y_std[i]) ** 2).mean()))
    prec = batch["forcing"][..., 1]
    theta = torch.stack([out[f"sm_layer{k}"] for k in (1, 2, 3)], -1)
    b = balance_residual(prec, out["et_daily"], batch["q_surf_daily"], theta,
                         model.thickness)[:, -(scored - 1):]
    phy = float(torch.sqrt(((b / model.p_std) ** 2).mean()))
    assert float(terms["phy"]) == pytest.approx(phy, rel=1e-4)
    assert float(terms["loss"]) == pytest.approx(by_hand + 0.5 * phy, rel=1e-4)


def test_learned_residual_is_trained_only_through_the_balance(store):
    dm = datamodule(store)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    model = MultiTaskLSTM(dm.stats, physics="learned", hidden=8, head_hidden=4,
                          residual_hidden=4, train_days=30)
    model.training_step(batch, 0).backward()
    grads = [p.grad for p in model.residual_lstm.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.zero_grad()
    model.hparams.w_phy = 0.0  # no balance term: ε has no other way into the loss
    model.training_step(batch, 0).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0
               for p in model.residual_lstm.parameters())


def test_multitask_outputs_on_day_d_read_no_later_forcing(store):
    dm = datamodule(store)
    dm.setup()
    model = MultiTaskLSTM(dm.stats, hidden=8, head_hidden=4).eval()
    batch = next(iter(dm.val_dataloader()))
    base = model(batch)["sm_layer2"]
    d = 400
    later = {k: v.clone() for k, v in batch.items()}
    later["forcing"][:, d + 1:] += 3.0
    changed = model(later)["sm_layer2"]
    assert torch.equal(base[:, :d + 1], changed[:, :d + 1])
    assert not torch.equal(base[:, d + 1], changed[:, d + 1])


# -- the CNN-LSTM --------------------------------------------------------------------------

def test_cnn_lstm_output_stays_between_residual_and_saturated_content(store):
    dm = cnn_datamodule(store)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    torch.manual_seed(1)
    model = PatchCNNLSTM(dm.stats, physics="none", bounded=True, hidden=8, conv_channels=4)
    with torch.no_grad():
        model.head.bias.fill_(30.0)  # push the activation to its upper end
    soil = model.soil(batch)
    hi = model(batch)
    assert torch.all(hi <= soil.theta_s[:, None, None].float() + 1e-6)
    assert torch.allclose(hi, soil.theta_s[:, None, None].float().expand_as(hi), atol=1e-4)
    with torch.no_grad():
        model.head.bias.fill_(-30.0)
    lo = model(batch)
    assert torch.all(lo >= soil.theta_r[:, None, None].float() - 1e-6)
    free = PatchCNNLSTM(dm.stats, physics="none", bounded=False, hidden=8, conv_channels=4)
    with torch.no_grad():
        free.head.bias.fill_(30.0)
    assert float(free(batch).max()) > 1.0  # unbounded: nothing holds it


def test_cnn_lstm_richards_term_and_gradients(store):
    dm = cnn_datamodule(store)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(2)
    model = PatchCNNLSTM(dm.stats, physics="richards", w_phy=0.3, hidden=8, conv_channels=4,
                         warmup_days=10, train_days=20)
    loss = model.training_step(batch, 0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the term by hand on a fixed window
    pred = model(batch, 0, 30)
    theta = model.profile(batch, pred, 0, 30)
    soil = richards.cosby_1984(batch["static"][:, model.features.index("sand")].double(),
                               batch["static"][:, model.features.index("clay")].double())
    sink = batch["et_daily"][:, :30, None] * torch.tensor([0.25, 0.45, 0.30])
    res = richards.richards_residual(theta.double(), [70.0, 210.0, 720.0], soil,
                                     bottom="zero_flux", sink=sink.double())
    assert torch.allclose(model.residual(batch, theta, 0, 30).double(), res, rtol=1e-3,
                          atol=1e-3)


def test_cnn_lstm_checks_its_settings(store):
    dm = cnn_datamodule(store)
    with pytest.raises(ValueError, match="layers: expected distinct layers in 2 … 3"):
        PatchCNNLSTM(dm.stats, layers=[1, 2])
    with pytest.raises(ValueError, match=r"whole profile below the surface layer, expected "
                                          r"\[2, 3\]"):
        PatchCNNLSTM(dm.stats, layers=[3])
    with pytest.raises(ValueError, match="pedotransfer: expected one of"):
        PatchCNNLSTM(dm.stats, pedotransfer="saxton")
    plain = datamodule(store, inputs=CNN_INPUTS, spinup_years=0.1)
    plain.setup()
    model = PatchCNNLSTM(plain.stats, hidden=8, conv_channels=4)
    with pytest.raises(KeyError):
        model(next(iter(plain.val_dataloader())))


# -- the baselines' features ---------------------------------------------------------------

def test_tabular_features_by_hand():
    n_days = 40
    s = torch.arange(n_days, dtype=torch.float32)[None].repeat(2, 1) / 100
    prec = torch.ones(2, n_days)
    forcing = torch.stack([torch.zeros(2, n_days), prec, 280 + torch.zeros(2, n_days)], -1)
    batch = {"sm_layers": s[..., None].repeat(1, 1, 3), "forcing": forcing,
             "static": torch.tensor([[0.3, 0.2], [0.5, 0.1]]),
             **{k: torch.zeros(2, n_days) for k in CNN_FORCINGS if k not in ("prec", "tair")}}
    x, names = tabular_features(batch, ["sand", "clay"])
    assert x.shape == (2, n_days, len(names)) and names[-2:] == ["sand", "clay"]
    day = 35
    col = dict(zip(names, x[0, day].tolist(), strict=True))
    assert col["sm_surface"] == pytest.approx(0.35)
    assert col["sm_surface_lag7"] == pytest.approx(0.28)
    assert col["sm_surface_mean7"] == pytest.approx(np.mean(np.arange(29, 36)) / 100, rel=1e-5)
    assert col["prec_sum30"] == pytest.approx(30.0)
    assert col["tair_mean30"] == pytest.approx(280.0)
    assert col["sand"] == pytest.approx(0.3)
    assert np.isnan(x[0, 5, names.index("sm_surface_mean30")])


# -- scores --------------------------------------------------------------------------------

def fake_ensemble(store, outputs, offset=0.0):
    ds = xr.open_zarr(store, consolidated=False)
    time = ds["time"].sel(time=slice("2003-01-01", "2003-12-31"))
    data = {}
    for name in outputs:
        src = (ds["sm_layers"].isel(layer=int(name[-1]) - 1) if name.startswith("sm_layer")
               else ds[name])
        data[name] = (src.sel(time=time).drop_vars(["layer", "depth_top", "depth_bottom"],
                                                   errors="ignore") + offset).expand_dims(
            member=[0])
    return xr.Dataset(data), ds


def test_perfect_outputs_score_perfectly_and_close_like_the_store(store):
    ens, ds = fake_ensemble(store, ["sm_layer1", "sm_layer2", "sm_layer3", "et_daily"])
    scores = output_scores(ens, ds)
    assert list(scores["output"].values) == ["sm_layer1", "sm_layer2", "sm_layer3",
                                             "et_daily"]
    assert float(abs(scores["RMSE"]).max()) < 1e-6
    assert float(scores["R"].min()) > 0.999999
    overall, by_zone = summarize_outputs(scores)
    assert list(overall["output"]) == list(scores["output"].values)
    assert (overall["RMSE_low"] < 1e-6).all() and len(by_zone) >= 2
    closure = balance_closure(ens, ds)
    np.testing.assert_allclose(closure["prediction"].isel(member=0), closure["observed"],
                               rtol=1e-5)
    assert float(closure["observed"].median()) > 0.01  # snow and recharge are outside it
    shares = profile_inconsistency(ens, ds)
    np.testing.assert_allclose(shares["prediction"].isel(member=0), shares["observed"])
    assert not balance_closure(ens[["sm_layer1"]], ds).data_vars
    assert "residual_r" not in closure


def test_learned_residual_is_scored_against_what_the_formula_leaves_out(store):
    ens, ds = fake_ensemble(store, ["sm_layer1", "sm_layer2", "sm_layer3", "et_daily"])
    s = ds.sel(time=ens["time"])
    thick = 1000.0 * (ds["depth_bottom"] - ds["depth_top"])
    # the store's own P − ET − R − ΔS by hand, day 1 onwards; ε on day 0 is never used
    ds_mm = (s["sm_layers"] * thick).sum("layer").diff("time", label="upper")
    b_obs = (s["prec"] - s["et_daily"] - s["q_surf_daily"]).isel(time=slice(1, None)) - ds_mm
    eps = b_obs.reindex(time=ens["time"], fill_value=123.0).transpose("time", ...)
    closure = balance_closure(ens.assign(wb_residual=eps.expand_dims(member=[0])), ds)
    assert float(closure["residual_closure"].max()) < 1e-4
    np.testing.assert_allclose(closure["residual_r"], 1.0, atol=1e-6)
    _, hand = predicted_cells(ens, abs(b_obs).mean("time").to_dataset(name="b"))
    np.testing.assert_allclose(closure["observed"], hand["b"], rtol=1e-4)
    # ε of the opposite sign doubles the gap and anti-correlates
    closure = balance_closure(ens.assign(wb_residual=-eps.expand_dims(member=[0])), ds)
    np.testing.assert_allclose(closure["residual_closure"].isel(member=0),
                               2 * closure["observed"], rtol=1e-4)
    np.testing.assert_allclose(closure["residual_r"], -1.0, atol=1e-6)


def test_offset_outputs_score_by_hand(store):
    ens, ds = fake_ensemble(store, ["sm_layer2"], offset=0.01)
    scores = output_scores(ens, ds)
    np.testing.assert_allclose(scores["RMSE"], 0.01, rtol=1e-3)
    np.testing.assert_allclose(scores["RMSE_low"], 0.01, rtol=1e-3)
    shares = profile_inconsistency(ens, ds)
    assert float(shares["prediction"].mean()) != float(shares["observed"].mean())
    # two members 0.01 and 0.03 off: mean 0.02, spread sd(0.01, 0.03) = 0.01·√2
    far, _ = fake_ensemble(store, ["sm_layer2"], offset=0.03)
    two = xr.concat([ens, far.assign_coords(member=[1])], "member")
    overall, _ = summarize_outputs(output_scores(two, ds))
    assert overall["RMSE"].iloc[0] == pytest.approx(0.02, rel=1e-3)
    assert overall["RMSE_sd"].iloc[0] == pytest.approx(0.01 * np.sqrt(2), rel=1e-3)
    assert np.isnan(summarize_outputs(scores)[0]["RMSE_sd"].iloc[0])


# -- the comparison tables -----------------------------------------------------------------

SPECS = sorted(p for d in ("multitask", "richards") for p in (ROOT / "experiments" / d).glob(
    "*.yaml") if "variants:" in p.read_text())


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_specs_parse(spec, monkeypatch):
    monkeypatch.chdir(ROOT)
    s = load_spec(spec)
    assert s.scores in ("outputs", "richards") and s.variants
    if s.scores == "richards":
        assert {v.baseline for v in s.variants} == {None, "random_forest", "xgboost"}


def test_bad_baseline_and_scores_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.yaml"
    cfg = "experiments/richards/cnn_lstm.yaml"
    bad.write_text(yaml.safe_dump({"variants": [{"name": "a", "config": cfg,
                                                 "baseline": "svm"}]}))
    with pytest.raises(ValueError, match="baseline: expected one of random_forest, xgboost"):
        load_spec(bad)
    bad.write_text(yaml.safe_dump({"scores": "nse", "variants": [{"name": "a",
                                                                  "config": cfg}]}))
    with pytest.raises(ValueError, match="scores: expected one of monotonic, outputs"):
        load_spec(bad)


PERIODS = ["--data.train_start=2002-01-01", "--data.train_end=2002-06-30",
           "--data.val_start=2002-07-01", "--data.val_end=2002-12-31",
           "--data.test_start=2003-01-01", "--data.test_end=2003-12-31",
           "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
           "--trainer.logger=false", "--trainer.check_val_every_n_epoch=1",
           "--data.batch_size=16"]


def test_compare_tables_of_both_papers(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    spec = tmp_path / "mtl.yaml"
    spec.write_text(yaml.safe_dump({
        "root": str(tmp_path / "mtl"), "folds": 3, "members": [0], "scores": "outputs",
        "overrides": [f"--data.store={store}", *PERIODS, "--model.init_args.hidden=8"],
        "variants": [
            {"name": "ST et", "config": "experiments/multitask/mtl.yaml",
             "overrides": ["--model.init_args.tasks=[et_daily]"]},
            {"name": "MTL learned 50%", "config": "experiments/multitask/mtl_learned.yaml",
             "overrides": ["--data.train_fraction=0.5"]}],
    }))
    cli.main(["compare", "--spec", str(spec)])
    table = pd.read_csv(tmp_path / "mtl" / "comparison.csv")
    assert list(table["output"]) == ["et_daily", "sm_layer1", "sm_layer2", "sm_layer3",
                                     "et_daily"]
    assert table["R"].notna().all() and table["RMSE_low"].notna().all()
    assert table["balance_mae"].isna().iloc[0] and table["balance_mae"].notna().iloc[1:].all()
    assert table["residual_r"].between(-1, 1).iloc[1:].all()
    assert (table["residual_mae"].iloc[1:] > 0).all()
    ens = xr.open_zarr(tmp_path / "mtl" / "mtl_learned_50" / "ensemble.zarr",
                       consolidated=False)
    assert ens["wb_residual"].attrs["units"] == "mm day-1"
    printed = capsys.readouterr().out
    assert "|P−ET−R−ΔS|" in printed and "R(ε,B obs)" in printed

    spec = tmp_path / "rich.yaml"
    spec.write_text(yaml.safe_dump({
        "root": str(tmp_path / "rich"), "folds": 3, "members": [0, 1], "scores": "richards",
        "richards": {"tolerance": 2.0},
        "overrides": [f"--data.store={store}", *PERIODS, "--model.init_args.hidden=8",
                      "--data.spinup_years=0.25"],
        "variants": [
            {"name": "RF", "baseline": "random_forest",
             "config": "experiments/richards/cnn_lstm.yaml"},
            {"name": "XGBoost", "baseline": "xgboost",
             "config": "experiments/richards/cnn_lstm.yaml"},
            {"name": "PGDL", "config": "experiments/richards/pgdl_cnn_lstm.yaml"}],
    }))
    cli.main(["compare", "--spec", str(spec)])
    table = pd.read_csv(tmp_path / "rich" / "comparison.csv")
    assert list(table["variant"]) == ["RF", "RF", "XGBoost", "XGBoost", "PGDL", "PGDL"]
    assert list(table["output"]) == ["sm_layer2", "sm_layer3"] * 3
    assert table["inconsistency"].between(0, 1).all()
    assert (table["members"] == 2).all()
    assert table.loc[table["variant"] == "RF", "R"].min() > 0.5  # trees learn something
    rf = xr.open_zarr(tmp_path / "rich" / "rf" / "ensemble.zarr", consolidated=False)
    assert list(rf["member"].values) == [0, 1] and rf["sm_layer2"].attrs["units"] == "m3 m-3"
    assert (tmp_path / "rich" / "rf" / "member_1" / "model.joblib").exists()
    out = capsys.readouterr().out
    assert "incons." in out and "observed incons." in out
    # fitted members are reused
    mtime = (tmp_path / "rich" / "rf" / "member_0" / "model.joblib").stat().st_mtime
    cli.main(["compare", "--spec", str(spec)])
    assert (tmp_path / "rich" / "rf" / "member_0" / "model.joblib").stat().st_mtime == mtime
