"""The DataModule: batches, folds, windows, statistics from training cells, round trip."""

import numpy as np
import pytest
import torch
import xarray as xr

from h2mv_hybrid.data.datamodule import H2MVDataModule
from h2mv_hybrid.data.schema import StoreError
from h2mv_hybrid.data.store import open_store, write_store
from h2mv_hybrid.data.synth import TwinConfig, synthesize
from process_layers import FLUX_NAMES, h2mv
from process_layers.parameters import ALPHA_NAMES

CONSTRAINTS = ["et", "q", "tws", "fapar", "swe"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("dm") / "twin.zarr"
    write_store(*synthesize(TwinConfig(res=6.0, years="2001-2003", seed=5)), path)
    return path


@pytest.fixture(scope="module")
def points_path(tmp_path_factory, store_path):
    """The same twin in the point layout: land cells only, along one 'cell' dim."""
    ds = open_store(store_path).load()
    land = ds["mask"].stack(cell=("lat", "lon"))
    pts = ds.stack(cell=("lat", "lon")).isel(cell=np.flatnonzero(land.values)).reset_index("cell")
    pts = pts.assign_coords(lat=("cell", pts["lat"].values), lon=("cell", pts["lon"].values))
    pts = pts.transpose(*[d for d in ("time", "month", "layer", "feature", "cell") if d in pts.dims])
    for v in pts.data_vars:
        pts[v].encoding = {}
    path = tmp_path_factory.mktemp("pts") / "points.zarr"
    write_store(pts, None, path)
    return path


def dm_for(path, **kw):
    kw.setdefault("n_folds", 4)
    kw.setdefault("block_deg", 20.0)
    kw.setdefault("batch_size", 16)
    dm = H2MVDataModule(str(path), targets=CONSTRAINTS, **kw)
    dm.setup("fit")
    return dm


def test_batch_contents_match_the_store(store_path):
    dm = dm_for(store_path)
    ds = open_store(store_path)
    batch = next(iter(dm.train_dataloader()))
    # nothing from the truth group; the daily target's per-basin std (the NSE* scale)
    assert set(batch) == {"forcing", "static", "month_of_day", "spinup_days", "lat", "lon",
                          "cell_index", *CONSTRAINTS, "swe_basin_std"}
    n = batch["forcing"].shape[0]
    assert n == 16 and batch["forcing"].shape[1:] == (ds.sizes["time"], 3)
    w = dm.window("train")
    assert int(batch["spinup_days"]) == 365 and w.start_month == 12
    assert batch["et"].shape == (n, 24) and batch["swe"].shape == (n, 730)
    rows, cols = np.divmod(batch["cell_index"].numpy(), ds.sizes["lon"])
    np.testing.assert_array_equal(ds["lat"].values[rows], batch["lat"].numpy())
    for i in range(n):
        cell = ds.isel(lat=rows[i], lon=cols[i])
        np.testing.assert_array_equal(batch["forcing"][i, :, 2].numpy(), cell["tair"].values)
        np.testing.assert_array_equal(batch["static"][i].numpy(), cell["static"].values)
        np.testing.assert_array_equal(batch["et"][i].numpy(), cell["et"].values[12:])
        np.testing.assert_array_equal(batch["swe"][i].numpy(), cell["swe"].values[365:])
        assert float(batch["swe_basin_std"][i]) == pytest.approx(
            float(np.nanstd(cell["swe"].values[365:])), rel=1e-5, nan_ok=True)
        assert bool(cell["mask"])
    months = ds.indexes["month"][12:]
    days = ds.indexes["time"][365:]
    mod = batch["month_of_day"].numpy()
    assert (months[mod].month == days.month).all() and (months[mod].year == days.year).all()


def test_every_training_cell_once_per_epoch_seeded_order(store_path):
    dm = dm_for(store_path, seed=1)
    train = set(np.flatnonzero(dm.cells("train").ravel()))
    loader = dm.train_dataloader()
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        seen = np.concatenate([b["cell_index"].numpy() for b in loader])
        assert len(seen) == len(train) and set(seen) == train
        epochs.append(seen)
    assert (epochs[0] != epochs[1]).any()  # reshuffled
    again = dm_for(store_path, seed=1).train_dataloader()
    again.sampler.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate([b["cell_index"].numpy() for b in again]),
                                  epochs[0])
    assert len(loader) == int(np.ceil(len(train) / 16))


