"""Routing (gamma unit hydrograph), signatures (baseflow index, runoff ratio) and NSE*."""

import math

import numpy as np
import pytest
import torch

from h2mv_hybrid.constraints import Constraint
from h2mv_hybrid.model.losses import MultiConstraintLoss, nse_star
from h2mv_hybrid.signatures import (
    SIGNATURE_SCALE,
    baseflow_index,
    lyne_hollick,
    modelled_signature,
    observed_signature,
    runoff_ratio,
    signature_loss,
)
from process_layers import routing

D = torch.float64


# -- routing ------------------------------------------------------------------------------
def test_gamma_kernel_by_hand_sums_to_one_and_routes_an_impulse():
    w = routing.gamma_kernel(torch.tensor([1.0], dtype=D), torch.tensor([1.0], dtype=D), 3)
    raw = np.exp(-np.array([0.5, 1.5, 2.5]))  # a = 1: t^0 e^{-t/θ}
    np.testing.assert_allclose(w[0].numpy(), raw / raw.sum(), rtol=1e-14)
    impulse = torch.tensor([[3.0, 0.0, 0.0, 0.0, 0.0]], dtype=D)
    y = routing.route(impulse, torch.zeros(1, 2, dtype=D), w)
    np.testing.assert_allclose(y[0].numpy(), [*(3 * raw / raw.sum()), 0.0, 0.0], rtol=1e-14)
    # the water in transit: 3 − what has left so far
    s = routing.routing_storage(impulse, torch.zeros(1, 2, dtype=D), w)
    np.testing.assert_allclose(s[0].numpy(), 3 - np.cumsum(y[0].numpy()), atol=1e-14)
    many = routing.gamma_kernel(torch.tensor([0.5, 2.0, 6.0], dtype=D),
                                torch.tensor([0.2, 3.0, 10.0], dtype=D), 30)
    assert (many >= 0).all()
    torch.testing.assert_close(many.sum(1), torch.ones(3, dtype=D), rtol=0, atol=1e-14)


