"""The nonlinear groundwater outflow A21′ (``baseflow_half``, K_gw): equation, kernels, model."""

import pytest
import torch
from conftest import kinky_case, site_case
from helpers.small_hybrid import feedback_scan_params, site_inputs, small_hybrid

from h2mv_hybrid.model import feedback
from process_layers import FLUX_NAMES, h2mv, runoff, water_balance
from process_layers.parameters import ALPHA_NAMES

D = torch.float64


def T(*x):
    return torch.tensor(x, dtype=D)


def test_outflow_by_hand():
    # β GW² / (GW + K): 0.05 · 200² / 250 = 8 mm/day (the linear A21 gives 10)
    torch.testing.assert_close(runoff.baseflow(T(200.0), T(0.05), T(50.0)), T(8.0))
    torch.testing.assert_close(runoff.baseflow(T(200.0), T(0.05)), T(10.0))
    # an empty store gives nothing; a store far above K drains almost linearly
    torch.testing.assert_close(runoff.baseflow(T(0.0), T(0.05), T(50.0)), T(0.0))
    torch.testing.assert_close(runoff.baseflow(T(1e6), T(0.05), T(1.0)), T(0.05 * 1e12 / (1e6 + 1)))
    # far below K it is quadratic: halving the store quarters the outflow (almost)
    q1, q2 = runoff.baseflow(T(2.0, 1.0), T(0.1), T(1000.0))
    assert abs(float(q1 / q2) - 4.0) < 0.01


def test_recession_by_hand_in_both_backends(backend):
    """No water input: GW 100 → 95 → 95 − 0.1 · 95² / 195, as worked out by hand."""
    cells, days = 1, 3
    forcing = {"rn": torch.zeros(cells, days, dtype=D), "prec": torch.zeros(cells, days, dtype=D),
               "tair": torch.full((cells, days), 283.15, dtype=D)}
    alpha = {k: torch.full((cells, days), 0.5, dtype=D) for k in ALPHA_NAMES}
    beta = {"snow": T(0.9)[0], "baseflow": T(0.1)[0], "baseflow_half": T(100.0)}
    states = {"swe": T(0.0), "sm": T(0.0), "gw": T(100.0)}
    f = h2mv.simulate(forcing, alpha, {"sm_max": T(50.0)}, beta, states, backend=backend)
    q2 = 0.1 * 95.0 ** 2 / 195.0
    q3 = 0.1 * (95.0 - q2) ** 2 / (195.0 - q2)
    torch.testing.assert_close(f.q_base[0], T(5.0, q2, q3), rtol=0, atol=1e-12)
    torch.testing.assert_close(f.gw[0], T(95.0, 95.0 - q2, 95.0 - q2 - q3), rtol=0, atol=1e-12)
    # the linear store recedes faster from 100 mm here: the rate 0.1 vs 0.1 · GW / (GW + K)
    lin = h2mv.simulate(forcing, alpha, {"sm_max": T(50.0)},
                        {"snow": beta["snow"], "baseflow": beta["baseflow"]}, states,
                        backend=backend)
    assert bool((lin.q_base[0, 1:] > f.q_base[0, 1:]).all())


def test_gradcheck_of_the_outflow_at_its_boundaries():
    """Empty, small, equal-to-K and large stores; gradients finite at GW = 0."""
    gw = T(0.0, 1e-3, 5.0, 50.0, 5000.0).requires_grad_()
    beta = T(0.01, 0.2, 0.5, 0.05, 0.9).requires_grad_()
    half = T(0.5, 10.0, 5.0, 1000.0, 3.0).requires_grad_()
    assert torch.autograd.gradcheck(runoff.baseflow, (gw, beta, half), eps=1e-7, atol=1e-7)
    g = torch.autograd.grad(runoff.baseflow(gw, beta, half).sum(), (gw, beta, half))
    assert all(bool(torch.isfinite(x).all()) for x in g)
    assert float(g[0][0]) == 0.0  # ∂q/∂GW = β r (2 − r) = 0 in an empty store


