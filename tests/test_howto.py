"""The worked examples of docs/adding_a_*.md, run as written, and the two halves of a constraint."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from h2mv_hybrid.constraints import Constraint, constraint_series
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.data.synth import TwinConfig, synthesize
from h2mv_hybrid.lightning_cli import run

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: quick fits on the twin below: one short epoch, the quickstart's periods shortened
QUICK = ["--data.num_workers", "0", "--data.batch_size", "8", "--trainer.max_epochs", "1",
         "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--data.train_start", "2002-01-01", "--data.train_end", "2003-12-31"]


def example(page: str, name: str) -> str:
    """The fenced code block under ``<!-- example: name -->`` in docs/``page``."""
    text = (DOCS / page).read_text()
    found = re.search(rf"<!-- example: {name} -->\n```\w*\n(.*?)```", text, re.S)
    assert found, f"{page}: no example {name!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("howto") / "twin.zarr"
    write_store(*synthesize(TwinConfig(res=8.0, years="2001-2006", seed=1)), path)
    return str(path)


def test_constraint_example(store, tmp_path):
    yaml_text = example("adding_a_constraint.md", "constraint-yaml")
    code_lines = [ln for ln in yaml_text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(code_lines) <= 15  # the page's promise: a constraint in ≤ 15 lines
    config = tmp_path / "swe_anomaly.yaml"
    config.write_text(yaml_text)
    cli = run(["fit", "--config", str(ROOT / "experiments/quickstart.yaml"), "--config",
               str(config), "--data.store", store, "--trainer.default_root_dir", str(tmp_path),
               *QUICK])
    dm, model = cli.datamodule, cli.model
    assert dm.targets == ("tws", "et", "q", "swe")  # served from the model's constraints
    assert abs(dm.stats.target_mean["swe"]) < 1e-3  # statistics of SWE anomalies
    assert [c.weight for c in model.constraints] == [1.0, 1.0, 1.0, 0.5]
    metrics = cli.trainer.callback_metrics
    assert {"val_swe_loss", "val_swe_r", "val_tws_loss"} <= set(metrics)
    assert "val_fapar_loss" not in metrics
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_double_declaration_must_agree(store, tmp_path):
    config = tmp_path / "swe_anomaly.yaml"
    config.write_text(example("adding_a_constraint.md", "constraint-yaml"))
    args = ["fit", "--config", str(ROOT / "experiments/quickstart.yaml"), "--config",
            str(config), "--data.store", store, "--trainer.default_root_dir", str(tmp_path),
            *QUICK]
    with pytest.raises(ValueError, match="data.targets: expected the targets of the model's "
                                         "constraints"):
        run([*args, "--data.targets", "[tws, et, q]"])
    cli = run([*args, "--data.targets", "[tws, et, q, swe, fapar]"])  # a superset is served
    assert cli.datamodule.targets == ("tws", "et", "q", "swe", "fapar")


def test_head_example(store, tmp_path, monkeypatch):
    (tmp_path / "toy_head.py").write_text(example("adding_a_head.md", "head-module"))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "head.yaml"
    config.write_text(example("adding_a_head.md", "head-yaml"))
    common = ["--config", str(config), "--data.store", store, *QUICK]
    cli = run(["fit", *common, "--trainer.default_root_dir", str(tmp_path / "fit")])
    metrics = cli.trainer.callback_metrics
    assert {"val_loss", "val_q_r", "val_q_rmse"} <= set(metrics)
    assert np.isfinite(float(metrics["val_loss"]))
    ckpt = next((tmp_path / "fit").rglob("*.ckpt"))
    pred = tmp_path / "pred.zarr"
    run(["predict", *common, "--ckpt_path", str(ckpt),
         "--trainer.default_root_dir", str(tmp_path / "predict"),
         "--trainer.callbacks+=h2mv_hybrid.callbacks.prediction.ZarrPredictionWriter",
         f"--trainer.callbacks.output={pred}"])
    ds = xr.open_zarr(pred, consolidated=False)
    assert ds["q_total"].attrs["units"] == "mm day-1"
    assert float(ds["q_total"].min()) >= 0 and int(ds["q_total"].notnull().sum()) > 0


def test_process_example():
    namespace: dict = {}
    exec(example("adding_a_process.md", "process-function"), namespace)  # noqa: S102
    sublimation = namespace["snow_sublimation"]
    T = lambda *x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    # 3 mm of energy × 0.5 = 1.5 mm, limited to the 1 mm of snow; no snow, no energy: 0
    out = sublimation(T(3.0, 3.0, 3.0, 0.0), T(0.5, 0.5, 0.5, 0.5), T(10.0, 1.0, 0.0, 5.0))
    torch.testing.assert_close(out, T(1.5, 1.0, 0.0, 0.0), rtol=0, atol=1e-12)
    inputs = (T(3.0, 2.0), T(0.3, 0.6), T(10.0, 0.5))  # one cell per branch, off the kink
    inputs = tuple(x.requires_grad_() for x in inputs)
    assert torch.autograd.gradcheck(sublimation, inputs)


def test_torch_and_xarray_halves_agree():
    """constraint_series (analysis) and Constraint.pair (loss, metrics): the same numbers."""
    rng = np.random.default_rng(0)
    days = pd.date_range("2001-01-01", "2001-04-30")
    months = pd.date_range("2001-01-01", periods=4, freq="MS")
    n = 5
    ens = xr.Dataset(
        {"tws": (("member", "time", "cell"), rng.normal(100, 20, (2, len(days), n))),
         "swe": (("member", "time", "cell"), rng.uniform(0, 200, (2, len(days), n)))},
        coords={"member": [0, 1], "time": days})
    tws = rng.normal(50, 20, (len(months), n))
    tws[1, 2] = tws[3, 0] = np.nan
    swe = rng.uniform(0, 200, (len(days), n))
    swe[rng.random(swe.shape) < 0.2] = np.nan
    store = xr.Dataset({"tws": (("month", "cell"), tws), "swe": (("time", "cell"), swe)},
                       coords={"month": months, "time": days})
    month_of_day = torch.as_tensor(np.asarray(days.month - 1))
    for c in (Constraint("tws", "tws", "monthly", anomaly=True),
              Constraint("swe", "swe", "daily", saturation=100.0)):
        pred_x, obs_x = constraint_series(ens, store, c)
        obs_t = torch.as_tensor(store[c.target].values.T)
        for m in (0, 1):
            pred_t = torch.as_tensor(ens[c.output].isel(member=m).values.T)
            p, o = c.pair(pred_t, obs_t, month_of_day)
            np.testing.assert_allclose(p.numpy(), pred_x.isel(member=m).values.T, rtol=1e-12)
            np.testing.assert_allclose(o.numpy(), obs_x.values.T, rtol=1e-12)
