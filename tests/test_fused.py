"""The fused scan matches the per-day loop: values, gradients, chunking, fallbacks."""

import pytest
import torch
from conftest import kinky_case, random_alpha, site_case

from process_layers import FLUX_NAMES, h2mv
from process_layers.parameters import ALPHA_NAMES


def _loss_and_grads(forcing, alpha, static, beta, states, backend, weights, forcing_grad=()):
    alpha = {k: v.detach().clone().requires_grad_() for k, v in alpha.items()}
    static = {"sm_max": static["sm_max"].detach().clone().requires_grad_()}
    beta = {k: v.detach().clone().requires_grad_() for k, v in beta.items()}
    states = {k: v.detach().clone().requires_grad_() for k, v in states.items()}
    forcing = {k: v.detach().clone().requires_grad_(k in forcing_grad)
               for k, v in forcing.items()}
    f = h2mv.simulate(forcing, alpha, static, beta, states, backend=backend)
    loss = sum((w * f[k]).sum() for k, w in weights.items())
    leaves = [*alpha.values(), static["sm_max"], *beta.values(), *states.values(),
              *(forcing[k] for k in forcing_grad)]
    return f, torch.autograd.grad(loss, leaves)


def _assert_backends_agree(forcing, alpha, static, beta, states, weights, forcing_grad=()):
    """Values to 1e-13 and gradients to 1e-10 (float64): the same arithmetic, twice."""
    f0, g0 = _loss_and_grads(forcing, alpha, static, beta, states, "loop", weights,
                             forcing_grad)
    f1, g1 = _loss_and_grads(forcing, alpha, static, beta, states, "fused", weights,
                             forcing_grad)
    assert len(g1) == len(g0) == 7 + 1 + len(beta) + 3 + len(forcing_grad)
    for k in FLUX_NAMES:
        torch.testing.assert_close(f1[k], f0[k], rtol=1e-13, atol=1e-12, msg=k)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", ["kinky", "sites"])
def test_fused_equals_loop_float64(case):
    if case == "kinky":
        forcing, alpha, static, beta, states = kinky_case()
    else:
        forcing, alpha, static, beta = site_case(7, 800, seed=3)
        states = {k: v + 1.0 for k, v in h2mv.initial_states(7, dtype=torch.float64).items()}
    g = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(forcing["rn"].shape, generator=g, dtype=torch.float64)
               for k in FLUX_NAMES}
    _assert_backends_agree(forcing, alpha, static, beta, states, weights)


def test_fused_equals_loop_at_bounds_and_ties():
    """α exactly at 0 and 1 and exact ties of the min/max: same subgradient on both paths."""
    forcing, _, static, beta = site_case(6, 300, seed=4)
    g = torch.Generator().manual_seed(1)
    alpha = {k: (torch.rand(6, 300, generator=g) > 0.5).double() for k in ALPHA_NAMES}
    states = {"swe": torch.zeros(6, dtype=torch.float64), "sm": static["sm_max"].clone(),
              "gw": torch.zeros(6, dtype=torch.float64)}
    weights = {k: torch.ones(6, 300, dtype=torch.float64) for k in ("ET", "q_total", "tws", "EF")}
    _assert_backends_agree(forcing, alpha, static, beta, states, weights)


@pytest.mark.parametrize("case", ["kinky", "sites", "ties"])
def test_fused_gradients_of_precipitation_and_temperature_equal_loop(case):
    """prec and tair receive the loop's gradients (a per-basin rain factor or snow offset).

    Every flux is weighted, rainfall included (its cotangent reaches prec only now); in
    "ties" the interception capacity equals the rain on some days and tair sits at
    exactly 0 °C on others, where torch's clamp passes melt's gradient to tair.
    """
    if case == "kinky":
        forcing, alpha, static, beta, states = kinky_case()
    else:
        forcing, alpha, static, beta = site_case(7, 500, seed=11)
        states = {k: v + 1.0 for k, v in h2mv.initial_states(7, dtype=torch.float64).items()}
    if case == "ties":
        forcing = dict(forcing)
        tair = forcing["tair"].clone()
        tair[:, ::9] = 273.15
        forcing["tair"] = tair
        alpha = dict(alpha)
        alpha["Ei"] = torch.where(alpha["fapar"] > 0, forcing["prec"] / alpha["fapar"],
                                  alpha["Ei"])[:, :].clone()
        assert bool(((forcing["tair"] - 273.15) == 0).any())
    g = torch.Generator().manual_seed(2)
    weights = {k: torch.randn(forcing["rn"].shape, generator=g, dtype=torch.float64)
               for k in FLUX_NAMES}
    _assert_backends_agree(forcing, alpha, static, beta, states, weights,
                           forcing_grad=("prec", "tair"))
    _, grads = _loss_and_grads(forcing, alpha, static, beta, states, "fused", weights,
                               forcing_grad=("prec", "tair"))
    g_prec, g_tair = grads[-2:]
    assert float(g_prec.abs().sum()) > 0 and float(g_tair.abs().sum()) > 0