def _wrap(forcing, backend, states):
    def fn(*params):
        alpha = dict(zip(ALPHA_NAMES, params[:7], strict=True))
        beta = {"snow": params[8], "baseflow": params[9], "baseflow_half": params[10]}
        f = h2mv.simulate(forcing, alpha, {"sm_max": params[7]}, beta, states, backend=backend)
        return tuple(f[k] for k in FLUX_NAMES)
    return fn


def test_gradcheck_of_the_bucket_with_a_per_cell_half_storage(backend):
    """α, SM_max, β and K_gw [cells] of the series, the large and the empty store included."""
    forcing, alpha, static, beta, states = kinky_case()
    half = T(2.0, 30.0, 0.7, 150.0)
    params = [*(alpha[k] for k in ALPHA_NAMES), static["sm_max"], beta["snow"],
              beta["baseflow"], half]
    params = [p.detach().clone().requires_grad_() for p in params]
    for st in (states, None):
        assert torch.autograd.gradcheck(_wrap(forcing, backend, st), params,
                                        eps=1e-6, atol=1e-5, rtol=1e-4)


def test_fused_equals_loop_and_the_balance_closes_over_ten_years():
    forcing, alpha, static, beta = site_case(6, 3650, seed=3)
    beta = {**beta, "baseflow": torch.full((6,), 0.08, dtype=D),
            "baseflow_half": T(1.0, 5.0, 20.0, 80.0, 300.0, 900.0).requires_grad_()}
    initial = h2mv.initial_states(6, dtype=D)
    out = {}
    for backend in ("fused", "loop"):
        half = beta["baseflow_half"].detach().clone().requires_grad_()
        f = h2mv.simulate(forcing, alpha, static, {**beta, "baseflow_half": half}, initial,
                          backend=backend)
        (f.q_total.sum() + 0.01 * f.tws.sum()).backward()
        out[backend] = f, half.grad
        wb = water_balance(f, initial)
        assert float(wb.residual.detach().abs().max()) < 1e-9, backend
    (f0, g0), (f1, g1) = out["fused"], out["loop"]
    for k in FLUX_NAMES:
        torch.testing.assert_close(f0[k], f1[k], rtol=0, atol=1e-9, msg=k)
    torch.testing.assert_close(g0, g1, rtol=1e-9, atol=1e-9)
    assert bool((g0 != 0).all())
    # K matters: at every storage a larger K drains a smaller share, so the store ends
    # higher in every cell (recharge does not depend on GW)
    with torch.no_grad():
        f4 = h2mv.simulate(forcing, alpha, static, {**beta, "baseflow_half": (4 * half).clamp(max=1000.0)},
                           initial)
    assert bool((f4.gw[:, -1] > f0.gw[:, -1]).all())


def test_validation_names_an_out_of_range_half_storage():
    forcing, alpha, static, beta, _ = kinky_case()
    with pytest.raises(ValueError, match=r"beta\['baseflow_half'\]: expected values in "):
        h2mv.simulate(forcing, alpha, static, {**beta, "baseflow_half": T(0.1)})
    with pytest.raises(ValueError, match="unknown 'recession'"):
        h2mv.simulate(forcing, alpha, static, {**beta, "recession": T(0.1)})
    with pytest.raises(ValueError, match="missing 'baseflow'"):
        h2mv.simulate(forcing, alpha, static, {"snow": beta["snow"], "baseflow_half": T(5.0)})


