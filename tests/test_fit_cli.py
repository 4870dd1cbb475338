"""Fits through the real CLI: every config, predict/test, resume, mixed precision."""

import csv
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from h2mv_hybrid import cli
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.data.synth import TwinConfig, synthesize

# Fits through the real CLI: left out of the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Every fit config in experiments/ (the comparison specs of h2mv compare have "variants";
# experiments/import holds the importers' mappings, tested in test_basins_layouts.py).
#: Directories of the pure-learning heads' configs, whose periods run to 2010.
HEADS = ("phy_lstm", "multitask", "richards")
CONFIGS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml")
                 if not p.stem.startswith("demo") and "variants:" not in p.read_text()
                 and p.parent.name != "import")


@pytest.fixture(scope="module")
def camels(tmp_path_factory):
    """A CAMELS-layout point store (6 synthetic basins, 1981–1984) for experiments/camels_*."""
    from helpers.camels_folder import write_camels_folder

    from h2mv_hybrid.importers.camels import import_camels

    root = tmp_path_factory.mktemp("camels")
    write_camels_folder(root / "src")
    return import_camels(str(root / "src"), str(root / "camels.zarr"))


#: periods of the experiments/camels configs on that store
CAMELS_PERIODS = ["--data.train_start", "1982-01-01", "--data.train_end", "1983-06-30",
                  "--data.test_start", "1983-07-01", "--data.test_end", "1984-12-31"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "twin.zarr"
    write_store(*synthesize(TwinConfig(res=8.0, years="2001-2006", seed=1)), path)
    return str(path)


def fit_args(config, store, root, *extra):
    return ["fit", "--config", str(config), "--data.store", store, "--data.num_workers", "0",
            "--data.batch_size", "8", "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", *extra]


@pytest.mark.parametrize("config", CONFIGS,
                         ids=lambda p: str(p.relative_to(ROOT / "experiments").with_suffix("")))
def test_every_config_fits_through_the_cli(config, store, camels, tmp_path):
    # the pure-learning heads' periods (to 2010) fall outside this 2001–2006 twin
    periods = ["--data.train_end", "2004-12-31", "--data.val_start", "2005-01-01",
               "--data.val_end", "2005-12-31", "--data.test_start", "2006-01-01",
               "--data.test_end", "2006-12-31"] if config.parent.name in HEADS else []
    if config.stem.startswith("camels"):  # catchment configs: a CAMELS store, its periods
        store, periods = camels, CAMELS_PERIODS
    if config.stem in ("camels_temporal", "camels_temporal_kge", "camels_lstm_temporal"):
        # three disjoint periods
        periods = ["--data.train_start", "1982-01-01", "--data.train_end", "1982-12-31",
                   "--data.val_start", "1983-01-01", "--data.val_end", "1983-06-30",
                   "--data.test_start", "1983-07-01", "--data.test_end", "1984-12-31"]
    cli.main(fit_args(config, store, tmp_path, "--trainer.fast_dev_run", "1", *periods))


def test_print_config(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["fit", "--config", str(ROOT / "experiments/quickstart.yaml"), "--print_config"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    assert "state_feedback: true" in out and "h2mv_hybrid.model.module.H2MVHybrid" in out


def loggers(root):
    """CSV and TensorBoard loggers writing under ``root`` (as JSON for the command line)."""
    import json

    return json.dumps([
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": str(root), "name": "logs"}},
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
         "init_args": {"save_dir": str(root), "name": "tensorboard"}},
    ])


def metrics(root):
    rows = list(csv.DictReader(open(next(Path(root).rglob("metrics.csv")))))
    return {int(r["epoch"]): float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")}


def short(store, root, *extra):
    return fit_args(ROOT / "experiments/quickstart.yaml", store, root,
                    "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                    "--trainer.logger", loggers(root),
                    "--data.train_start", "2002-01-01", "--data.train_end", "2003-12-31", *extra)


def test_fit_predict_test_chain(store, tmp_path, capsys, monkeypatch):
    # the config's own prediction writer names a relative path: keep it out of the checkout
    monkeypatch.chdir(tmp_path)
    cli.main(short(store, tmp_path, "--trainer.max_epochs", "1"))
    out = capsys.readouterr().out
    assert "validation scores" in out and "checkpoints:" in out and "store:" in out
    assert list(tmp_path.rglob("events.out.tfevents*"))  # TensorBoard logging
    ckpt = next(tmp_path.rglob("last.ckpt"))
    pred = tmp_path / "pred.zarr"
    cli.main(["predict", "--config", str(ROOT / "experiments/quickstart.yaml"), "--data.store",
              store, "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false",
              "--trainer.logger", "false", "--data.train_start", "2002-01-01",
              "--data.train_end", "2003-12-31",
              "--trainer.callbacks+=h2mv_hybrid.callbacks.prediction.ZarrPredictionWriter",
              f"--trainer.callbacks.output={pred}"])
    ds = xr.open_zarr(pred, consolidated=False)
    assert ds["ET"].dims == ("time", "lat", "lon") and ds["ET"].attrs["units"] == "mm day-1"
    assert ds.sizes["time"] == 730 and "alpha_fapar" in ds and "beta_snow" in ds
    assert int(ds["sm_max"].notnull().sum()) == ds.attrs["predicted_cells"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    cli.main(["test", "--config", str(ROOT / "experiments/quickstart.yaml"), "--data.store", store,
              "--ckpt_path", str(ckpt), "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false", "--data.train_start", "2002-01-01",
              "--data.train_end", "2003-12-31"])


def test_resume_reproduces_an_uninterrupted_run(store, tmp_path):
    # with a learning-rate schedule: the resumed epoch 1 must train at epoch 1's rate
    whole, part = tmp_path / "whole", tmp_path / "part"
    lr = ["--model.init_args.lr", "{0: 0.003, 1: 0.0003}"]
    cli.main(short(store, whole, "--trainer.max_epochs", "2", *lr))
    cli.main(short(store, part, "--trainer.max_epochs", "1", *lr))
    ckpt = next(part.rglob("last.ckpt"))
    cli.main(short(store, part, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt), *lr))
    a, b = metrics(whole), {}
    for f in part.rglob("metrics.csv"):
        rows = list(csv.DictReader(open(f)))
        b.update({int(r["epoch"]): float(r["train_loss_epoch"]) for r in rows
                  if r.get("train_loss_epoch")})
    assert set(a) == {0, 1} and set(b) == {0, 1}
    assert a[0] == pytest.approx(b[0], rel=1e-6) and a[1] == pytest.approx(b[1], rel=1e-6)


def test_bf16_mixed_precision_fit(store, tmp_path):
    cli.main(fit_args(ROOT / "experiments/quickstart.yaml", store, tmp_path,
                      "--trainer.fast_dev_run", "1", "--trainer.precision", "bf16-mixed",
                      "--model.init_args.network.state_feedback", "true"))


def test_two_process_cpu_ddp_trains_identical_weights(store, tmp_path):
    """Lightning's own DDP (gloo on CPU), unchanged: both ranks end with the same weights."""
    import os
    import subprocess
    import sys

    script = Path(sys.executable).with_name("h2mv")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "helpers"))
    cmd = [str(script), *fit_args(ROOT / "experiments/quickstart.yaml", store, tmp_path,
                                  "--trainer.strategy", "ddp", "--trainer.devices", "2",
                                  "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
                                  "--trainer.limit_train_batches", "3",
                                  "--trainer.limit_val_batches", "1",
                                  "--trainer.logger", loggers(tmp_path),
                                  "--data.train_start", "2002-01-01",
                                  "--data.train_end", "2002-12-31",
                                  "--trainer.callbacks+=ddp_checksum.WeightChecksum",
                                  f"--trainer.callbacks.out_dir={tmp_path}")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = sorted((tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert [ln[:2] for ln in lines] == [["0", "2"], ["1", "2"]]
    assert int(lines[0][2]) == 3  # it trained
    assert lines[0][2:] == lines[1][2:]  # identical weights on both ranks


def test_ckpt_path_best_and_last_follow_the_latest_fit_and_are_checked_first(store, tmp_path):
    """--ckpt_path last | best resolve to the newest fit's checkpoints under the root;
    a missing or absent checkpoint is refused before any data is read or log dir made."""
    import time

    from h2mv_hybrid.lightning_cli import find_checkpoint

    test = ["test", "--config", str(ROOT / "experiments/quickstart.yaml"), "--data.store",
            store, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--data.train_start", "2002-01-01",
            "--data.train_end", "2003-12-31"]
    t0 = time.perf_counter()
    for extra, message in (([], "--ckpt_path: h2mv test needs a trained model"),
                           (["--ckpt_path", "last"], "expected a last.ckpt under"),
                           (["--ckpt_path", str(tmp_path / "no.ckpt")], "found nothing at")):
        with pytest.raises(SystemExit, match=message):
            cli.main([*test, *extra])
    assert time.perf_counter() - t0 < 30 and not list(tmp_path.iterdir())
    cli.main(short(store, tmp_path, "--trainer.max_epochs", "1"))
    first = find_checkpoint("last", tmp_path)
    cli.main(short(store, tmp_path, "--trainer.max_epochs", "1"))
    second = find_checkpoint("last", tmp_path)
    assert second != first and second.parent != first.parent
    best = find_checkpoint("best", tmp_path)
    assert best.parent == second.parent and best.name.startswith("best")
    cli.main([*test, "--ckpt_path", "best"])


def test_ckpt_path_with_other_model_options_or_class_is_refused_naming_them(store, tmp_path):
    """Lightning would silently replace differing model options (or the class) by the
    checkpoint's: each one is named, with both values, before any data is read."""
    cli.main(short(store, tmp_path, "--trainer.max_epochs", "1"))
    test = ["test", "--config", str(ROOT / "experiments/quickstart.yaml"), "--data.store",
            store, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
            "--ckpt_path", "last"]
    with pytest.raises(SystemExit, match=r"network.lstm_hidden: checkpoint 64, given 16"):
        cli.main([*test, "--model.init_args.network.lstm_hidden", "16"])
    with pytest.raises(SystemExit, match=r"code_size: checkpoint 12, given 3; lr: checkpoint 0.003, given 0.5\."):
        cli.main([*test, "--model.init_args.lr", "0.5", "--model.init_args.network.code_size",
                  "3"])
    # how the model is run may differ from the checkpoint: a longer spin-up for the test,
    # other time chunks (a checkpoint from before time_chunk: auto has null)
    cli.main([*test, "--model.init_args.spinup_cycles", "2", "--trainer.limit_test_batches",
              "1", "--data.train_start", "2002-01-01", "--data.train_end", "2003-12-31",
              "--model.init_args.network.time_chunk", "null"])
    other = ["test", "--config", str(ROOT / "experiments/phy_lstm/lstm.yaml"), "--data.store",
             store, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
             "--ckpt_path", "last"]
    with pytest.raises(SystemExit, match=r"class_path: checkpoint '[\w.]*H2MVHybrid', given"):
        cli.main(other)


def test_test_and_predict_add_no_log_folders_beside_the_fit(store, tmp_path):
    """Only a fit writes logs/version_N (a test or predict would add an empty one each
    time); a logger named on the command line is still honoured."""
    import yaml

    cfg = yaml.safe_load((ROOT / "experiments/quickstart.yaml").read_text())
    for logger in cfg["trainer"]["logger"]:
        logger["init_args"]["save_dir"] = str(tmp_path)
    cfg["trainer"]["callbacks"] = [c for c in cfg["trainer"]["callbacks"]
                                   if "Prediction" not in c["class_path"]]
    config = tmp_path / "quick.yaml"  # not config.yaml: the fit saves its own there
    config.write_text(yaml.safe_dump(cfg))
    common = ["--data.store", store, "--data.num_workers", "0", "--data.batch_size", "8",
              "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar",
              "false", "--data.train_start", "2002-01-01", "--data.train_end", "2003-12-31"]
    cli.main(["fit", "--config", str(config), *common, "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"])
    versions = lambda: sorted(p.name for p in (tmp_path / "logs").iterdir())  # noqa: E731
    assert versions() == ["version_0"]
    cli.main(["test", "--config", str(config), *common, "--ckpt_path", "last",
              "--trainer.limit_test_batches", "1"])
    cli.main(["validate", "--config", str(config), *common, "--ckpt_path", "best",
              "--trainer.limit_val_batches", "1"])
    assert versions() == ["version_0"]
    cli.main(["test", "--config", str(config), *common, "--ckpt_path", "last",
              "--trainer.limit_test_batches", "1", "--trainer.logger", loggers(tmp_path)])
    assert versions() == ["version_0", "version_1"]


def test_sensitivity_command_prints_and_writes_elasticities(store, tmp_path, capsys):
    """h2mv sensitivity on a fitted checkpoint: the table, and a store of per-cell and
    per-season sensitivities with units."""
    cli.main(short(store, tmp_path, "--trainer.max_epochs", "1"))
    capsys.readouterr()
    out = tmp_path / "sens.zarr"
    cli.main(["sensitivity", "--checkpoint", "last", "--root", str(tmp_path), "--store", store,
              "--cells", "test", "--max_cells", "3", "--batch_size", "2", "--out", str(out)])
    text = capsys.readouterr().out
    assert "forcing sensitivities" in text and "to prec (1)" in text and "3 cells" in text
    result = xr.open_zarr(out, consolidated=False)
    assert list(result["season"].values) == ["all", "DJF", "MAM", "JJA", "SON"]
    q_prec = result["q_prec"].sel(season="all").values
    assert np.isfinite(q_prec).sum() == 3 and result["tws_tair"].attrs["units"] == "K-1"
    with pytest.raises(SystemExit, match="checkpoint: expected a checkpoint file"):
        cli.main(["sensitivity", "--checkpoint", str(tmp_path / "none.ckpt")])


def test_recovery_prints_a_table_with_goals(store, tmp_path, capsys):
    """h2mv recovery: quantity, learned, true, metric and goal, and what each one means."""
    from h2mv_hybrid.analysis.recovery import recovery_table

    cli.main(short(store, tmp_path, "--trainer.max_epochs", "1"))
    capsys.readouterr()
    cli.main(["recovery", "--checkpoint", "last", "--root", str(tmp_path), "--store", store,
              "--n_folds", "10"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split() == ["quantity", "learned", "true", "metric", "goal"]
    assert "SM_max, map" in out and "r ≥ 0.7" in out and "β_snow" in out and "β_baseflow" in out
    assert "SM_max: the soil's water capacity" in out
    table = recovery_table({"test_cells": 5, "sm_max_r": 0.8, "sm_max_bias_mm": -30.0,
                            "sm_max_mean_mm": 170.0, "true_sm_max_mean_mm": 200.0,
                            "beta_snow": 0.9, "true_beta_snow": 0.95}, "x.ckpt", 0)
    assert "r = 0.80" in table and "bias -30 mm (-15%)" in table and "error -5%" in table
    assert [line.endswith(" met") for line in table.splitlines()[2:5]] == [True, True, False]
    assert "not met" not in table


def test_unknown_options_get_one_line_and_a_suggestion_within_seconds(tmp_path):
    """Misspelled keys, on the command line or in a config file, are refused before parsing."""
    import time

    config = tmp_path / "typo.yaml"
    config.write_text((ROOT / "experiments/quickstart.yaml").read_text().replace(
        "max_epochs:", "max_epoch_count:").replace("lstm_hidden:", "lstm_hiden:"))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as err:
        cli.main(["fit", "--config", str(config), "--data.stroe", "x.zarr",
                  "--model.init_args.lrr", "0.1"])
    message = str(err.value)
    assert time.perf_counter() - t0 < 10
    assert f"unknown option trainer.max_epoch_count (in {config}); did you mean " \
           "trainer.max_epochs" in message
    assert "unknown option model.network.lstm_hiden" in message and \
           "did you mean model.network.lstm_hidden" in message
    assert "unknown option data.stroe (on the command line); did you mean data.store?" in message
    assert "unknown option model.lrr (on the command line); did you mean model.lr?" in message
    assert "Union" not in message and "usage:" not in message


def test_a_fit_and_a_test_print_none_of_lightnings_known_noise(store, tmp_path, capsys, caplog,
                                                               monkeypatch):
    """No LightningCLI-args, pytree-deprecation, litlogger-tip, dirpath-change or
    batch-indices notices, and no dump of the statistics that jsonargparse could not
    serialize on resuming."""
    import logging
    import warnings

    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli.main(short(store, tmp_path, "--trainer.max_epochs", "1"))
        # a resumed fit re-parses the checkpoint's hyperparameters (the statistics too)
        cli.main(short(store, tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last"))
        fits = len(seen)
        cli.main(["test", "--config", str(ROOT / "experiments/quickstart.yaml"), "--data.store",
                  store, "--ckpt_path", "last", "--trainer.default_root_dir", str(tmp_path),
                  "--trainer.enable_progress_bar", "false", "--data.train_start", "2002-01-01",
                  "--data.train_end", "2003-12-31"])
        monkeypatch.chdir(tmp_path)  # the config's prediction writer names a relative path
        cli.main(["predict", "--config", str(ROOT / "experiments/quickstart.yaml"),
                  "--data.store", store, "--ckpt_path", "last", "--trainer.default_root_dir",
                  str(tmp_path), "--trainer.enable_progress_bar", "false",
                  "--data.train_start", "2002-01-01", "--data.train_end", "2003-12-31"])
    text = " ".join(str(w.message) for w in seen) + capsys.readouterr().err + caplog.text
    for noise in ("args parameter is intended", "LeafSpec", "litlogger",
                  "Unable to serialize instance Normalization", "Couldn't infer the batch"):
        assert noise not in text, noise
    # a resumed fit may say its checkpoint folder changed (that matters there); a test, not
    assert not any("dirpath has changed" in str(w.message) for w in seen[fits:])


def test_ctrl_c_in_a_fit_reaches_the_caller_and_leaves_ctrl_c_working(store, tmp_path,
                                                                        monkeypatch):
    """Lightning turns Ctrl-C into exit(1) with SIGINT ignored; the CLI hands it back."""
    import signal

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "helpers"))
    monkeypatch.setenv("H2MV_TEST_INTERRUPT_EPOCH", "0")
    # Python's own Ctrl-C handler, whatever an earlier test left: the fit must put it back
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            cli.main(short(store, tmp_path, "--trainer.max_epochs", "1",
                           "--trainer.callbacks+=interrupt.InterruptAtEpochStart"))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)


def test_all_non_finite_validation_logs_inf_instead_of_crashing(store, tmp_path, monkeypatch):
    """Every validation batch non-finite: val_loss is inf (no crash of ModelCheckpoint /
    EarlyStopping on a missing key), never a best score; early stopping ends the fit."""
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "helpers"))
    cli.main(short(store, tmp_path, "--trainer.max_epochs", "3", "--trainer.num_sanity_val_steps",
                   "0", "--trainer.callbacks+=interrupt.PoisonValidation"))
    rows = list(csv.DictReader(open(next(Path(tmp_path).rglob("metrics.csv")))))
    val = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    assert val and all(v == float("inf") for v in val)
    assert len(val) == 1  # EarlyStopping (check_finite) stopped after the first epoch


@pytest.mark.parametrize("option, value, message", [
    ("--model.init_args.lr", "-0.1", "model.init_args.lr: expected a finite value > 0, found -0.1"),
    ("--model.init_args.lr", "{5: 0.001}",
     "model.init_args.lr: expected a schedule that starts at epoch 0, found epochs \\[5\\]"),
    ("--model.init_args.lr", "{0: 0.001, 3: -1}",
     "model.init_args.lr: expected a finite value > 0, found -1.0 at epoch 3"),
    ("--model.init_args.network.state_scale", "0", "state_scale: expected > 0 mm"),
    ("--model.init_args.network.time_chunk", "0", "time_chunk: expected ≥ 1 days"),
])
def test_bad_numeric_options_are_named_before_any_data_is_read(option, value, message, tmp_path):
    """Refused by name before the store is opened (it does not even exist here)."""
    with pytest.raises(SystemExit, match=message):
        cli.main(["fit", "--config", str(ROOT / "experiments/quickstart.yaml"), "--data.store",
                  str(tmp_path / "absent.zarr"), "--data.create_twin", "false",
                  "--trainer.default_root_dir", str(tmp_path), option, value])
    assert not list(tmp_path.iterdir())


def test_a_head_refuses_a_bad_schedule_before_any_data_is_read(tmp_path):
    with pytest.raises(SystemExit, match="model.init_args.lr: expected a schedule that starts"):
        cli.main(["fit", "--config", str(ROOT / "experiments/camels_lstm_temporal.yaml"),
                  "--data.store", str(tmp_path / "absent.zarr"), "--trainer.default_root_dir",
                  str(tmp_path), "--model.init_args.lr", "{2: 0.001}"])
    assert not list(tmp_path.iterdir())


def test_a_learning_rate_schedule_sets_each_epochs_rate(camels, tmp_path, monkeypatch):
    """The LSTM head's config with a schedule: Lightning's LearningRateMonitor logs each
    epoch's rate; the schedule's rates, not the first one throughout."""
    monkeypatch.chdir(tmp_path)  # the config's logger writes to a relative path
    cli.main(fit_args(ROOT / "experiments/camels_lstm_temporal.yaml", camels, tmp_path,
                      "--data.train_start", "1982-01-01", "--data.train_end", "1982-12-31",
                      "--data.val_start", "1983-01-01", "--data.val_end", "1983-06-30",
                      "--data.test_start", "1983-07-01", "--data.test_end", "1984-12-31",
                      "--data.windows.batches", "2", "--data.windows.days", "60",
                      "--data.windows.warmup_days", "30", "--model.init_args.warmup_days", "30",
                      "--model.init_args.train_days", "60", "--model.init_args.hidden", "8",
                      "--model.init_args.lr", "{0: 0.01, 1: 0.002, 2: 0.0004}",
                      "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "1"))
    (log,) = tmp_path.rglob("metrics.csv")
    # logged at the start of each epoch, at its first step (2 steps per epoch)
    rates = [(int(row["step"]), float(row["lr-Adam"])) for row in csv.DictReader(open(log))
             if row.get("lr-Adam")]
    assert rates == [(0, 0.01), (2, 0.002), (4, 0.0004)]


def test_runtime_options_are_set_in_nested_groups_of_namespaces_and_dicts():
    from jsonargparse import Namespace

    from h2mv_hybrid.lightning_cli import RUNTIME_OPTIONS, option_conflicts, set_option

    given = {"lr": 0.003, "spinup_cycles": 5, "network": {"time_chunk": "auto", "code_size": 8}}
    found = {"lr": 0.003, "spinup_cycles": 1, "network": {"time_chunk": None, "code_size": 8}}
    conflicts = option_conflicts(given, found)
    assert conflicts == [("spinup_cycles", 5, 1), ("network.time_chunk", "auto", None)]
    assert all(k in RUNTIME_OPTIONS for k, _, _ in conflicts)
    for args in (Namespace(spinup_cycles=1, network=Namespace(time_chunk=None)),
                 Namespace(spinup_cycles=1, network={"time_chunk": None})):
        for key, value, _ in conflicts:
            set_option(args, key, value)
        network = args.network
        chunk = network["time_chunk"] if isinstance(network, dict) else network.time_chunk
        assert args.spinup_cycles == 5 and chunk == "auto"

