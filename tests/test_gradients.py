"""Gradients of the process layer: gradcheck in float64 and finiteness over long runs."""

import torch
from conftest import kinky_case, site_case

from process_layers import FLUX_NAMES, h2mv
from process_layers.parameters import ALPHA_NAMES


def _wrap(forcing, backend, states=None):
    """simulate as a function of (α…, SM_max, β_snow, β_gw) returning every flux."""
    def fn(*params):
        alpha = dict(zip(ALPHA_NAMES, params[:7]))
        static = {"sm_max": params[7]}
        beta = {"snow": params[8], "baseflow": params[9]}
        f = h2mv.simulate(forcing, alpha, static, beta, states, backend=backend)
        return tuple(f[k] for k in FLUX_NAMES)
    return fn


def _params(alpha, static, beta):
    ps = [alpha[k] for k in ALPHA_NAMES] + [static["sm_max"], beta["snow"], beta["baseflow"]]
    return [p.detach().clone().requires_grad_() for p in ps]


def test_gradcheck_alpha_smmax_beta(backend):
    forcing, alpha, static, beta, states = kinky_case()
    # the soil-full cell must refill up to its capacity for SM_max to matter
    params = _params(alpha, static, beta)
    f = _wrap(forcing, backend, states)(*params)
    r_soil_frac = f[FLUX_NAMES.index("r_soil_frac")]
    assert bool((r_soil_frac < params[4] * 0.999).any())  # capacity-limited recharge happened
    assert bool(((forcing["prec"] == 0) & (forcing["tair"] > 273.15)).any())  # rainless days
    assert bool((forcing["tair"] < 273.15).any())  # frozen days
    assert torch.autograd.gradcheck(_wrap(forcing, backend, states), params,
                                    eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_from_empty_states(backend):
    forcing, alpha, static, beta, _ = kinky_case()
    params = _params(alpha, static, beta)
    assert torch.autograd.gradcheck(_wrap(forcing, backend, None), params,
                                    eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_initial_states(backend):
    forcing, alpha, static, beta, states = kinky_case()
    states = {k: (v + 0.5).requires_grad_() for k, v in states.items()}  # interior points
    states["sm"] = torch.minimum(states["sm"].detach(), static["sm_max"] - 1).requires_grad_()

    def fn(swe, sm, gw):
        f = h2mv.simulate(forcing, alpha, static, beta, {"swe": swe, "sm": sm, "gw": gw},
                          backend=backend, validate_inputs=False)
        return f.tws, f.q_total, f.ET

    assert torch.autograd.gradcheck(fn, (states["swe"], states["sm"], states["gw"]),
                                    eps=1e-6, atol=1e-5, rtol=1e-4)


def test_no_nonfinite_gradient_over_ten_years(backend):
    forcing, alpha, static, beta = site_case(10, 3650, seed=11)
    # α pushed to their bounds in places (sigmoid saturation), zero-rain and frozen spells
    alpha["r_soil"][:, ::50] = 1.0
    alpha["Es"][:, ::70] = 0.0
    alpha["fapar"][:, ::30] = 1.0
    params = _params(alpha, static, beta)
    f = _wrap(forcing, backend)(*params)
    loss = sum((x ** 2).mean() for x in f)
    grads = torch.autograd.grad(loss, params)
    for name, g in zip(list(ALPHA_NAMES) + ["sm_max", "beta_snow", "beta_gw"], grads):
        assert bool(torch.isfinite(g).all()), name
    assert float(grads[7].abs().sum()) > 0  # SM_max is exercised
