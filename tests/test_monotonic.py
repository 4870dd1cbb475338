"""The monotonic water-balance terms of PHY-LSTM / PHYs-LSTM (eqs 10–14, 19) by hand."""

import math

import pytest
import torch

from process_layers import monotonic

T = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731


def test_surface_water_change_eq10_and_11():
    dw = monotonic.surface_water_change(T([10.0, 0.0, 4.0]), T([1.0, 2.0, 1.0]),
                                        T([3.0, 0.0, 0.0]), T([0.0, 5.0, 2.0]))
    assert math.isnan(dw[0, 0])
    assert dw[0, 1:].tolist() == [0 - 2 - 0 - 5, 4 - 1 - 0 + 3]
    dws = monotonic.surface_water_change_deep(dw, T([100.0, 101.0, 99.0]))
    assert dws[0, 1:].tolist() == [-7 - 1, 6 + 2]


def test_direction_eq12_both_readings():
    dw = T([float("nan"), 1.0, 3.0, 3.0, -2.0])
    assert monotonic.expected_direction(dw).tolist() == [[0, 0, 1, 0, -1]]
    assert monotonic.expected_direction(dw, "level").tolist() == [[0, 1, 1, 1, -1]]
    with pytest.raises(ValueError, match="mode"):
        monotonic.expected_direction(dw, "other")


def test_agreement_eq13_and_penalty_eq14():
    direction = T([0.0, 1.0, 1.0, -1.0, -1.0])
    obs = T([0.20, 0.25, 0.24, 0.20, float("nan")])
    keep = monotonic.observed_agreement(direction, obs)
    # day 1 rises as expected; day 2 falls against it; day 3 falls as expected; NaN → out
    assert keep.tolist() == [[False, True, False, True, False]]
    pred = T([0.0, 0.22, 0.30, 0.27, 0.1])
    prev = torch.cat([T([float("nan")]), obs[:, :-1]], 1)
    pen = monotonic.monotonic_penalty(pred, prev, direction, keep)
    # day 1: predicted 0.22 < previous 0.20? no, so 0; day 3: 0.27 > 0.24 while a fall is
    # expected: penalty 0.03
    assert pen[0].tolist() == pytest.approx([0, 0, 0, 0.03, 0])


def test_penalty_gradient():
    direction = T([1.0, -1.0, 1.0, -1.0])
    keep = torch.tensor([[True, True, True, False]])
    prev = T([0.3, 0.3, 0.3, 0.3])
    pred = T([0.2, 0.4, 0.35, 0.1]).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: monotonic.monotonic_penalty(p, prev, direction, keep), (pred,))
    pen = monotonic.monotonic_penalty(pred, prev, direction, keep)
    (grad,) = torch.autograd.grad(pen.sum(), pred)
    assert grad.tolist() == [[-1.0, 1.0, 0.0, 0.0]]  # only wrong-signed, kept days pull


def test_inconsistency_eq19():
    direction = T([0.0, 1.0, 1.0, -1.0, 0.0, -1.0])
    pred = T([0.2, 0.3, 0.25, 0.24, 0.3, 0.3])
    bad, counted = monotonic.inconsistency(pred, direction)
    # day 1 rise/+ ok; day 2 fall/+ bad; day 3 fall/− ok; day 4 no direction; day 5 no change
    assert bad.tolist() == [1] and counted.tolist() == [3]


def test_deep_storage_sums_the_layers_below():
    theta = torch.tensor([[[0.1, 0.2, 0.3]]], dtype=torch.float64)  # [cells, time, layers]
    d = torch.tensor([70.0, 210.0, 720.0], dtype=torch.float64)
    assert monotonic.deep_storage(theta, d).tolist() == [[pytest.approx(0.2 * 210 + 0.3 * 720)]]
    assert monotonic.deep_storage(theta, d, layer=2).tolist() == [[pytest.approx(216.0)]]
