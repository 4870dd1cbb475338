"""Temporal splits: calibrate, validate and test on the same basins; single-basin fits."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from h2mv_hybrid import cli
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.folds import EVERY_STAGE
from h2mv_hybrid.data.schema import StoreError
from h2mv_hybrid.data.store import open_store
from h2mv_hybrid.importers.camels import import_camels

ROOT = Path(__file__).resolve().parents[1]
#: three disjoint periods of the test folder (1981–1984), spin-up 1981
PERIODS = dict(train_start="1982-01-01", train_end="1982-12-31", val_start="1983-01-01",
               val_end="1983-06-30", test_start="1983-07-01", test_end="1984-12-31")


@pytest.fixture(scope="module")
def basins(tmp_path_factory):
    from helpers.camels_folder import write_camels_folder

    root = tmp_path_factory.mktemp("temporal")
    ids = write_camels_folder(root / "src")
    store = import_camels(str(root / "src"), str(root / "six.zarr"))
    one = import_camels(str(root / "src"), str(root / "one.zarr"), basins=ids[:1])
    return store, one


def datamodule(store, **kw):
    args = dict(targets=["q"], split="temporal", spinup_years=1.0, batch_size=4,
                check_values=False, **PERIODS)
    args.update(kw)
    return H2MVDataModule(store, **args)


def test_temporal_split_serves_every_basin_in_every_stage_and_its_own_days(basins):
    store, _ = basins
    dm = datamodule(store)
    dm.setup("fit")
    mask = open_store(store)["mask"].values
    for stage in ("train", "val", "test"):
        assert np.array_equal(dm.cells(stage), mask)
    assert set(np.unique(dm.folds.values)) == {EVERY_STAGE}
    time = pd.DatetimeIndex(open_store(store).indexes["time"])
    ds = open_store(store, dask=False)
    for stage, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        start, end = PERIODS[f"{stage}_start"], PERIODS[f"{stage}_end"]
        period = time[(time >= start) & (time <= end)]
        cells = []
        for batch in loader:
            spin = int(batch["spinup_days"])
            assert spin == 365
            assert batch["forcing"].shape[1] == spin + len(period)
            assert batch["q"].shape[1] == len(period)
            cells += batch["cell_index"].tolist()
            # by hand: the served runoff is the store's over exactly these days
            q = ds["q"].sel(time=slice(start, end)).values[:, batch["cell_index"].numpy()].T
            np.testing.assert_array_equal(batch["q"].numpy(), q.astype(np.float32))
            assert batch["month_of_day"][0] == 0 and int(batch["month_of_day"][-1]) == (
                period[-1].year - period[0].year) * 12 + period[-1].month - period[0].month
        assert sorted(cells) == list(range(int(mask.sum())))


def test_periods_of_a_temporal_split_are_checked(basins):
    store, _ = basins
    with pytest.raises(StoreError, match=r"val period: expected no overlap with the train "
                                         r"period in split 'temporal' \(train: 1982-01-01"):
        datamodule(store, val_start="1982-07-01").setup("fit")
    with pytest.raises(StoreError, match="test period: expected no overlap with the val"):
        datamodule(store, test_start="1983-04-01").setup("fit")
    with pytest.raises(StoreError, match="val_start, val_end: expected the val period of "
                                         "split 'temporal'"):
        datamodule(store, val_start=None, val_end=None).setup("fit")
    with pytest.raises(StoreError, match="test period: expected dates within the store"):
        datamodule(store, test_end="1990-12-31").setup("fit")
    with pytest.raises(ValueError, match="split: expected spatial, temporal or both"):
        datamodule(store, split="time")
    # spatial folds and periods together: both checks
    with pytest.raises(StoreError, match="val period: expected no overlap"):
        datamodule(store, split="both", n_folds=2, block_deg=4.0,
                   val_start="1982-06-01").setup("fit")
    both = datamodule(store, split="both", n_folds=2, block_deg=4.0)
    both.setup("fit")
    assert not (both.cells("train") & both.cells("val")).any()


def test_a_single_basin_fits_in_temporal_mode(basins, tmp_path):
    _, one = basins
    dm = datamodule(one, batch_size=1)
    dm.setup("fit")
    assert int(dm.cells("train").sum()) == int(dm.cells("val").sum()) == 1
    assert np.isfinite(dm.stats.target_std["q"]) and dm.stats.target_std["q"] > 0
    periods = [f"--data.{k}={v}" for k, v in PERIODS.items()]
    cli.main(["fit", "--config", str(ROOT / "experiments/camels_hybrid.yaml"),
              "--data.store", one, "--data.split", "temporal", "--data.batch_size", "1",
              *periods, "--trainer.max_epochs", "2", "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path)])
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu",
                      weights_only=True)
    assert ckpt["datamodule_hyper_parameters"]["split"] == "temporal"
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if v.is_floating_point())


def test_basin_skill_by_hand_and_against_the_xarray_scores():
    import xarray as xr

    from h2mv_hybrid.analysis.metrics import kge, kge_prime, nse
    from h2mv_hybrid.model.metrics import BasinSkill

    obs = torch.tensor([[1.0, 2.0, 3.0, float("nan"), 4.0], [2.0, 2.0, 1.0, 5.0, 0.5]])
    pred = torch.tensor([[1.5, 2.0, 2.5, 9.0, 5.0], [1.0, 3.0, 1.0, 4.0, 1.0]])
    m = BasinSkill()
    m.update(pred[:, :3], obs[:, :3], torch.tensor([7, 3]))  # one cell in two batches
    m.update(pred[:, 3:], obs[:, 3:], torch.tensor([7, 3]))
    out = m.compute()
    assert out["cell"].tolist() == [3, 7]
    # cell 7 by hand over its 4 observed days: obs 1, 2, 3, 4; pred 1.5, 2, 2.5, 5
    p, o = np.array([1.5, 2.0, 2.5, 5.0]), np.array([1.0, 2.0, 3.0, 4.0])
    nse7 = 1 - ((p - o) ** 2).sum() / ((o - o.mean()) ** 2).sum()
    r = np.corrcoef(p, o)[0, 1]
    kge7 = 1 - np.sqrt((r - 1) ** 2 + (p.std() / o.std() - 1) ** 2 + (p.mean() / o.mean() - 1) ** 2)
    cv = (p.std() / p.mean()) / (o.std() / o.mean())
    kgep7 = 1 - np.sqrt((r - 1) ** 2 + (cv - 1) ** 2 + (p.mean() / o.mean() - 1) ** 2)
    assert [float(out[k][1]) for k in ("nse", "kge", "kge_prime")] == pytest.approx(
        [nse7, kge7, kgep7], rel=1e-12)
    da = lambda x: xr.DataArray(x.numpy().astype(np.float64), dims=("cell", "time"))  # noqa: E731
    for name, f in (("nse", nse), ("kge", kge), ("kge_prime", kge_prime)):
        ref = f(da(pred), da(obs)).values  # cells in input order: 7, 3
        assert out[name].tolist() == pytest.approx([ref[1], ref[0]], rel=1e-10)


def test_fit_and_test_print_daily_skill_per_basin(basins, tmp_path, capsys):
    store, _ = basins
    common = ["--config", str(ROOT / "experiments/camels_hybrid.yaml"), "--data.store", store,
              "--data.split", "temporal", *[f"--data.{k}={v}" for k, v in PERIODS.items()],
              "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path)]
    cli.main(["fit", *common, "--trainer.max_epochs", "1"])
    out = capsys.readouterr().out
    assert "daily q per basin, val period 1983-01-01 … 1983-06-30" in out
    assert "day-of-year climatology of 1982-01-01 … 1982-12-31" in out
    ids = open_store(store)["gauge_id"].values.astype(str)
    rows = [ln for ln in out.splitlines() if ln.strip().startswith(tuple(ids))]
    assert len(rows) == len(ids) and all(len(r.split()) == 8 for r in rows)  # id, 3 | 3
    cli.main(["test", *common, "--ckpt_path", str(next(tmp_path.rglob("last.ckpt")))])
    out = capsys.readouterr().out
    assert "daily q per basin, test period 1983-07-01 … 1984-12-31" in out


def test_cv_with_seeds_is_an_ensemble_over_one_temporal_split(basins, tmp_path, capsys):
    import xarray as xr

    from h2mv_hybrid.analysis.catchments import basin_roles, catchment_report

    store, _ = basins
    periods = [f"--data.{k}={v}" for k, v in PERIODS.items()]
    fast = ["--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
            "--trainer.logger=false", f"--data.store={store}"]
    config = str(ROOT / "experiments/camels_hybrid.yaml")
    with pytest.raises(SystemExit, match="seeds: expected a config with data.split temporal"):
        cli.main(["cv", "--config", config, "--seeds", "0", "1", "--root",
                  str(tmp_path / "no"), *fast])
    root = tmp_path / "seeds"
    # with the per-basin forcing corrections and elevation bands: predict writes them, the
    # report sets them beside the observed runoff ratio and the snow fraction
    cli.main(["cv", "--config", config, "--seeds", "3", "11", "--predict", "all", "--root",
              str(root), "--data.split", "temporal", *periods, *fast,
              "--model.init_args.network.basin_precip_factor=true",
              "--model.init_args.network.basin_temperature_offset=true",
              "--model.init_args.network.elevation_bands=2"])
    members = sorted(root.glob("member_*/config.yaml"))
    import yaml

    cfgs = [yaml.safe_load(p.read_text()) for p in members]
    assert [c["seed_everything"] for c in cfgs] == [3, 11]
    assert [c["data"]["seed"] for c in cfgs] == [3, 11]
    ens = xr.open_zarr(root / "ensemble.zarr", consolidated=False)
    assert ens.sizes["member"] == 2 and ens.attrs["split"] == "temporal"
    assert ens.attrs["seeds"] == "[3, 11]"
    assert str(ens["time"].values[0])[:10] == "1983-07-01"  # the test period
    assert (basin_roles(ens) == "train").all()  # every basin: a temporal test
    report = catchment_report(store, str(root / "ensemble.zarr"), str(tmp_path / "report"),
                              train_start="1982-01-01", train_end="1982-12-31",
                              figures=False)
    skill = pd.read_csv(Path(report) / "skill.csv")
    assert set(skill["score"]) == {"nse", "kge", "kge_prime"}
    assert set(skill["group"]) == {"temporal"}
    c_p = ens["precip_factor"]
    assert c_p.dims == ("member", "cell") and c_p.attrs["units"] == "–"
    assert float(c_p.min()) >= 0.5 and float(c_p.max()) <= 2.0
    assert ens["temperature_offset"].attrs["units"] == "°C"
    spread = ens["temperature_spread"]  # with elevation bands: their spread per basin
    assert spread.dims == ("member", "cell") and spread.attrs["units"] == "°C"
    assert float(spread.min()) > 0 and float(spread.max()) < 6
    patterns = pd.read_csv(Path(report) / "patterns.csv")
    member_mean = c_p.mean("member").values
    np.testing.assert_allclose(patterns["model_precip_factor"], member_mean, rtol=1e-6)
    np.testing.assert_allclose(patterns["model_temperature_spread"],
                               spread.mean("member").values, rtol=1e-6)
    pairs = pd.read_csv(Path(report) / "pattern_correlations.csv")
    assert {"observed_runoff_ratio", "camels_frac_snow"} <= set(pairs["reference"])
    # the water balance closes on the corrected precipitation
    balance = pd.read_csv(Path(report) / "water_balance.csv")
    assert balance["relative"].abs().max() < 1e-4