def test_gradcheck_of_the_fused_scan_in_the_forcing():
    """Finite differences of prec and tair in float64.

    Off the forcing's own kinks: 0 °C, where snowfall steps, and rainless days, where
    Ei = min(rain, …) meets zero energy from one side only.
    """
    from process_layers.fused import FusedScan

    forcing, alpha, static, beta, states = kinky_case()
    params = [*(alpha[k][:, :8] for k in ALPHA_NAMES), static["sm_max"], beta["snow"],
              beta["baseflow"], states["swe"] + 1.0, states["sm"] + 1.0, states["gw"] + 1.0]
    prec = (forcing["prec"][:, :8] + 0.5).requires_grad_()
    tair = forcing["tair"][:, :8].clone().requires_grad_()

    def fn(p, t):
        return FusedScan.apply(forcing["rn"][:, :8], p, t, *params)

    assert torch.autograd.gradcheck(fn, (prec, tair), eps=1e-6, atol=1e-6, rtol=1e-5,
                                    check_undefined_grad=False)


def test_fused_equals_loop_float32():
    forcing, alpha, static, beta = site_case(8, 730, seed=5, dtype=torch.float32)
    alpha = {k: v.float() for k, v in random_alpha(8, 730, seed=6).items()}
    states = {k: v for k, v in h2mv.initial_states(8).items()}
    weights = {"ET": 1.0, "q_total": 1.0, "tws": 0.01}
    f0, g0 = _loss_and_grads(forcing, alpha, static, beta, states, "loop", weights)
    f1, g1 = _loss_and_grads(forcing, alpha, static, beta, states, "fused", weights)
    for k in FLUX_NAMES:
        assert f1[k].dtype == torch.float32
        torch.testing.assert_close(f1[k], f0[k], rtol=1e-4, atol=1e-3, msg=k)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_chunked_simulation_matches_whole(backend):
    """Two chunks with carried states reproduce one run, values and gradients alike."""
    forcing, alpha, static, beta = site_case(5, 400, seed=8)
    alpha = {k: v.requires_grad_() for k, v in alpha.items()}
    whole = h2mv.simulate(forcing, alpha, static, beta, backend=backend)
    g_whole = torch.autograd.grad(whole.q_total.sum() + whole.tws.sum(), list(alpha.values()))
    cut = 150
    first = h2mv.simulate({k: v[:, :cut] for k, v in forcing.items()},
                          {k: v[:, :cut] for k, v in alpha.items()}, static, beta,
                          backend=backend)
    second = h2mv.simulate({k: v[:, cut:] for k, v in forcing.items()},
                           {k: v[:, cut:] for k, v in alpha.items()}, static, beta,
                           first.final_states(), backend=backend, validate_inputs=False)
    loss = (first.q_total.sum() + second.q_total.sum() + first.tws.sum() + second.tws.sum())
    g_chunks = torch.autograd.grad(loss, list(alpha.values()))
    torch.testing.assert_close(torch.cat([first.tws, second.tws], 1), whole.tws)
    for a, b in zip(g_chunks, g_whole):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_step_loop_equals_simulate():
    forcing, alpha, static, beta, states = kinky_case()
    series = h2mv.simulate(forcing, alpha, static, beta, states)
    st = states
    for t in range(forcing["rn"].shape[1]):
        f, st = h2mv.step({k: v[:, t] for k, v in forcing.items()},
                          {k: v[:, t] for k, v in alpha.items()}, static, beta, st)
        for k in FLUX_NAMES:
            torch.testing.assert_close(f[k], series[k][:, t], rtol=1e-13, atol=1e-12, msg=k)


def test_backend_selection_and_fallbacks():
    forcing, alpha, static, beta, states = kinky_case()
    forcing = {k: v.clone().requires_grad_() for k, v in forcing.items()}
    with pytest.raises(ValueError, match="rn requires a gradient"):
        h2mv.simulate(forcing, alpha, static, beta, states, backend="fused")
    # prec and tair alone: the fused adjoint differentiates them
    data_rn = {**forcing, "rn": forcing["rn"].detach()}
    f = h2mv.simulate(data_rn, alpha, static, beta, states, backend="fused")
    g_prec, g_tair = torch.autograd.grad(f.q_total.sum(), [forcing["prec"], forcing["tair"]])
    assert float(g_prec.abs().sum()) > 0 and float(g_tair.abs().sum()) > 0
    # auto falls back to the loop, which differentiates the forcing too
    f = h2mv.simulate(forcing, alpha, static, beta, states, backend="auto")
    (g,) = torch.autograd.grad(f.ET.sum(), [forcing["rn"]])
    assert float(g.abs().sum()) > 0
    with pytest.raises(ValueError, match="backend: expected one of auto, fused, loop"):
        h2mv.simulate(forcing, alpha, static, beta, states, backend="jit")


def test_low_precision_parameters_run_in_float32():
    forcing, alpha, static, beta, states = kinky_case(dtype=torch.float32)
    alpha = {k: v.to(torch.bfloat16) for k, v in alpha.items()}
    f = h2mv.simulate(forcing, alpha, static, beta, states)
    assert f.tws.dtype == torch.float32


def test_fused_is_used_by_auto_on_cpu(monkeypatch):
    from process_layers import fused

    calls = []
    original = fused.FusedScan.apply
    monkeypatch.setattr(fused.FusedScan, "apply", lambda *a: calls.append(1) or original(*a))
    forcing, alpha, static, beta, states = kinky_case()
    h2mv.simulate(forcing, alpha, static, beta, states)
    assert calls == [1]
