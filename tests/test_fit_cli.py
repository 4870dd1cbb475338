"""Fits through the real CLI: every config, predict/test, resume, mixed precision."""

import csv
from pathlib import Path

import pytest
import xarray as xr

from h2mv_hybrid import cli
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.data.synth import TwinConfig, synthesize

ROOT = Path(__file__).resolve().parents[1]
# Every fit config in experiments/ (the comparison specs of h2mv compare have "variants").
#: Directories of the pure-learning heads' configs, whose periods run to 2010.
HEADS = ("phy_lstm", "multitask", "richards")
CONFIGS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml")
                 if not p.stem.startswith("demo") and "variants:" not in p.read_text())


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
    if config.stem in ("camels_temporal", "camels_lstm_temporal"):  # three disjoint periods
        periods = ["--data.train_start", "1982-01-01", "--data.train_end", "1982-12-31",
                   "--data.val_start", "1983-01-01", "--data.val_end", "1983-06-30",
                   "--data.test_start", "1983-07-01", "--data.test_end", "1984-12-31"]
    cli.main(fit_args(config, store, tmp_path, "--trainer.fast_dev_run", "1", *periods))


def test_print_config(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["fit", "--config", str(ROOT / "experiments/quickstart.yaml"), "--print_config"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    assert "state_feedback: false" in out and "h2mv_hybrid.model.module.H2MVHybrid" in out


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


def test_fit_predict_test_chain(store, tmp_path, capsys):
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
    whole, part = tmp_path / "whole", tmp_path / "part"
    cli.main(short(store, whole, "--trainer.max_epochs", "2"))
    cli.main(short(store, part, "--trainer.max_epochs", "1"))
    ckpt = next(part.rglob("last.ckpt"))
    cli.main(short(store, part, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)))
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
