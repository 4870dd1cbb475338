"""h2mv cv (members trained, skipped, resumed) and the restartable ensemble store."""

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
import zarr

from h2mv_hybrid import cli
from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.store import write_store
from h2mv_hybrid.data.synth import TwinConfig, synthesize
from h2mv_hybrid.ensemble import cross_validate, member_config, metadata_checksum
from h2mv_hybrid.ensemble import store as ensemble_store
from h2mv_hybrid.ensemble.store import load_member, predict_ensemble, sha256_file

# Fits through the real CLI: left out of the fast subset (pytest -m "not slow").
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
FOLDS = 3


def overrides(store, *extra):
    return ["--data.store", store, "--data.batch_size", "8", "--data.num_workers", "0",
            "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--data.train_start", "2002-01-01",
            "--data.train_end", "2003-12-31", "--trainer.enable_progress_bar", "false", *extra]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cv") / "twin.zarr"
    write_store(*synthesize(TwinConfig(res=8.0, years="2001-2006", seed=1)), path)
    return str(path)


@pytest.fixture(scope="module")
def cv(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("cv") / "run"
    result = cross_validate(QUICKSTART, FOLDS, root=root, overrides=overrides(store),
                            device="cpu")
    return root, result


# -- the member configs --------------------------------------------------------------------

def test_member_config_sets_fold_seeds_and_directories(tmp_path):
    base = yaml.safe_load(QUICKSTART.read_text())
    before = copy.deepcopy(base)
    cfg = member_config(base, 3, 10, tmp_path / "member_3")
    assert base == before  # the base config is not modified
    assert cfg["seed_everything"] == base["seed_everything"] + 3
    assert cfg["data"]["member"] == 3 and cfg["data"]["n_folds"] == 10
    assert cfg["data"]["seed"] == 3
    assert cfg["trainer"]["default_root_dir"] == str(tmp_path / "member_3")
    assert {lg["init_args"]["save_dir"] for lg in cfg["trainer"]["logger"]} == {
        str(tmp_path / "member_3")}
    classes = [c["class_path"] for c in cfg["trainer"]["callbacks"]]
    assert not any("ZarrPredictionWriter" in c for c in classes)  # one ensemble store instead
    ckpt = next(c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint"))
    assert ckpt["init_args"]["dirpath"] == str(tmp_path / "member_3" / "checkpoints")
    assert ckpt["init_args"]["save_last"] is True
    assert ckpt["init_args"]["monitor"] == "val_loss"  # the config's own settings are kept


def test_member_config_adds_a_checkpoint_when_the_config_has_none(tmp_path):
    cfg = member_config({"trainer": {"callbacks": ["ModelCheckpoint"]}}, 1, 4, tmp_path)
    (ckpt,) = cfg["trainer"]["callbacks"]
    assert ckpt["init_args"]["save_last"] and ckpt["init_args"]["dirpath"].endswith("checkpoints")
    cfg = member_config({}, 1, 4, tmp_path)
    (ckpt,) = cfg["trainer"]["callbacks"]
    assert ckpt["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"
    assert cfg["seed_everything"] == 1 and cfg["data"]["seed"] == 1


# -- training, skipping, resuming ----------------------------------------------------------

def test_every_member_trained_with_its_own_fold(cv):
    root, result = cv
    assert [m.action for m in result["members"]] == ["trained"] * FOLDS
    for k in range(FOLDS):
        done = json.loads((root / f"member_{k}" / "done.json").read_text())
        assert done["member"] == k and done["epochs"] == 2
        assert Path(done["best_checkpoint"]).exists()
        cfg = yaml.safe_load((root / f"member_{k}" / "config.yaml").read_text())
        assert cfg["data"]["member"] == k and cfg["seed_everything"] == k
        hp = torch.load(done["best_checkpoint"], weights_only=True)["datamodule_hyper_parameters"]
        assert hp["member"] == k and hp["n_folds"] == FOLDS
    # different folds and seeds give different members
    w = [torch.load(root / f"member_{k}/checkpoints/last.ckpt", weights_only=True)["state_dict"]
         for k in range(FOLDS)]
    assert any(not torch.equal(w[0][n], w[1][n]) for n in w[0])


def test_rerun_skips_finished_members_and_keeps_the_store(cv, store, capsys):
    root, _ = cv
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.ckpt")}
    ens_stamp = (root / "ensemble.zarr" / ".zmetadata").stat().st_mtime_ns
    cli.main(["cv", "--config", str(QUICKSTART), "--folds", str(FOLDS), "--root", str(root),
              "--device", "cpu", *overrides(store)])
    out = capsys.readouterr().out
    assert out.count("finished earlier") == FOLDS and "up to date" in out
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.ckpt")} == stamps
    assert (root / "ensemble.zarr" / ".zmetadata").stat().st_mtime_ns == ens_stamp


def test_a_root_holds_one_ensemble(cv, store):
    root, _ = cv
    with pytest.raises(ValueError, match="holds a CV of"):
        cross_validate(QUICKSTART, 4, root=root, overrides=overrides(store))
    with pytest.raises(ValueError, match="holds a CV of"):
        cross_validate(QUICKSTART, FOLDS, root=root,
                       overrides=overrides(store, "--model.init_args.lr", "0.1"))
    # the same file and options, other contents (the config was edited since): said so
    original = (root / "cv.json").read_text()
    manifest = json.loads(original)
    manifest.update(config_text="an earlier version", fingerprint="of the earlier version")
    (root / "cv.json").write_text(json.dumps(manifest))
    try:
        with pytest.raises(ValueError, match="the config's contents differ from the ensemble's"):
            cross_validate(QUICKSTART, FOLDS, root=root, overrides=overrides(store))
    finally:
        (root / "cv.json").write_text(original)


@pytest.mark.parametrize("bad, match", [
    ({"overrides": ["--data.member", "2"]}, "--data.member: expected h2mv cv to set it"),
    ({"members": [3]}, r"members: expected 0 … 2"),
    ({"folds": 1}, "folds: expected at least 2"),
    ({"predict": "grid"}, "predict: expected test, all or none"),
])
def test_bad_cv_arguments_are_named(bad, match, tmp_path):
    args = {"config": QUICKSTART, "folds": FOLDS, "root": tmp_path, **bad}
    with pytest.raises(ValueError, match=match):
        cross_validate(**args)
    assert not (tmp_path / "cv.json").exists()  # refused before anything was written


def test_an_interrupted_member_resumes_from_its_last_checkpoint(cv, store, tmp_path,
                                                                 monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "helpers"))
    extra = overrides(store, "--trainer.callbacks+=interrupt.InterruptAtEpochStart")
    monkeypatch.setenv("H2MV_TEST_INTERRUPT_EPOCH", "1")
    with pytest.raises(KeyboardInterrupt):  # after Lightning's graceful shutdown
        cross_validate(QUICKSTART, FOLDS, members=[0], root=tmp_path, overrides=extra,
                       predict="none")
    member = tmp_path / "member_0"
    assert (member / "checkpoints" / "last.ckpt").exists()
    assert not (member / "done.json").exists()
    assert torch.load(member / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 0
    monkeypatch.delenv("H2MV_TEST_INTERRUPT_EPOCH")
    result = cross_validate(QUICKSTART, FOLDS, members=[0], root=tmp_path, overrides=extra,
                            predict="test")
    assert [m.action for m in result["members"]] == ["resumed"]
    assert result["ensemble"] is None  # members 1 and 2 are not trained yet
    # the resumed member ends where the uninterrupted member 0 of the same CV ended
    resumed = torch.load(member / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(cv[0] / "member_0/checkpoints/last.ckpt",
                           weights_only=True)["state_dict"]
    for name, value in reference.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)


# -- the ensemble store ----------------------------------------------------------------------

def test_ensemble_store_layout_and_provenance(cv, store):
    root, result = cv
    ens = xr.open_zarr(result["ensemble"], consolidated=False)
    assert ens["ET"].dims == ("member", "time", "lat", "lon")
    assert ens.sizes["member"] == FOLDS and ens["ET"].attrs["units"] == "mm day-1"
    assert str(ens["time"].values[0])[:10] == "2002-01-01"
    test = (ens["fold"] == -1).values
    predicted = np.isfinite(ens["sm_max"].values)
    assert (predicted == test[None]).all()  # exactly the test cells, for every member
    assert "progress" not in ens and not Path(str(result["ensemble"]) + ".partial").exists()
    attrs = ens.attrs
    assert attrs["config"] == QUICKSTART.read_text()
    assert json.loads(attrs["config_overrides"]) == overrides(store)
    assert attrs["h2mv_hybrid_version"] and attrs["git_commit"]
    assert attrs["input_store_metadata_sha256"] == metadata_checksum(store)
    members = json.loads(attrs["member_checkpoints"])
    assert [m["member"] for m in members] == list(range(FOLDS))
    for m in members:
        assert m["sha256"] == sha256_file(m["checkpoint"])
    assert np.isfinite(ens["beta_snow"].values).all()


def test_ensemble_values_are_each_members_prediction(cv, store):
    root, result = cv
    ens = xr.open_zarr(result["ensemble"], consolidated=False)
    k = 1
    ckpt = json.loads((root / f"member_{k}" / "done.json").read_text())["best_checkpoint"]
    module = load_member(ckpt, torch.device("cpu"))
    hp = torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"]
    dm = H2MVDataModule(**{key: v for key, v in hp.items() if not key.startswith("_")})
    data = dm.batches("test")
    batch = data[np.arange(len(data))]
    with torch.no_grad():
        out = module(batch, "predict")
    lat, lon = batch["lat"].numpy(), batch["lon"].numpy()
    for name in ("ET", "tws", "q_base"):
        stored = ens[name].sel(member=k).values  # time, lat, lon
        rows = np.searchsorted(ens["lat"].values, lat)
        cols = np.searchsorted(ens["lon"].values, lon)
        np.testing.assert_allclose(stored[:, rows, cols], out.daily[name].numpy().T,
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ens["sm_max"].sel(member=k).values[rows, cols],
                               out.sm_max.numpy(), rtol=1e-6)


def test_interrupted_prediction_resumes_where_it_stopped(cv, tmp_path, monkeypatch):
    root, result = cv
    out = tmp_path / "ensemble.zarr"
    real_write = ensemble_store.EnsembleWriter._write_tile
    calls = {"write": 0, "predict": 0}

    def failing_write(self, group, member, t, pred):
        if calls["write"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls["write"] += 1
        real_write(self, group, member, t, pred)

    monkeypatch.setattr(ensemble_store.EnsembleWriter, "_write_tile", failing_write)
    with pytest.raises(KeyboardInterrupt):
        predict_ensemble(root, out, device="cpu")
    partial = Path(str(out) + ".partial")
    assert partial.exists() and not out.exists()  # never a half-written store under `out`
    assert int(xr.open_zarr(partial, consolidated=False)["progress"].sum()) == 2

    # another cell selection does not continue someone else's partial store
    with pytest.raises(ValueError, match="interrupted prediction of other"):
        predict_ensemble(root, out, cells="all", device="cpu")

    monkeypatch.setattr(ensemble_store.EnsembleWriter, "_write_tile", real_write)
    real_predict = ensemble_store.EnsembleWriter._predict_tile

    def counting_predict(self, *args):
        calls["predict"] += 1
        return real_predict(self, *args)

    monkeypatch.setattr(ensemble_store.EnsembleWriter, "_predict_tile", counting_predict)
    predict_ensemble(root, out, device="cpu")
    assert not partial.exists() and out.exists()
    full = xr.open_zarr(result["ensemble"], consolidated=False)
    resumed = xr.open_zarr(out, consolidated=False)
    total = FOLDS * len(ensemble_store.EnsembleWriter(root, out, "test", True).tiles)
    assert calls["predict"] == total - 2  # the two written tiles were not predicted again
    assert resumed.sizes["member"] == FOLDS and "progress" not in resumed
    for name in ("ET", "sm", "gw", "sm_max", "alpha_T"):
        xr.testing.assert_allclose(resumed[name].load(), full[name].load())


def test_prediction_interrupted_after_its_last_tile_is_published_on_rerun(cv, tmp_path,
                                                                          monkeypatch):
    """Past the last tile the partial store drops its progress map; a failure after that
    (in the extrapolation index) leaves it without one, and a rerun publishes it without
    predicting again."""
    root, result = cv
    out = tmp_path / "ensemble.zarr"
    real = ensemble_store.EnsembleWriter._write_extrapolation

    def failing(self):
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(ensemble_store.EnsembleWriter, "_write_extrapolation", failing)
    with pytest.raises(KeyboardInterrupt):
        predict_ensemble(root, out, device="cpu")
    partial = Path(str(out) + ".partial")
    assert partial.exists() and not out.exists()
    assert "progress" not in zarr.open_group(partial, mode="r")
    monkeypatch.setattr(ensemble_store.EnsembleWriter, "_write_extrapolation", real)
    monkeypatch.setattr(ensemble_store.EnsembleWriter, "_predict_tile",
                        lambda *a: pytest.fail("a written tile was predicted again"))
    predict_ensemble(root, out, device="cpu")
    assert not partial.exists() and out.exists()
    full = xr.open_zarr(result["ensemble"], consolidated=False)
    resumed = xr.open_zarr(out, consolidated=False)
    for name in ("ET", "sm_max", "extrapolation_index"):
        xr.testing.assert_allclose(resumed[name].load(), full[name].load())


def test_an_existing_store_of_other_predictions_is_not_overwritten(cv, tmp_path):
    root, _ = cv
    out = tmp_path / "other.zarr"
    shutil.copytree(root / "ensemble.zarr", out)
    predict_ensemble(root, out, device="cpu")  # same provenance: up to date, untouched
    import zarr

    from h2mv_hybrid.data.store import consolidate

    group = zarr.open_group(out, mode="r+")
    group.attrs.update({"provenance_key": "something else",
                        "config": group.attrs["config"] + "\n# another experiment"})
    consolidate(out)
    with pytest.raises(FileExistsError, match="holds other predictions"):
        predict_ensemble(root, out, device="cpu")


def test_a_store_of_fewer_members_of_the_same_experiment_is_rewritten(cv, tmp_path, capsys):
    # a comparison spec that grows from member 0 to members 0–2 rewrites its own store
    root, _ = cv
    out = tmp_path / "grown.zarr"
    predict_ensemble(root, out, device="cpu", members=[0])
    assert xr.open_zarr(out, consolidated=False).sizes["member"] == 1
    capsys.readouterr()
    predict_ensemble(root, out, device="cpu")
    assert "holds the same experiment with other member checkpoints ([0]); rewriting it " \
           f"with members {list(range(FOLDS))}" in capsys.readouterr().out
    grown = xr.open_zarr(out, consolidated=False)
    full = xr.open_zarr(root / "ensemble.zarr", consolidated=False)
    assert grown.sizes["member"] == FOLDS
    xr.testing.assert_allclose(grown["ET"].load(), full["ET"].load())


def test_prediction_needs_every_member(cv, tmp_path):
    root, _ = cv
    partial_root = tmp_path / "root"
    shutil.copytree(root, partial_root, ignore=shutil.ignore_patterns("*.zarr"))
    os.remove(partial_root / "member_2" / "done.json")
    with pytest.raises(FileNotFoundError, match="member 2: expected a finished member"):
        predict_ensemble(partial_root, device="cpu")


# -- h2mv analyze ------------------------------------------------------------------------------

def test_analyze_writes_tables_maps_and_figures(cv, tmp_path, capsys):
    _, result = cv
    out = tmp_path / "analysis"
    cli.main(["analyze", "--ensemble", str(result["ensemble"]), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "performance on the test cells" in printed and "equifinality" in printed
    import pandas as pd

    perf = pd.read_csv(out / "performance.csv")
    assert len(perf) == 5 * 3 * 6  # constraints × components × metrics
    assert set(perf["component"]) == {"monthly", "msc", "iav"}
    assert (perf["min"] <= perf["mean"] + 1e-9).all() and (perf["mean"] <= perf["max"] + 1e-9).all()
    r = perf[(perf["metric"] == "r") & (perf["component"] == "monthly")].set_index("constraint")
    assert r.loc["et", "mean"] > 0.5  # trained members track ET (2 short epochs)
    eq = pd.read_csv(out / "equifinality.csv").set_index("variable")
    assert {"sm_max", "tws_anomaly", "T", "q_base", "snow_melt"} <= set(eq.index)
    np.testing.assert_allclose(eq["total"], eq[["phase", "bias", "variance"]].sum(axis=1),
                               rtol=1e-3)
    spread = pd.read_csv(out / "state_spread.csv")
    assert len(spread) == FOLDS and "sm_mean_mm" in spread
    maps = xr.open_zarr(out / "analysis.zarr", group="patterns", consolidated=False)
    assert maps["evaporative_fraction"].dims == ("lat", "lon")
    shares = sum(maps[f"tws_share_{k}"] for k in ("swe", "sm", "gw"))
    np.testing.assert_allclose(shares.values[np.isfinite(shares.values)], 1.0, rtol=1e-5)
    for name in ("performance", "msc", "equifinality", "state_spread", "patterns",
                 "tws_decomposition", "sm_max", "folds", "extrapolation"):
        png = out / "figures" / f"{name}.png"
        assert png.stat().st_size > 10_000, name
    # how far each predicted (test) cell lies from each member's training cells, and the
    # skill of the member-cells of each distance class
    index = xr.open_zarr(out / "analysis.zarr", group="extrapolation", consolidated=False)
    assert index["extrapolation_index"].dims == ("member", "cell")
    assert index.sizes["member"] == FOLDS and bool((index["extrapolation_index"] > 0).all())
    # the ensemble store itself holds it, on its grid, finite exactly at the predicted cells
    ens = xr.open_zarr(result["ensemble"])
    stored = ens["extrapolation_index"]
    assert stored.dims == ("member", "lat", "lon") and stored.attrs["units"] == "1"
    predicted = np.isfinite(ens["sm_max"].values)
    assert (np.isfinite(stored.values) == predicted).all()
    np.testing.assert_allclose(np.sort(stored.values[predicted]),
                               np.sort(index["extrapolation_index"].values.ravel()), rtol=1e-6)
    by_class = pd.read_csv(out / "skill_by_extrapolation.csv")
    assert set(by_class["constraint"]) == {"et", "q", "tws", "fapar", "swe"}
    counted = by_class.groupby("constraint")["member_cells"].sum()
    everywhere = index.sizes["member"] * index.sizes["cell"]
    assert counted["et"] == everywhere and (counted <= everywhere).all()  # SWE: snowy cells
    with pytest.raises(SystemExit, match="exists"):
        cli.main(["analyze", "--ensemble", str(result["ensemble"]), "--out", str(out)])


def test_analyze_with_sensitivities_runs_every_members_checkpoint(cv, tmp_path, capsys):
    """h2mv analyze --sensitivity true: the members' forcing sensitivities from the
    checkpoints the ensemble store records, as a table, a group and a figure."""
    import pandas as pd
    import zarr

    from h2mv_hybrid.analysis.sensitivity import sensitivity
    from h2mv_hybrid.data.store import consolidate

    _, result = cv
    out = tmp_path / "analysis"
    cli.main(["analyze", "--ensemble", str(result["ensemble"]), "--out", str(out),
              "--sensitivity", "true"])
    assert "forcing sensitivities" in capsys.readouterr().out
    table = pd.read_csv(out / "sensitivity.csv")
    assert len(table) == 3 * 3 * 5  # outputs × forcings × seasons
    assert (table["cells"] > 0).all()
    sens = xr.open_zarr(out / "analysis.zarr", group="sensitivity")
    assert sens.sizes["member"] == FOLDS
    assert (out / "figures" / "sensitivity.png").stat().st_size > 10_000
    records = json.loads(xr.open_zarr(result["ensemble"]).attrs["member_checkpoints"])
    one = sensitivity(records[1]["checkpoint"])  # the same as h2mv sensitivity gives
    np.testing.assert_allclose(sens["q_prec"].sel(member=records[1]["member"]).values,
                               one["q_prec"].values, rtol=1e-6, equal_nan=True)
    # a store whose checkpoints are gone is refused with their paths
    moved = tmp_path / "moved.zarr"
    shutil.copytree(result["ensemble"], moved)
    group = zarr.open_group(moved, mode="r+")
    group.attrs["member_checkpoints"] = json.dumps(
        [{**r, "checkpoint": str(tmp_path / f"gone_{r['member']}.ckpt")} for r in records])
    consolidate(moved)
    with pytest.raises(SystemExit, match="expected the members' checkpoints, found nothing at"):
        cli.main(["analyze", "--ensemble", str(moved), "--out", str(tmp_path / "a2"),
                  "--sensitivity", "true"])


def test_members_over_two_ddp_processes(store, tmp_path):
    """Lightning's own DDP (gloo on CPU) under h2mv cv: every rank walks the same members,
    rank 0 alone writes the markers and the ensemble store."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("h2mv")
    cmd = [str(script), "cv", "--config", str(QUICKSTART), "--folds", "2", "--root",
           str(tmp_path / "run"), "--device", "cpu",
           *overrides(store, "--trainer.strategy", "ddp", "--trainer.devices", "2",
                      "--trainer.accelerator", "cpu")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for k in (0, 1):
        done = json.loads((tmp_path / "run" / f"member_{k}" / "done.json").read_text())
        assert done["world_size"] == 2 and done["epochs"] == 2
    ens = xr.open_zarr(tmp_path / "run" / "ensemble.zarr", consolidated=False)
    assert ens.sizes["member"] == 2
    assert not list((tmp_path / "run").glob("*.partial"))


def test_point_layout_ensemble_and_analysis(store, tmp_path, monkeypatch):
    """A point store (cells along one dim): members, ensemble store and figures."""
    from h2mv_hybrid.analysis.report import analyze
    from h2mv_hybrid.data.store import open_store

    ds = open_store(store).load()
    land = ds["mask"].stack(cell=("lat", "lon"))
    pts = ds.stack(cell=("lat", "lon")).isel(cell=np.flatnonzero(land.values))
    pts = pts.reset_index("cell")
    pts = pts.assign_coords(lat=("cell", pts["lat"].values), lon=("cell", pts["lon"].values))
    pts = pts.transpose(*[d for d in ("time", "month", "layer", "feature", "cell") if d in pts.dims])
    for v in pts.data_vars:
        pts[v].encoding = {}
    points = tmp_path / "points.zarr"
    write_store(pts, None, points)
    extra = overrides(str(points))
    extra[extra.index("--trainer.max_epochs") + 1] = "1"
    result = cross_validate(QUICKSTART, 2, root=tmp_path / "run", overrides=extra,
                            device="cpu")
    ens = xr.open_zarr(result["ensemble"], consolidated=False)
    assert ens["ET"].dims == ("member", "time", "cell")
    test = (ens["fold"] == -1).values
    assert (np.isfinite(ens["sm_max"].values) == test[None]).all()
    assert ens["extrapolation_index"].dims == ("member", "cell")
    assert (np.isfinite(ens["extrapolation_index"].values) == test[None]).all()
    from h2mv_hybrid.analysis import plots

    titles, save = {}, plots.save

    def spy(fig, path, **kw):  # each figure's title, as h2mv analyze draws it
        titles[Path(path).name] = fig._suptitle.get_text() if fig._suptitle else ""
        return save(fig, path, **kw)

    monkeypatch.setattr(plots, "save", spy)
    out = analyze(str(result["ensemble"]), str(tmp_path / "analysis"))
    assert titles["sm_max.png"] == "Learned soil capacity SM_max, 2 members"
    assert titles["patterns.png"] == "Emergent patterns, mean over 2 members"
    maps = xr.open_zarr(Path(out) / "analysis.zarr", group="patterns", consolidated=False)
    assert maps["runoff_coefficient"].dims == ("cell",)
    assert (Path(out) / "figures" / "patterns.png").stat().st_size > 10_000
    assert (Path(out) / "figures" / "folds.png").stat().st_size > 10_000


def test_two_concurrent_cv_processes_train_every_member_once(store, tmp_path):
    """Two h2mv cv processes on one root: each member is claimed by one of them and
    trained once (no ``-v1`` checkpoints beside the first), the ensemble written once."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("h2mv")
    cmd = [str(script), "cv", "--config", str(QUICKSTART), "--folds", "3", "--root",
           str(tmp_path / "run"), "--device", "cpu", *overrides(store)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    text = "\n".join(o[0] for o in outs)
    assert sum(f"member {k}: trained" in text for k in range(3)) == 3
    assert sum(line.strip().startswith(f"member {k}: trained")
               for line in text.splitlines() for k in range(3)) == 3
    for k in range(3):
        names = [p.name for p in (tmp_path / "run" / f"member_{k}").rglob("*.ckpt")]
        assert not [n for n in names if "-v1" in n], names
        assert not (tmp_path / "run" / f"member_{k}" / "claim.json").exists()
    # one writes the store; the other finds it unfinished, being written, or written
    assert "ensemble store: " in text
    assert xr.open_zarr(tmp_path / "run" / "ensemble.zarr", consolidated=False).sizes[
        "member"] == 3


def test_claims_skip_a_live_owner_and_take_over_a_dead_one(tmp_path):
    import subprocess
    import sys

    from h2mv_hybrid.ensemble import claims

    path = tmp_path / "member_0" / "claim.json"
    with claims.claim(path) as other:
        assert other is None and json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()  # released
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    record = {**claims.owner_record(), "pid": int(gone)}
    path.write_text(json.dumps(record))
    with claims.claim(path) as other:  # its process has ended: stale, taken over
        assert other is None and json.loads(path.read_text())["pid"] == os.getpid()
    live = {**claims.owner_record(), "pid": os.getppid()}
    path.write_text(json.dumps(live))
    with claims.claim(path) as other:  # a live owner: skipped, left as it is
        assert other == live
    assert json.loads(path.read_text()) == live
    assert str(os.getppid()) in claims.describe(live)


def test_sensitivity_of_every_member_with_maps(cv, tmp_path, capsys):
    """h2mv sensitivity --ensemble: each finished member's best checkpoint, along member."""
    root, _ = cv
    png, out = tmp_path / "sens.png", tmp_path / "sens.zarr"
    cli.main(["sensitivity", "--ensemble", str(root), "--max_cells", "2", "--batch_size", "2",
              "--out", str(out), "--figure", str(png)])
    text = capsys.readouterr().out
    assert "forcing sensitivities" in text and f"figure: {png}" in text
    result = xr.open_zarr(out, consolidated=False)
    assert result.sizes["member"] == FOLDS and list(result["member"].values) == [0, 1, 2]
    finite = np.isfinite(result["q_prec"].sel(season="all").values)
    assert finite.sum() == FOLDS * 2  # two test cells per member
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="expected a checkpoint or an --ensemble root, found "
                                         "both"):
        cli.main(["sensitivity", "--ensemble", str(root), "--checkpoint", "last"])


def test_identify_trains_leave_one_constraint_out_ensembles_and_tabulates(store, tmp_path,
                                                                         capsys):
    """h2mv identify: the all-constraints ensemble and one without TWS, scored on the same
    test cells (skill, equifinality, SM_max recovery on the twin), table and figure."""
    import pandas as pd

    root = tmp_path / "identify"
    cli.main(["identify", "--config", str(QUICKSTART), "--drop", "tws", "--folds", "3",
              "--members", "0", "1", "--root", str(root), "--device", "cpu", *overrides(store)])
    printed = capsys.readouterr().out
    assert "identifiability" in printed and "without tws" in printed
    table = pd.read_csv(root / "identifiability.csv")
    assert set(table["variant"]) == {"all constraints", "without tws"}
    withheld = table[(table["variant"] == "without tws") & (table["quantity"] == "tws")]
    assert set(withheld["metric"]) == {"kge (monthly)", "equifinality"}  # still scored
    assert {"sm_max", "baseflow_index", "transpiration_fraction", "gw", "q_base"} <= set(
        table[table["metric"] == "equifinality"]["quantity"])
    recovered = table[table["metric"] == "recovery r (twin)"]
    assert recovered.shape[0] == 2 * 3  # SM_max, BFI and T/ET of both variants
    assert recovered["value"].between(-1, 1).all()
    manifest = json.loads((root / "without_tws" / "cv.json").read_text())
    kept = json.loads(manifest["overrides"][-1].split("=", 1)[1])
    assert [c["target"] for c in kept] == ["tws", "et", "q", "fapar", "swe"][1:]
    assert (root / "identifiability.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match=r"drop: expected some of the config's constraints "
                                         r"\(tws, et, q, fapar, swe\), found runoff"):
        cli.main(["identify", "--config", str(QUICKSTART), "--drop", "runoff"])
    with pytest.raises(SystemExit, match="expected the H2MV hybrid"):
        cli.main(["identify", "--config", str(ROOT / "experiments/phy_lstm/lstm.yaml"),
                  "--drop", "q"])
