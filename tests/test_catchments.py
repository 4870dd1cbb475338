"""Catchment evaluation: roles, DOY climatology, score groups, water balance, patterns; the
whole CAMELS chain (import → cv → h2mv catchments) on a synthetic CAMELS folder."""

import dask
import dask.threaded
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers.camels_folder import write_camels_folder

from h2mv_hybrid import cli
from h2mv_hybrid.analysis.catchments import (
    basin_roles,
    doy_climatology,
    pattern_correlations,
    skill_groups,
    summarize,
    water_balance,
)


def test_roles_follow_the_folds():
    ens = xr.Dataset({"fold": ("cell", np.array([0, 1, -1, 2, 1]))},
                     coords={"member": [0, 1, 2]})
    roles = basin_roles(ens)
    assert roles.sel(member=1).values.tolist() == ["train", "val", "test", "train", "val"]
    assert (roles.sel(cell=2) == "test").all()


def test_doy_climatology_by_hand():
    days = pd.date_range("2001-01-01", "2003-12-31", freq="D")
    q = xr.DataArray(np.arange(len(days), dtype=float)[:, None], dims=("time", "cell"),
                     coords={"time": days})
    q[1, 0] = np.nan  # 2001-01-02 missing: that day's mean comes from 2002 only
    clim = doy_climatology(q, "2001-01-01", "2002-12-31", pd.date_range("2003-01-01",
                                                                        periods=3))
    # 1 January: mean of day 0 and day 365; 2 January: day 366 only
    assert clim.values[:, 0].tolist() == [182.5, 366.0, (2 + 367) / 2]


def test_groups_take_each_roles_members():
    roles = xr.DataArray([["train", "val", "test"], ["val", "train", "test"],
                          ["train", "train", "test"]], dims=("member", "cell"))
    nse = xr.DataArray([[0.5, 0.1, 0.3], [0.2, 0.7, 0.4], [0.9, 0.8, 0.5]],
                       dims=("member", "cell"))
    g = skill_groups(xr.Dataset({"nse": nse}), roles)
    assert g["nse"].sel(group="temporal").values.tolist() == [0.7, 0.75, pytest.approx(np.nan,
                                                                                      nan_ok=True)]
    assert g["nse"].sel(group="spatial").values[2] == pytest.approx(0.4)
    assert g["nse"].sel(group="cross-validated").values[:2].tolist() == [0.2, 0.1]
    table = summarize(g)
    row = table[(table.group == "temporal")].iloc[0]
    assert row.basins == 2 and row["median"] == pytest.approx(0.725)


def test_water_balance_closes_and_detects_a_leak():
    rng = np.random.default_rng(0)
    n = 50
    rain, snow = rng.gamma(1, 2, (1, n, 3)), rng.gamma(1, 0.5, (1, n, 3))
    et, q = rng.uniform(0, 1, (1, n, 3)), rng.uniform(0, 1, (1, n, 3))
    tws = 100 + np.cumsum(rain + snow - et - q, axis=1)
    dims = ("member", "time", "cell")
    ens = xr.Dataset({"rainfall": (dims, rain), "snow_acc": (dims, snow), "ET": (dims, et),
                      "q_total": (dims, q), "tws": (dims, tws)})
    wb = water_balance(ens)
    assert float(abs(wb["residual"]).max()) < 1e-9
    ens["q_total"][0, 10, 1] += 5.0  # 5 mm leave without a trace in storage
    wb = water_balance(ens)
    assert float(wb["residual"][0, 1]) == pytest.approx(-5.0)
    # routed: the outlet's runoff and the water in transit, by the routing functions
    import torch

    from process_layers import routing

    ens["q_total"][0, 10, 1] -= 5.0
    q = torch.as_tensor(ens["q_total"].values[0].T)
    w = routing.gamma_kernel(torch.full((3,), 2.0, dtype=q.dtype),
                             torch.full((3,), 1.5, dtype=q.dtype), 10)
    hist = torch.zeros(3, 9, dtype=q.dtype)
    ens["q_routed"] = (dims, routing.route(q, hist, w).numpy().T[None])
    ens["routing_store"] = (dims, routing.routing_storage(q, hist, w).numpy().T[None])
    wb = water_balance(ens)
    assert float(abs(wb["residual"]).max()) < 1e-9
    ens["routing_store"] = ens["routing_store"] * 0  # forgetting the water in transit leaks
    assert float(abs(water_balance(ens)["residual"]).max()) > 0.1


def test_pattern_correlations():
    t = pd.DataFrame({"model_bfi": [0.1, 0.2, 0.3, 0.5], "camels_baseflow_index":
                      [0.2, 0.3, 0.5, 0.4], "model_runoff_ratio": [0.1, 0.2, 0.3, 0.4],
                      "camels_runoff_ratio": [0.1, 0.2, 0.3, 0.4]})
    c = pattern_correlations(t).set_index("reference")
    assert c.loc["camels_runoff_ratio", "pearson_r"] == pytest.approx(1.0)
    assert c.loc["camels_baseflow_index", "spearman_rho"] == pytest.approx(0.8)