def _case(cells=3, days=200, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(cells, days, generator=g, dtype=D) ** 3 * 20
    q[:, 50:70] = 0.0  # dry days
    hist = torch.rand(cells, k - 1, generator=g, dtype=D) * 5
    w = routing.gamma_kernel(1 + 3 * torch.rand(cells, generator=g, dtype=D),
                             0.5 + torch.rand(cells, generator=g, dtype=D), k)
    return q, hist, w


def test_routing_conserves_water_and_splits_like_the_whole_series():
    q, hist, w = _case()
    y = routing.route(q, hist, w)
    s = routing.routing_storage(q, hist, w)
    s0 = routing.initial_storage(hist, w)
    # day by day: S_t − S_{t−1} = q_t − y_t
    change = torch.diff(torch.cat([s0[:, None], s], 1), dim=1)
    torch.testing.assert_close(change, q - y, rtol=0, atol=1e-12)
    # over the period: what went in left, or is in transit
    torch.testing.assert_close(q.sum(1) - y.sum(1), s[:, -1] - s0, rtol=0, atol=1e-10)
    # in two spans, the second starting from the first's history
    a = routing.route(q[:, :77], hist, w)
    b = routing.route(q[:, 77:], routing.next_history(q[:, :77], hist), w)
    torch.testing.assert_close(torch.cat([a, b], 1), y, rtol=0, atol=1e-12)


def test_routing_gradcheck_float64_and_finite_on_dry_days():
    q, hist, _ = _case(cells=2, days=25, k=6)
    shape = torch.tensor([1.5, 3.0], dtype=D, requires_grad=True)
    scale = torch.tensor([0.7, 2.0], dtype=D, requires_grad=True)
    qq = q.clone().requires_grad_(True)

    def f(a, th, x):
        w = routing.gamma_kernel(a, th, 6)
        return routing.route(x, hist, w), routing.routing_storage(x, hist, w)

    assert torch.autograd.gradcheck(f, (shape, scale, qq))
    dry = torch.zeros(2, 25, dtype=D)
    y, s = f(shape, scale, dry)
    (y.sum() + s.sum()).backward()
    assert torch.isfinite(shape.grad).all() and torch.isfinite(scale.grad).all()


@pytest.mark.parametrize("feedback", [True, False])
def test_hybrid_with_routing_closes_the_balance_with_the_routing_store(feedback):
    from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
    from h2mv_hybrid.sites import site_forcing

    torch.manual_seed(0)
    m = HybridH2MV(4, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * 4, [1.0] * 4,
                   HybridSettings(lstm_hidden=8, state_feedback=feedback, routing_days=30))
    m = m.double()
    f = site_forcing(5, 400, seed=3)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1).double()
    static = torch.randn(5, 4, dtype=D)
    carry, hist = m.spinup_state(forcing[:, :100], static)
    assert hist.shape == (5, 29)
    out = m(forcing[:, 100:], static, carry, hist)
    d = out.daily
    s0 = routing.initial_storage(hist, routing.gamma_kernel(
        out.routing["route_shape"], out.routing["route_scale"], 30))
    inflow = (d["rainfall"] + d["snow_acc"] - d["ET"] - d["q_routed"]).sum(1)
    change = (d["tws"][:, -1] + d["routing_store"][:, -1]) - (
        carry.swe + carry.sm + carry.gw + s0)
    torch.testing.assert_close(inflow, change, rtol=0, atol=1e-9)
    assert 0.5 <= float(out.routing["route_shape"].detach().min()) <= 6.0
    d["q_routed"].sum().backward()
    grads = [p.grad for p in m.routing_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


# -- signatures ---------------------------------------------------------------------------
def test_lyne_hollick_one_pass_by_hand():
    # α = 0.5: f_t = 0.5 f_{t−1} + 0.75 (q_t − q_{t−1}) within [0, q_t]; b = q − f
    b = lyne_hollick(np.array([1.0, 3.0, 2.0, 1.0]), alpha=0.5, passes=1, reflect=0)
    np.testing.assert_allclose(b, [1.0, 1.5, 2.0, 1.0])


def test_baseflow_index_bounds_gaps_and_known_answers():
    assert baseflow_index(np.full(100, 2.0)) == pytest.approx(1.0)  # all baseflow
    rng = np.random.default_rng(0)
    flashy = np.where(rng.random(400) < 0.1, 20.0, 0.1)
    slow = 1 + 0.3 * np.sin(np.arange(400) / 60)
    assert baseflow_index(flashy) < 0.3 < 0.9 < baseflow_index(slow) <= 1.0
    b = lyne_hollick(flashy)
    assert (b >= -1e-12).all() and (b <= flashy + 1e-12).all()
    gappy = flashy.copy()
    gappy[30:60] = np.nan
    assert np.isnan(lyne_hollick(gappy)[30:60]).all()
    assert 0 < baseflow_index(gappy) < 1
    assert np.isnan(baseflow_index(np.full(10, np.nan)))
    both = observed_signature("baseflow_index", np.stack([flashy, slow]), np.ones((2, 400)))
    np.testing.assert_allclose(both, [baseflow_index(flashy), baseflow_index(slow)])


def test_runoff_ratio_and_modelled_signatures_by_hand():
    q = np.array([1.0, np.nan, 2.0, 1.0])
    p = np.array([4.0, 100.0, 4.0, 2.0])
    assert runoff_ratio(q, p) == pytest.approx(4.0 / 10.0)  # the unobserved day is left out
    daily = {"q_base": torch.tensor([[1.0, 5.0, 1.0, 0.0]]),
             "q_total": torch.tensor([[2.0, 9.0, 2.0, 1.0]])}
    observed = torch.tensor([[True, False, True, True]])
    prec = torch.tensor([[4.0, 100.0, 4.0, 2.0]])
    assert float(modelled_signature("baseflow_index", daily, prec, observed)) == \
        pytest.approx(2.0 / 5.0)
    assert float(modelled_signature("runoff_ratio", daily, prec, observed)) == \
        pytest.approx(5.0 / 10.0)
    loss, n = signature_loss(torch.tensor([0.5, 0.2, 0.9]), torch.tensor([0.4, np.nan, 0.6]))
    assert int(n) == 2
    assert float(loss) == pytest.approx(((0.1 / SIGNATURE_SCALE) ** 2 +
                                         (0.3 / SIGNATURE_SCALE) ** 2) / 2)
    # nothing flows: a finite ratio and gradient
    zero = {"q_base": torch.zeros(1, 4, requires_grad=True), "q_total": torch.zeros(1, 4)}
    bfi = modelled_signature("baseflow_index", zero, prec, observed)
    bfi.sum().backward()
    assert torch.isfinite(bfi).all() and torch.isfinite(zero["q_base"].grad).all()


# -- NSE* -----------------------------------------------------------------------------------
def test_nse_star_by_hand_and_as_one_minus_nse():
    pred = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, float("nan")]])
    obs = torch.tensor([[2.0, 2.0, float("nan")], [12.0, 8.0, 9.0]])
    sb = torch.tensor([0.5, 3.0])
    loss, n = nse_star(pred, obs, sb, std=2.0)
    # ε σ = 0.2: cell 0 scale 0.7 (one error of 1), cell 1 scale 3.2 (errors 2, 2, and a NaN
    # prediction on an observed day is not masked: it is the model's)
    by_hand = (1 / 0.7**2 + 0 + 4 / 3.2**2 + 4 / 3.2**2 + float("nan")) / 5
    assert int(n) == 5 and math.isnan(float(loss)) and math.isnan(by_hand)
    loss, n = nse_star(pred[:, :2], obs[:, :2], sb, std=2.0)
    assert int(n) == 4
    assert float(loss) == pytest.approx((1 / 0.7**2 + 4 / 3.2**2 + 4 / 3.2**2) / 4)
    # over one basin's whole series with σ_b its std: (1 − NSE) σ_b² / (σ_b + ε σ)²
    g = torch.Generator().manual_seed(1)
    o = torch.rand(1, 300, generator=g, dtype=D) * 5
    p = o + torch.randn(1, 300, generator=g, dtype=D)
    s = o.std(unbiased=False)
    nse = 1 - ((p - o) ** 2).sum() / ((o - o.mean()) ** 2).sum()
    loss, _ = nse_star(p, o, s.reshape(1), std=1.5)
    assert float(loss) == pytest.approx(float((1 - nse) * s**2 / (s + 0.15) ** 2), rel=1e-12)
    # cells without a σ_b are left out
    loss, n = nse_star(pred[:, :2], obs[:, :2], torch.tensor([0.5, float("nan")]), std=2.0)
    assert int(n) == 2 and float(loss) == pytest.approx(1 / 0.7**2 / 2)