def _model_run(backend, forcing, static, **kw):
    m = small_hybrid(D, feedback_backend=backend, nonlinear_baseflow=True, **kw)
    out = m(forcing, static)
    loss = sum((v * torch.linspace(0.5, 1.5, v.shape[1], dtype=D)).sum()
               for v in out.daily.values()) * 1e-3 + out.carry.gw.sum()
    loss.backward()
    return out, {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("settings", [{}, {"elevation_bands": 2, "basin_baseflow": True},
                                      {"time_chunk": 9}])
def test_hybrid_fused_equals_loop_and_learns_the_half_storage(settings):
    forcing, static = site_inputs(6, 40, 4, D)
    fused = _model_run("fused", forcing, static, **settings)
    loop = _model_run("loop", forcing, static, **settings)
    for k in fused[0].daily:
        torch.testing.assert_close(fused[0].daily[k], loop[0].daily[k], rtol=0, atol=1e-10,
                                   msg=k)
    for n, g in loop[1].items():
        s = float(g.abs().max()) + 1.0
        torch.testing.assert_close(fused[1][n] / s, g / s, rtol=0, atol=1e-10, msg=n)
    half = fused[0].beta["baseflow_half"]
    assert half.shape == (6,) and bool((half > 0.5).all()) and half.std() > 0
    assert fused[1]["baseflow_half_head.weight"].abs().sum() > 0


def test_decoupled_hybrid_runs_the_half_storage_through_the_series_kernel():
    forcing, static = site_inputs(6, 40, 5, D)
    fused = _model_run("auto", forcing, static, state_feedback=False)
    m = small_hybrid(D, state_feedback=False, nonlinear_baseflow=True)
    out = m(forcing, static)
    ref = h2mv.simulate({"rn": forcing[..., 0], "prec": forcing[..., 1],
                         "tair": forcing[..., 2]}, out.alpha, {"sm_max": out.sm_max},
                        out.beta, backend="loop")
    torch.testing.assert_close(fused[0].daily["q_base"], ref.q_base, rtol=0, atol=1e-10)
    g = torch.autograd.grad(ref.q_base.sum(), m.baseflow_half_head.weight)[0]
    assert g.abs().sum() > 0


def test_without_the_option_the_model_is_the_papers():
    """Off by default: no K_gw head, no K_gw in β, and the linear outflow's values."""
    forcing, static = site_inputs(4, 20, 6, D)
    m = small_hybrid(D)
    assert m.baseflow_half_head is None
    out = m(forcing, static)
    assert "baseflow_half" not in out.beta
    gw_prev = torch.cat([torch.zeros(4, 1, dtype=D), out.daily["gw"][:, :-1]], 1)
    torch.testing.assert_close(out.daily["q_base"], gw_prev * out.beta["baseflow"],
                               rtol=0, atol=1e-12)


def test_gradcheck_of_the_fused_recurrence_in_the_half_storage():
    g = torch.Generator().manual_seed(1)
    cells, days, hidden = 3, 6, 4
    forcing, _ = site_inputs(cells, days, 2, D)
    f_norm = torch.randn(cells, days, 3, generator=g, dtype=D)
    params = feedback_scan_params(g, cells, hidden)
    # β_gw per cell, and K_gw [cells] last
    params[6] = (0.05 + 0.2 * torch.rand(cells, generator=g, dtype=D)).requires_grad_(True)
    params.append((1 + 30 * torch.rand(cells, generator=g, dtype=D)).requires_grad_(True))
    for chunk in (None, 4):
        def fn(*p, chunk=chunk):
            return feedback.FeedbackScan.apply(True, chunk, f_norm, forcing, 10.0, *p)

        assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_the_learned_half_storage_is_a_store_variable_in_mm():
    """A predict record's per-cell K_gw becomes ``beta_baseflow_half`` (mm) in the store."""
    from h2mv_hybrid.callbacks.prediction import record_variables

    forcing, static = site_inputs(3, 10, 1, D)
    out = small_hybrid(D, nonlinear_baseflow=True, basin_baseflow=True)(forcing, static)
    beta = {k: v.detach() for k, v in out.beta.items()}
    record = {"daily": {}, "cells": {f"beta_{k}": v for k, v in beta.items() if v.dim()},
              "beta": {k: float(v) for k, v in beta.items() if not v.dim()}}
    found = {v.name: v for v in record_variables(record)}
    assert found["beta_baseflow_half"].attrs["units"] == "mm"
    assert found["beta_baseflow_half"].values(record).shape == (3,)
    assert found["beta_baseflow"].attrs["units"] == "day⁻¹"