def test_camels_chain_through_the_cli(tmp_path, capsys):
    """import camels → cv of the hybrid and the LSTM (two members) → h2mv catchments."""
    from pathlib import Path

    pytest.importorskip("matplotlib")
    root = Path(__file__).resolve().parents[1]
    write_camels_folder(tmp_path / "src")
    store = str(tmp_path / "camels.zarr")
    cli.main(["import", "camels", "--source", str(tmp_path / "src"), "--out", store])
    fast = ["--data.store", store, "--data.train_start", "1982-01-01", "--data.train_end",
            "1983-06-30", "--data.test_start", "1983-07-01", "--data.test_end", "1984-12-31",
            "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false"]
    for name in ("hybrid", "lstm"):
        cli.main(["cv", "--config", str(root / f"experiments/camels_{name}.yaml"), "--folds",
                  "5", "--members", "0", "1", "--ensemble_of", "these", "--predict", "all", "--root",
                  str(tmp_path / name), *fast])
    gr4j = str(tmp_path / "gr4j.zarr")
    cli.main(["gr4j", "--store", store, "--out", gr4j, "--train_start", "1982-01-01",
              "--train_end", "1983-06-30", "--maxiter", "3", "--popsize", "5"])
    out = tmp_path / "report"
    computes = []

    def counting(*args, **kwargs):
        computes.append(1)
        return dask.threaded.get(*args, **kwargs)

    with dask.config.set(scheduler=counting):
        cli.main(["catchments", "--store", store, "--hybrid",
                  str(tmp_path / "hybrid/ensemble.zarr"), "--lstm",
                  str(tmp_path / "lstm/ensemble.zarr"), "--conceptual", gr4j,
                  "--out", str(out), "--hydrograph_year", "1984"])
    # each store is read once (the store, its attributes, three runs) and scored in
    # memory: per-score dask graphs took 3 minutes and 10 GiB for one real basin
    assert len(computes) <= 5
    text = capsys.readouterr().out
    assert "climatology" in text and "temporal" in text and "spatial" in text
    skill = pd.read_csv(out / "skill.csv")
    assert set(skill.model) == {"hybrid", "LSTM", "climatology", "hybrid (ensemble mean)",
                                "LSTM (ensemble mean)", "GR4J"}
    # calibrated per basin over the training years: all six basins, temporal group only
    assert set(skill[skill.model == "GR4J"].group) == {"temporal"}
    assert (skill[skill.model == "GR4J"].basins == 6).all()
    # the member-mean series is scored only where every member had the same role: never
    # on a basin one member held out and the other trained on
    mean = skill[skill.model == "hybrid (ensemble mean)"]
    assert "spatial" in set(mean.group) and "cross-validated" not in set(mean.group)
    assert set(skill.group) >= {"temporal", "spatial", "cross-validated"}
    # 6 basins, one per fold: the test fold's basin is the spatial test of both members
    spatial = skill[(skill.group == "spatial") & (skill.score == "nse")]
    assert (spatial.basins == 1).all()
    balance = pd.read_csv(out / "water_balance.csv")
    assert balance["relative"].abs().max() < 1e-4  # the bucket conserves water
    patterns = pd.read_csv(out / "patterns.csv", dtype={"gauge_id": str})
    assert len(patterns) == 6 and patterns["model_bfi"].between(0, 1).all()
    for fig in ("hydrographs.png", "nse_maps.png", "patterns_vs_camels.png"):
        assert (out / fig).stat().st_size > 10_000


def test_the_ensemble_mean_is_scored_where_every_member_shares_the_role():

    from h2mv_hybrid.analysis.catchments import basin_skill, ensemble_mean_groups

    time = pd.date_range("2000-01-01", periods=50)
    rng = np.random.default_rng(0)
    obs = xr.DataArray(rng.random((50, 3)) + 1, dims=("time", "cell"), coords={"time": time})
    pred = xr.DataArray(rng.random((2, 50, 3)) + 1, dims=("member", "time", "cell"),
                        coords={"time": time})
    roles = xr.DataArray([["train", "test", "val"], ["train", "test", "train"]],
                         dims=("member", "cell"))
    g = ensemble_mean_groups(pred, obs, roles)
    by_hand = basin_skill(pred.mean("member"), obs)
    assert float(g["nse"].sel(group="temporal", cell=0)) == pytest.approx(
        float(by_hand["nse"].isel(cell=0)))
    assert float(g["nse"].sel(group="spatial", cell=1)) == pytest.approx(
        float(by_hand["nse"].isel(cell=1)))
    assert np.isnan(g["nse"].sel(cell=2)).all()  # held out by one member, trained by the other
    assert np.isnan(g["nse"].sel(group="cross-validated")).all()
