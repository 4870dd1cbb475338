"""Random training windows: the sampler, the batches, and warm-ups from cached states."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from h2mv_hybrid import cli
from h2mv_hybrid.data.batches import (
    RandomWindowSampler,
    TrainWindows,
    make_window,
    window_at,
    window_starts,
)
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.store import open_store
from h2mv_hybrid.importers.camels import import_camels
from h2mv_hybrid.model.module import H2MVHybrid
from h2mv_hybrid.model.networks import HybridSettings

ROOT = Path(__file__).resolve().parents[1]
PERIODS = dict(train_start="1982-01-01", train_end="1983-06-30", val_start="1983-07-01",
               val_end="1983-12-31", test_start="1984-01-01", test_end="1984-12-31")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from helpers.camels_folder import write_camels_folder

    root = tmp_path_factory.mktemp("windows")
    write_camels_folder(root / "src")
    return import_camels(str(root / "src"), str(root / "six.zarr"))


def datamodule(store, windows=None, **kw):
    args = dict(targets=["q"], split="temporal", spinup_years=1.0, batch_size=4,
                check_values=False, windows=windows, **PERIODS)
    args.update(kw)
    dm = H2MVDataModule(store, **args)
    dm.setup("fit")
    return dm


def test_window_positions_slots_and_whole_months():
    time = pd.date_range("1980-01-01", "1985-12-31")
    months = pd.date_range("1980-01-01", "1985-12-01", freq="MS")
    period = make_window(time, months, "1982-01-01", "1983-12-31", 1.0, "train")
    w = TrainWindows(days=100, warmup_days=50, batches=3, state_every_days=30)
    # slot: the last state day ≥ 50 days before the start, from the spin-up's first day
    start = period.start_day + 40
    slot, first = w.slot_day(period, start)
    assert first == period.first_day + 30 * slot and 50 <= start - first < 80
    assert w.slot_day(period, period.first_day + 10) == (0, period.first_day)
    assert w.n_slots(period) == (period.end_day - 1 - period.first_day) // 30 + 1
    daily = window_starts(period, time, 100, monthly=False)
    assert daily[0] == period.start_day and daily[-1] == period.end_day - 100
    monthly = window_starts(period, time, 100, monthly=True)
    assert (time[monthly].day == 1).all() and monthly[-1] <= period.end_day - 100
    win, _ = window_at(period, w, time, months, int(monthly[3]), monthly=True)
    assert time[win.start_day].day == 1 and time[win.end_day].day == 1  # whole months
    assert win.end_day - win.start_day >= 100
    assert win.end_month - win.start_month == int(win.month_of_day.max()) + 1
    assert months[win.start_month] == time[win.start_day]
    with pytest.raises(ValueError, match="windows.days: expected ≥ 1, found 0"):
        TrainWindows(days=0)


def test_sampler_draws_distinct_cells_and_repeats_per_seed_and_epoch():
    s = RandomWindowSampler(n_cells=10, batch_size=4, batches=7, starts=np.arange(100, 300),
                            seed=5)
    s.set_epoch(2)
    a = list(s)
    s.set_epoch(2)
    b = list(s)
    assert len(a) == len(s) == 7
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b, strict=True))
    assert all(len(set(x[0])) == 4 and 100 <= x[1] < 300 for x in a)
    s.set_epoch(3)
    assert [x[1] for x in s] != [x[1] for x in a]


def test_window_batches_hold_the_store_days_the_warm_up_and_per_basin_values(store):
    w = TrainWindows(days=60, warmup_days=40, batches=5, state_every_days=30)
    dm = datamodule(store, windows=w)
    ds = open_store(store, dask=False)
    time = pd.DatetimeIndex(ds.indexes["time"])
    batches = list(dm.train_dataloader())
    assert len(batches) == 5
    period = dm.window("train")
    for b in batches:
        spin = int(b["spinup_days"])
        slot = int(b["state_slot"])
        first = period.first_day + 30 * slot
        start = first + spin
        assert 40 <= spin < 70 and b["q"].shape[1] == 60
        assert b["forcing"].shape[1] == spin + 60
        cells = b["cell_index"].numpy()
        np.testing.assert_array_equal(
            b["q"].numpy(), ds["q"].values[start:start + 60, cells].T.astype(np.float32))
        np.testing.assert_array_equal(
            b["forcing"][..., 1].numpy(),
            ds["prec"].values[first:start + 60, cells].T.astype(np.float32))
        assert period.start_day <= start <= period.end_day - 60
    # NSE*'s scale: each basin's std of q over the training period
    train_q = ds["q"].values[period.start_day:period.end_day]
    np.testing.assert_allclose(dm.basin_std["q_basin_std"], np.nanstd(train_q, axis=0),
                               rtol=1e-5)
    np.testing.assert_allclose(batches[0]["q_basin_std"].numpy(),
                               np.nanstd(train_q, axis=0)[batches[0]["cell_index"].numpy()],
                               rtol=1e-5)
    # validation still runs over the whole period
    val = next(iter(dm.val_dataloader()))
    assert "state_slot" not in val and val["q"].shape[1] == len(
        time[(time >= PERIODS["val_start"]) & (time <= PERIODS["val_end"])])


@pytest.mark.parametrize(("feedback", "bands"), [(False, 1), (True, 1), (False, 3)])
def test_a_window_warm_up_reaches_the_continuous_run_state_at_its_start(store, feedback,
                                                                         bands):
    w = TrainWindows(days=30, warmup_days=45, batches=4, state_every_days=20)
    dm = datamodule(store, windows=w, batch_size=6)
    torch.manual_seed(0)
    model = H2MVHybrid(dm.stats, constraints=[{"target": "q", "output": "q_routed",
                                                "aggregation": "daily", "loss": "nse_star"}],
                       network=HybridSettings(static_hidden=8, code_size=4, lstm_hidden=8,
                                              state_feedback=feedback, routing_days=10,
                                              elevation_bands=bands))
    model.cache_window_states(dm.state_dataloader(), w.state_every_days, refresh=0)
    whole = next(iter(dm.state_dataloader()))  # every training cell, from the spin-up start
    period = dm.window("train")
    for batch in dm.train_dataloader():
        carry, hist = model._spinup(batch, "train")
        start = period.first_day + 20 * int(batch["state_slot"]) + int(batch["spinup_days"])
        rows = [int(np.flatnonzero(whole["cell_index"].numpy() == c)[0])
                for c in batch["cell_index"]]
        ref_carry, ref_hist = model.model.spinup_state(
            whole["forcing"][rows, :start - period.first_day], whole["static"][rows])
        for name, a, b in zip(carry._fields, carry, ref_carry, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
        torch.testing.assert_close(hist, ref_hist, rtol=1e-4, atol=1e-4)
        loss = model.shared_step(batch, 0, "train")
        loss.backward()
        assert torch.isfinite(loss)
    # the cache survives a checkpoint
    saved = {}
    model.on_save_checkpoint(saved)
    again = H2MVHybrid(dm.stats, constraints=model.hparams.constraints,
                       network=model.hparams.network)
    again.on_load_checkpoint(saved)
    assert torch.equal(again._windows.values, model._windows.values)
    assert again._windows_refresh == 0


def test_fits_on_windows_through_the_cli_hybrid_and_lstm(store, tmp_path, capsys):
    periods = [f"--data.{k}={v}" for k, v in PERIODS.items()]
    common = ["--data.store", store, "--data.split", "temporal", *periods,
              "--data.windows", '{"days": 60, "warmup_days": 30, "batches": 3}',
              "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    cli.main(["fit", "--config", str(ROOT / "experiments/camels_temporal.yaml"), *common,
              "--trainer.default_root_dir", str(tmp_path / "h"),
              "--trainer.logger.init_args.save_dir", str(tmp_path / "h")])
    metrics = pd.read_csv(next((tmp_path / "h").rglob("metrics.csv")))
    assert metrics["step"].max() + 1 == 6  # 3 windows per epoch
    assert {"val_q_nse", "val_q_baseflow_index_loss"} <= set(metrics.columns)
    out = capsys.readouterr().out
    assert "daily q per basin, val period" in out
    cli.main(["fit", "--config", str(ROOT / "experiments/camels_lstm_temporal.yaml"), *common,
              "--model.init_args.warmup_days", "30",
              "--trainer.check_val_every_n_epoch", "1",
              "--trainer.default_root_dir", str(tmp_path / "l"),
              "--trainer.logger.init_args.save_dir", str(tmp_path / "l")])
    metrics = pd.read_csv(next((tmp_path / "l").rglob("metrics.csv")))
    assert {"val_q_nse", "val_nse_star_q"} <= set(metrics.columns)


def test_the_kge_recipe_fits_with_its_export_and_both_signatures(store, tmp_path):
    """experiments/camels_temporal_kge.yaml: the groundwater export is on, and the
    runoff ratio is constrained beside the baseflow index."""
    periods = [f"--data.{k}={v}" for k, v in PERIODS.items()]
    cli.main(["fit", "--config", str(ROOT / "experiments/camels_temporal_kge.yaml"),
              "--data.store", store, *periods,
              "--data.windows", '{"days": 60, "warmup_days": 30, "batches": 2}',
              "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger.init_args.save_dir", str(tmp_path)])
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    assert {"val_q_baseflow_index_loss", "val_q_runoff_ratio_loss"} <= set(metrics.columns)
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    assert ckpt["hyper_parameters"]["network"]["basin_gw_export"]
    assert any(k.startswith("model.export_head") for k in ckpt["state_dict"])