def test_the_loss_reads_nse_star_and_signatures_from_the_batch():
    cs = [Constraint("q", "q_total", "daily", loss="nse_star"),
          Constraint("q", "q_total", signature="baseflow_index", weight=2.0)]
    loss_fn = MultiConstraintLoss(cs)
    daily = {"q_total": torch.tensor([[2.0, 4.0]]), "q_base": torch.tensor([[1.0, 1.0]])}
    batch = {"q": torch.tensor([[1.0, 4.0]]), "month_of_day": torch.tensor([0, 0]),
             "q_basin_std": torch.tensor([1.0]), "q_baseflow_index": torch.tensor([0.5]),
             "forcing": torch.ones(1, 5, 3)}
    total, parts = loss_fn(daily, batch, {"q": 2.0})
    assert set(parts) == {"q", "q_baseflow_index"}
    assert float(parts["q"]) == pytest.approx((1 / 1.2**2) / 2)
    assert float(parts["q_baseflow_index"]) == pytest.approx(((2 / 6 - 0.5) / 0.1) ** 2)
    assert float(total) == pytest.approx(float(parts["q"] + 2 * parts["q_baseflow_index"]))
    with pytest.raises(ValueError, match="signature expected one of baseflow_index, "
                                         "runoff_ratio or None, found 'bfi'"):
        Constraint("q", "q_total", signature="bfi")
    with pytest.raises(ValueError, match="loss: expected mse, nse_star, kge or fdc, found .nse."):
        Constraint("q", "q_total", loss="nse")