def test_splits_follow_the_folds(store_path):
    dm = dm_for(store_path, member=2)
    folds = dm.fold_map()
    assert isinstance(folds, xr.DataArray) and folds.dims == ("lat", "lon")
    val = np.concatenate([b["cell_index"].numpy() for b in dm.val_dataloader()])
    test = np.concatenate([b["cell_index"].numpy() for b in dm.test_dataloader()])
    flat = folds.values.ravel()
    assert (flat[val] == 2).all() and (flat[test] == -1).all()
    assert not set(val) & set(test)


def test_statistics_from_training_cells_only(store_path, tmp_path):
    dm = dm_for(store_path, member=1)
    train = dm.cells("train")
    ds = open_store(store_path).load()
    w = dm.window("train")
    rn = ds["rn"].values[w.start_day:w.end_day][:, train]
    assert dm.stats.forcing_mean[0] == pytest.approx(rn.mean(), rel=1e-5)
    assert dm.stats.forcing_std[0] == pytest.approx(rn.std(ddof=0), rel=1e-4)
    static = ds["static"].values[:, train]
    np.testing.assert_allclose(dm.stats.static_mean, static.mean(axis=1), rtol=1e-5, atol=1e-6)
    # perturb every non-training cell: the statistics must not move
    other = ds.copy(deep=True)
    off = ~train & ds["mask"].values
    other["rn"].values[:, off] = 900.0
    other["et"].values[:, off] = 25.0
    other["static"].values[:, off] = 50.0
    path = tmp_path / "perturbed.zarr"
    for v in other.data_vars:
        other[v].encoding = {}
    write_store(other, None, path)
    dm2 = dm_for(path, member=1)
    assert dm2.stats.forcing_mean == pytest.approx(dm.stats.forcing_mean)
    assert dm2.stats.target_mean["et"] == pytest.approx(dm.stats.target_mean["et"])
    assert dm2.stats.static_mean == pytest.approx(dm.stats.static_mean)
    assert abs(dm.stats.target_mean["tws"]) < 1e-3  # anomalies


def test_round_trip_generator_datamodule_simulate(store_path):
    """The DataModule's forcing with the stored true parameters reproduces the true fluxes."""
    dm = dm_for(store_path, spinup_years=0, train_start="2001-01-01")
    truth = open_store(store_path, group="truth")
    batch = next(iter(dm.predict_dataloader()))
    idx = batch["cell_index"].numpy()
    flat = lambda da: da.stack(s=("lat", "lon")).isel(s=idx).transpose("s", ...).values  # noqa: E731
    forcing = dict(zip(("rn", "prec", "tair"), batch["forcing"].unbind(-1)))
    alpha = {k: torch.as_tensor(flat(truth[f"alpha_{k}"])) for k in ALPHA_NAMES}
    static = {"sm_max": torch.as_tensor(flat(truth["sm_max"]))}
    beta = {"snow": torch.tensor(truth.attrs["beta_snow"]),
            "baseflow": torch.tensor(truth.attrs["beta_baseflow"])}
    states = {k: torch.as_tensor(flat(truth[f"{k}_initial"])) for k in ("swe", "sm", "gw")}
    fluxes = h2mv.simulate(forcing, alpha, static, beta, states)
    for k in FLUX_NAMES:
        torch.testing.assert_close(fluxes[k], torch.as_tensor(flat(truth[k])),
                                   rtol=1e-5, atol=1e-4, msg=k)


def test_point_layout(points_path):
    dm = dm_for(points_path)
    batch = next(iter(dm.train_dataloader()))
    ds = open_store(points_path)
    idx = batch["cell_index"].numpy()
    np.testing.assert_array_equal(batch["lat"].numpy(), ds["lat"].values[idx])
    np.testing.assert_array_equal(batch["forcing"][:, :, 0].numpy(), ds["rn"].values[:, idx].T)
    assert dm.fold_map().dims == ("cell",)
    total = sum(int(dm.cells(s).sum()) for s in ("train", "val", "test"))
    assert total == ds.sizes["cell"]


def test_periods_and_spinup(store_path):
    dm = dm_for(store_path, train_start="2002-01-01", train_end="2002-12-31",
                val_start="2003-01-01", val_end="2003-06-30")
    assert dm.window("train").spinup_days == 365 and dm.window("val").spinup_days == 365
    assert len(dm.window("val").month_of_day) == 181
    batch = next(iter(dm.val_dataloader()))
    assert batch["forcing"].shape[1] == 365 + 181 and batch["et"].shape[1] == 6
    with pytest.raises(StoreError, match="train_start: expected the first day of a month"):
        dm_for(store_path, train_start="2002-01-15")
    with pytest.raises(StoreError, match="train spin-up: expected 730 days before 2002-01-01"):
        dm_for(store_path, train_start="2002-01-01", spinup_years=2)
    with pytest.raises(StoreError, match="val period: expected dates within the store"):
        dm_for(store_path, val_start="2009-01-01", val_end="2009-12-31")


