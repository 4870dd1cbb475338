"""The groundwater export (``basin_gw_export``, f_ex): equation, model, balance, store."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from helpers.small_hybrid import site_inputs, small_hybrid

from h2mv_hybrid.analysis.catchments import water_balance
from process_layers import runoff

D = torch.float64


def T(*x):
    return torch.tensor(x, dtype=D)


def test_export_by_hand():
    # a quarter of 2 mm leaves, none of an empty store's, none at f = 0
    channel, exported = runoff.groundwater_export(T(2.0, 0.0, 4.0), T(0.25, 0.5, 0.0))
    torch.testing.assert_close(channel, T(1.5, 0.0, 4.0), rtol=0, atol=0)
    torch.testing.assert_close(exported, T(0.5, 0.0, 0.0), rtol=0, atol=0)


def test_gradcheck_of_the_export_at_its_boundaries():
    """No outflow, no export, the largest export; gradients finite everywhere."""
    q = T(0.0, 1e-6, 3.0, 40.0).requires_grad_()
    f = T(0.3, 0.0, 0.95, 0.5).requires_grad_()
    assert torch.autograd.gradcheck(runoff.groundwater_export, (q, f), eps=1e-7, atol=1e-7)
    g = torch.autograd.grad(sum(x.sum() for x in runoff.groundwater_export(q, f)), (q, f))
    assert all(bool(torch.isfinite(x).all()) for x in g)


def _run(**kw):
    forcing, static = site_inputs(5, 400, 7, D)
    m = small_hybrid(D, routing_days=6, **kw)
    if m.export_head is not None:
        with torch.no_grad():  # about half exported (× 3 put it near none)
            m.export_head.bias.zero_()
    return m(forcing, static)


@pytest.mark.parametrize("settings", [{}, {"elevation_bands": 2, "basin_baseflow": True},
                                      {"state_feedback": False}])
def test_the_export_takes_its_share_of_the_outflow_and_nothing_else(settings):
    """Same weights with and without the option (its head is built last): the store and
    the surface runoff are unchanged, the outflow is split by f_ex, and the river gets
    the rest."""
    off, on = _run(**settings), _run(basin_gw_export=True, **settings)
    f = on.exchange["gw_export"]
    assert f.shape == (5,) and bool(((f > 0.3) & (f < 0.7)).all()) and f.std() > 0
    d0, d1 = off.daily, on.daily
    for k in ("gw", "sm", "swe", "q_surf", "ET"):
        torch.testing.assert_close(d1[k], d0[k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(d1["q_export"], f[:, None] * d0["q_base"], rtol=1e-12, atol=0)
    torch.testing.assert_close(d1["q_base"] + d1["q_export"], d0["q_base"], rtol=1e-12, atol=0)
    torch.testing.assert_close(d1["q_total"], d1["q_surf"] + d1["q_base"], rtol=1e-12, atol=0)
    assert float(d1["q_export"].detach().sum()) > 0
    # the river's smaller runoff is what is routed
    assert float(d1["q_routed"].detach().sum()) < float(d0["q_routed"].detach().sum())
    assert off.exchange is None and "q_export" not in d0


def test_the_export_share_learns():
    forcing, static = site_inputs(4, 90, 8, D)
    m = small_hybrid(D, routing_days=6, basin_gw_export=True)
    m(forcing, static).daily["q_routed"].sum().backward()
    assert float(m.export_head.weight.grad.abs().sum()) > 0
    assert float(m.export_head.bias.grad) < 0  # less export, more runoff at the gauge


def _ensemble(out) -> xr.Dataset:
    names = ("rainfall", "snow_acc", "ET", "q_total", "q_routed", "q_export", "q_base", "tws",
             "routing_store")
    return xr.Dataset({k: (("member", "time", "cell"), out.daily[k].detach().T[None].numpy())
                       for k in names if k in out.daily})


def test_the_catchment_balance_closes_with_the_export():
    """P − ET − Q − export − ΔS (routing store included) is zero; leaving the export out of
    the balance leaves exactly its sum as the residual."""
    out = _run(basin_gw_export=True)
    ens = _ensemble(out)
    wb = water_balance(ens)
    assert float(np.abs(wb["residual"]).max()) < 1e-9
    lost = ens["q_export"].isel(time=slice(1, None)).sum("time")
    without = water_balance(ens.drop_vars("q_export"))
    np.testing.assert_allclose(without["residual"], lost, rtol=1e-9, atol=1e-10)
    assert float(lost.min()) > 0


def test_the_export_share_is_a_store_variable():
    from h2mv_hybrid.callbacks.prediction import output_metadata, record_variables

    out = _run(basin_gw_export=True)
    record = {"daily": {"q_export": out.daily["q_export"].detach()},
              "cells": {k: v.detach() for k, v in out.exchange.items()}}
    found = {v.name: v for v in record_variables(record)}
    assert found["gw_export"].values(record).shape == (5,)
    assert found["gw_export"].attrs["long_name"] == "learned f_ex"
    assert output_metadata("q_export", record)[0] == "mm day-1"


def test_the_patterns_list_the_export_beside_the_runoff_ratio():
    from h2mv_hybrid.analysis.catchments import emergent_patterns, pattern_correlations

    rng = np.random.default_rng(1)
    cells, days = 4, 30
    time = pd.date_range("2000-01-01", periods=days)
    dims = ("member", "time", "cell")
    ens = xr.Dataset({k: (dims, rng.uniform(0.1, 1.0, (2, days, cells)))
                      for k in ("ET", "q_total", "q_base")},
                     coords={"time": time})
    ens["sm_max"] = (("member", "cell"), np.full((2, cells), 100.0))
    ens["gw_export"] = (("member", "cell"), np.array([[0.1, 0.2, 0.3, 0.4], [0.3, 0.4, 0.5, 0.6]]))
    store = xr.Dataset({k: (("cell", "time"), rng.uniform(0.5, 3.0, (cells, days)))
                        for k in ("prec", "pet", "q")},
                       coords={"time": time, "gauge_id": ("cell", list("abcd")),
                               "lat": ("cell", np.zeros(cells)), "lon": ("cell", np.zeros(cells))})
    attrs = xr.Dataset({"runoff_ratio": ("cell", [0.6, 0.5, 0.4, 0.3])})
    table = emergent_patterns(ens, store, attrs)
    np.testing.assert_allclose(table["model_gw_export"], [0.2, 0.3, 0.4, 0.5])  # member mean
    c = pattern_correlations(table).set_index(["model", "reference"])
    assert c.loc[("model_gw_export", "camels_runoff_ratio"), "spearman_rho"] == pytest.approx(-1.0)


def test_a_constraint_on_the_export_needs_the_option():
    from h2mv_hybrid.model.module import H2MVHybrid

    on_export = [{"target": "q", "output": "q_export"}]
    with pytest.raises(ValueError, match="found q: 'q_export'"):
        H2MVHybrid.check_options({"constraints": on_export})
    H2MVHybrid.check_options({"constraints": on_export,
                              "network": {"basin_gw_export": True}})