def test_kge_loss_by_hand_against_the_analysis_metric():
    import xarray as xr

    from h2mv_hybrid.analysis.metrics import kge
    from h2mv_hybrid.model.losses import kge_loss

    g = torch.Generator().manual_seed(2)
    obs = torch.rand(3, 40, generator=g, dtype=D) * 4 + 0.5
    pred = obs * 0.7 + torch.rand(3, 40, generator=g, dtype=D)
    obs[0, 5:9] = float("nan")
    obs[2] = float("nan")  # one observed step only: left out
    obs[2, 0] = 1.0
    loss, n = kge_loss(pred, obs)
    ref = kge(xr.DataArray(pred[:2].numpy(), dims=("cell", "time")),
              xr.DataArray(obs[:2].numpy(), dims=("cell", "time"))).values
    assert int(n) == 2
    assert float(loss) == pytest.approx(float(np.mean(1 - ref)), rel=1e-6)
    # a perfect fit: zero loss, finite gradients
    p = obs[:2].nan_to_num(1.0).clone().requires_grad_(True)
    loss, _ = kge_loss(p, obs[:2])
    loss.backward()
    assert float(loss) < 1e-6 and torch.isfinite(p.grad).all()


# -- flow duration curve --------------------------------------------------------------------
def test_fdc_star_by_hand_with_gaps_and_blind_to_timing():
    from h2mv_hybrid.model.losses import fdc_star

    nan = float("nan")
    pred = torch.tensor([[3.0, 1.0, 2.0, 9.0], [0.0, 4.0, 1.0, 1.0]], dtype=D)
    obs = torch.tensor([[1.0, 5.0, nan, 2.0], [2.0, nan, nan, 0.0]], dtype=D)
    sb = torch.tensor([0.8, 1.8], dtype=D)
    loss, n = fdc_star(pred, obs, sb, std=2.0)
    # cell 0, observed days 0, 1, 3: pred sorted (1, 3, 9), obs sorted (1, 2, 5), scale 1.0;
    # cell 1, days 0 and 3: pred (0, 1), obs (0, 2), scale 2.0
    by_hand = ((0 + 1 + 16) / 1.0**2 + (0 + 1) / 2.0**2) / 5
    assert int(n) == 5 and float(loss) == pytest.approx(by_hand, rel=1e-14)
    # the same values on other days: no loss, where the squared error is large
    g = torch.Generator().manual_seed(3)
    o = torch.rand(2, 50, generator=g, dtype=D) * 5
    p = o[:, torch.randperm(50, generator=g)]
    assert float(fdc_star(p, o, sb, std=2.0)[0]) < 1e-28
    assert float(nse_star(p, o, sb, std=2.0)[0]) > 0.5
    # a damped copy (the shrinking a squared error prefers) is penalized, and its
    # gradient asks for more variability: up above the mean, down below
    damped = (o.mean(1, keepdim=True) + 0.5 * (o - o.mean(1, keepdim=True))).requires_grad_(True)
    loss, _ = fdc_star(damped, o, sb, std=2.0)
    loss.backward()
    above = o > o.mean(1, keepdim=True)
    assert float(loss) > 0.1
    assert (damped.grad[above] < 0).all() and (damped.grad[~above] > 0).all()
    # a cell without σ_b is left out; gradcheck in float64
    loss, n = fdc_star(pred, obs, torch.tensor([0.8, nan], dtype=D), std=2.0)
    assert int(n) == 3 and float(loss) == pytest.approx(17 / 3)
    x = pred.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: fdc_star(v, obs, sb, 2.0)[0], (x,))


def test_an_fdc_constraint_beside_nse_star_has_its_own_name_and_no_series_scores():
    from h2mv_hybrid.model.losses import fdc_star

    cs = [Constraint("q", "q_routed", "daily", loss="nse_star"),
          Constraint("q", "q_routed", "daily", loss="fdc", weight=0.5)]
    assert [c.name for c in cs] == ["q", "q_fdc"]
    assert [c.scores_series for c in cs] == [True, False]
    daily = {"q_routed": torch.tensor([[2.0, 4.0, 1.0]])}
    batch = {"q": torch.tensor([[1.0, 4.0, 3.0]]), "month_of_day": torch.tensor([0, 0, 0]),
             "q_basin_std": torch.tensor([1.0])}
    total, parts = MultiConstraintLoss(cs)(daily, batch, {"q": 2.0})
    assert set(parts) == {"q", "q_fdc"}
    expected = fdc_star(daily["q_routed"], batch["q"], batch["q_basin_std"], 2.0)[0]
    assert float(parts["q_fdc"]) == pytest.approx(float(expected))
    assert float(parts["q_fdc"]) == pytest.approx((0 + 1 + 0) / 1.2**2 / 3)  # (1, 2, 4) against (1, 3, 4)
    assert float(total) == pytest.approx(float(parts["q"] + 0.5 * parts["q_fdc"]))