def test_bad_store_fails_in_setup_before_training(store_path, tmp_path):
    ds = open_store(store_path).load()
    for v in ds.data_vars:
        ds[v].encoding = {}
    celsius = ds.copy()
    celsius["tair"] = ds["tair"] - 273.15
    celsius["tair"].attrs.update(units="K", long_name="air temperature")
    write_store(celsius, None, tmp_path / "celsius.zarr")
    with pytest.raises(StoreError, match="tair.*looks like °C"):
        H2MVDataModule(str(tmp_path / "celsius.zarr")).setup("fit")
    write_store(ds.drop_vars("q"), None, tmp_path / "no_q.zarr")
    with pytest.raises(StoreError, match="q: expected in the store"):
        H2MVDataModule(str(tmp_path / "no_q.zarr"), targets=["et", "q"]).setup("fit")
    with pytest.raises(ValueError, match="member: expected 0 … 3"):
        H2MVDataModule(str(store_path), n_folds=4, member=4)
    with pytest.raises(FileNotFoundError, match="expected a zarr store"):
        H2MVDataModule(str(tmp_path / "missing.zarr")).setup("fit")


def test_worker_processes_serve_the_same_batches(store_path):
    serial = dm_for(store_path, num_workers=0).val_dataloader()
    parallel = dm_for(store_path, num_workers=2).val_dataloader()
    a = [b["cell_index"] for b in serial]
    b = [b["cell_index"] for b in parallel]
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_mistyped_store_path_is_refused_not_turned_into_a_twin(tmp_path, capsys):
    """create_twin names where a twin may be written; any other missing store is refused."""
    from h2mv_hybrid.data.datamodule import H2MVDataModule

    twin = tmp_path / "twin.zarr"
    with pytest.raises(FileNotFoundError, match=r"data.store: expected a zarr store at .*twn"
                                                r"\.zarr, found nothing; create_twin writes"):
        H2MVDataModule(store=str(tmp_path / "twn.zarr"), create_twin=str(twin))
    assert not (tmp_path / "twn.zarr").exists() and not list(tmp_path.iterdir())
    # at the named path the twin is written, with a message saying where, why and how big
    dm = H2MVDataModule(store=str(twin), create_twin=str(twin), twin_res=10.0,
                        twin_years="2001-2002")
    assert dm.dataset.sizes["time"] == 730
    out = capsys.readouterr().out
    assert f"no store at {twin}; writing a synthetic twin there (create_twin" in out
    assert "GB" in out and "twin written in" in out


def test_descending_latitudes_and_0_360_longitudes_land_where_they_should(store_path,
                                                                          tmp_path):
    """A grid stored north to south with longitudes 0…360: every batch cell carries its own
    coordinates and data, and a prediction scattered back by cell index lands on them."""
    from h2mv_hybrid.data.gridding import scatter

    ds = open_store(store_path).load()
    flipped = ds.isel(lat=slice(None, None, -1))
    flipped = flipped.assign_coords(lon=flipped["lon"] % 360).sortby("lon")
    assert flipped["lat"].values[0] > flipped["lat"].values[-1] and flipped["lon"].min() >= 0
    for v in flipped.variables.values():
        v.encoding = {}
    path = tmp_path / "flipped.zarr"
    write_store(flipped, None, path)
    dm = dm_for(path)
    got = open_store(path)
    seen = 0
    for batch in dm.train_dataloader():
        rows, cols = np.divmod(batch["cell_index"].numpy(), got.sizes["lon"])
        for i in range(len(rows)):
            lat, lon = float(batch["lat"][i]), float(batch["lon"][i])
            # the same geographic cell in the original store (longitude back to −180…180)
            orig = ds.sel(lat=lat, lon=(lon + 180) % 360 - 180)
            np.testing.assert_array_equal(batch["forcing"][i, :, 1].numpy(), orig["prec"].values)
            np.testing.assert_array_equal(batch["static"][i].numpy(), orig["static"].values)
            assert float(got["lat"][rows[i]]) == lat and float(got["lon"][cols[i]]) == lon
            seen += 1
        # a per-cell value scattered by cell index lands at the batch cell's coordinates
        mapped = np.asarray(scatter(batch["lat"].numpy()[:, None], batch["cell_index"].numpy(),
                                    (got.sizes["lat"], got.sizes["lon"]), (8, 8)))[..., 0]
        np.testing.assert_array_equal(mapped[rows, cols], batch["lat"].numpy())
    assert seen == int(dm.cells("train").sum())
    assert set(np.unique(dm.folds.values[got["mask"].values])) >= set(range(4))
