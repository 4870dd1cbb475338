"""The layered soil column under the bucket: hand values, closure, bounds, gradients."""

import pytest
import torch
from conftest import site_case

from process_layers import h2mv
from process_layers import soil_layers as layers

D = torch.tensor(layers.thickness_mm(), dtype=torch.float64)


def test_thickness_and_capacities():
    assert layers.thickness_mm() == pytest.approx((70.0, 210.0, 720.0))
    cap = layers.capacities(torch.tensor([100.0, 400.0], dtype=torch.float64), D)
    assert torch.allclose(cap, torch.tensor([[7.0, 21.0, 72.0], [28.0, 84.0, 288.0]],
                                            dtype=torch.float64))


def test_extract_by_hand():
    s = torch.tensor([[2.0, 10.0, 10.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    top = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    take = layers.extract(s, torch.tensor([3.0, 1.0], dtype=torch.float64), top)
    # cell 0: the top gives its 2 mm, the last 1 mm comes from layers 2 and 3 equally
    assert torch.allclose(take, torch.tensor([[2.0, 0.5, 0.5], [1.0, 0.0, 0.0]],
                                             dtype=torch.float64))
    roots = torch.tensor([0.25, 0.45, 0.30], dtype=torch.float64)
    take = layers.extract(s[1:], torch.tensor([4.0], dtype=torch.float64), roots)
    assert torch.allclose(take, torch.tensor([[1.0, 1.8, 1.2]], dtype=torch.float64))


def test_fill_passes_excess_down():
    s = torch.tensor([[6.0, 20.0, 0.0]], dtype=torch.float64)
    cap = torch.tensor([[7.0, 21.0, 72.0]], dtype=torch.float64)
    add = layers.fill(s, cap, torch.tensor([5.0], dtype=torch.float64))
    assert torch.allclose(add, torch.tensor([[1.0, 1.0, 3.0]], dtype=torch.float64))


def test_exchange_by_hand():
    s = torch.tensor([[7.0, 0.0, 36.0]], dtype=torch.float64)  # saturations 1, 0, 0.5
    cap = torch.tensor([[7.0, 21.0, 72.0]], dtype=torch.float64)
    flow = layers.exchange(s, cap, torch.tensor([0.3, 0.05], dtype=torch.float64))
    # 0.3 · (1 − 0) · 7 down from layer 1; 0.05 · (0 − 0.5) · 21 up from layer 3
    assert torch.allclose(flow, torch.tensor([[2.1, -0.525]], dtype=torch.float64))


def test_layers_sum_to_the_bucket_and_stay_in_bounds():
    forcing, alpha, static, beta = site_case(5, 400, seed=2)
    fluxes = h2mv.simulate(forcing, alpha, static, beta, backend="loop")
    s = layers.simulate_layers(fluxes.Es, fluxes.T, fluxes.r_soil, static["sm_max"])
    assert torch.allclose(s.sum(-1), fluxes.sm, rtol=0, atol=1e-9)  # float64 closure
    cap = layers.capacities(static["sm_max"], D)
    assert (s >= -1e-12).all() and (s <= cap[:, None, :] + 1e-9).all()
    # the surface layer reacts faster than the deepest one
    assert (s[..., 0] / cap[:, None, 0]).diff(dim=1).abs().mean() > \
        (s[..., 2] / cap[:, None, 2]).diff(dim=1).abs().mean()


def test_volumetric_conversion():
    s = torch.tensor([[[7.0, 0.0, 36.0]]], dtype=torch.float64)  # [cells, time, layers]
    theta = layers.volumetric(s, torch.tensor([0.05], dtype=torch.float64))
    assert torch.allclose(theta, torch.tensor([[[0.15, 0.05, 0.1]]], dtype=torch.float64))


def test_layer_day_gradients():
    g = torch.Generator().manual_seed(0)
    cap = torch.tensor([[7.0, 21.0, 72.0], [3.0, 9.0, 30.0]], dtype=torch.float64)
    s = (cap * (0.2 + 0.6 * torch.rand(cap.shape, generator=g, dtype=torch.float64))
         ).requires_grad_()
    es = torch.tensor([0.7, 0.4], dtype=torch.float64, requires_grad=True)
    tr = torch.tensor([1.3, 0.9], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([2.2, 0.3], dtype=torch.float64, requires_grad=True)
    roots = torch.tensor(layers.ROOT_FRACTIONS, dtype=torch.float64)
    rates = torch.tensor(layers.EXCHANGE_RATES, dtype=torch.float64)
    f = lambda s, es, tr, r: layers.layer_day(s, cap, es, tr, r, roots, rates)  # noqa: E731
    assert torch.autograd.gradcheck(f, (s, es, tr, r))
    # an empty column with no water: finite gradients
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    out = layers.layer_day(zero, cap[:1], torch.zeros(1, dtype=torch.float64),
                           torch.zeros(1, dtype=torch.float64),
                           torch.zeros(1, dtype=torch.float64), roots, rates)
    (grad,) = torch.autograd.grad(out.sum(), zero)
    assert torch.isfinite(grad).all()
