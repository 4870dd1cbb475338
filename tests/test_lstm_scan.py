"""The project's own whole-sequence LSTM op matches nn.LSTM: values, gradients, guards."""

import pytest
import torch
from helpers.small_hybrid import site_inputs, small_hybrid
from torch import nn

from h2mv_hybrid.model import lstm_scan as ls

D = torch.float64


def lstm_and_inputs(dtype, cells=7, days=70, n_in=5, hidden=6, seed=0, gain=3.0):
    torch.manual_seed(seed)
    lstm = nn.LSTM(n_in, hidden, batch_first=True).to(dtype)
    with torch.no_grad():  # larger weights: saturated gates and cells beyond tanh's clamp
        for p in lstm.parameters():
            p.mul_(gain)
    x = torch.randn(cells, days, n_in, dtype=dtype, requires_grad=True)
    h0 = torch.randn(cells, hidden, dtype=dtype, requires_grad=True)
    c0 = torch.randn(cells, hidden, dtype=dtype, requires_grad=True)
    return lstm, x, h0, c0


def values_and_grads(lstm, x, h0, c0, own):
    if own:
        hs, h, c = ls.lstm_scan(lstm, x, h0, c0)
    else:
        hs, (h, c) = lstm(x, (h0[None], c0[None]))
        h, c = h[0], c[0]
    g = torch.Generator().manual_seed(1)
    w = torch.randn(hs.shape, generator=g, dtype=hs.dtype)
    loss = (hs * w).sum() + (h * h).sum() + 0.3 * (c * c.detach()).sum()
    grads = torch.autograd.grad(loss, [x, h0, c0, *lstm.parameters()])
    return [hs.detach(), h.detach(), c.detach(), *grads]


@pytest.mark.parametrize("cells", [7, ls.PARALLEL_CELLS])  # serial and parallel kernels
def test_scan_equals_nn_lstm_float64(cells):
    lstm, x, h0, c0 = lstm_and_inputs(D, cells=cells)
    ref = values_and_grads(lstm, x, h0, c0, own=False)
    got = values_and_grads(lstm, x, h0, c0, own=True)
    names = ["hs", "h", "c", "x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    for n, a, b in zip(names, got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=n)


def test_scan_float32_uses_the_rational_tanh_within_rounding():
    lstm, x, h0, c0 = lstm_and_inputs(torch.float32)
    ref = values_and_grads(lstm, x, h0, c0, own=False)
    got = values_and_grads(lstm, x, h0, c0, own=True)
    for a, b in zip(got, ref, strict=True):
        scale = float(b.abs().max()) + 1.0
        torch.testing.assert_close(a / scale, b / scale, rtol=0, atol=2e-6)
    # the rational fit itself, across its clamp and beyond, against torch.tanh
    z = torch.linspace(-12, 12, 4001, dtype=torch.float32)
    gates = torch.zeros(len(z), 4)
    gates[:, 2] = z  # cell gate: tanh; i = f = o = σ(0) = 0.5
    c, h = torch.empty(len(z), 1), torch.empty(len(z), 1)
    ls._FORWARD[False](gates.numpy(), torch.zeros(len(z), 1).numpy(), c.numpy(), h.numpy(),
                       ls.constants(torch.float32), True)
    torch.testing.assert_close(gates[:, 2], torch.tanh(z), rtol=0, atol=3e-7)
    torch.testing.assert_close(gates[:, 0], torch.full_like(z, 0.5), rtol=0, atol=1e-7)


@pytest.mark.parametrize("per_cell_bias", [False, True])
def test_gradcheck_of_the_scan(per_cell_bias):
    lstm, x, h0, c0 = lstm_and_inputs(D, cells=3, days=6, n_in=2, hidden=3, gain=1.0)
    bias = lstm.bias_ih_l0.detach() + lstm.bias_hh_l0.detach()
    if per_cell_bias:
        bias = bias + torch.randn(3, 12, dtype=D)
    params = (lstm.weight_ih_l0, lstm.weight_hh_l0, bias.requires_grad_(True))

    def f(*args):
        hs, h, c = ls.LSTMScan.apply(True, *args)
        return hs, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cells", [7, ls.PARALLEL_CELLS])
def test_static_inputs_projected_once_equal_nn_lstm_on_every_day(cells):
    """lstm_scan(x, static): the inputs that do not change over days enter as a bias per
    cell; values and every gradient (the static inputs' included) are nn.LSTM's on the
    input [x, static] of every day."""
    lstm, x, h0, c0 = lstm_and_inputs(D, cells=cells, n_in=7)
    static = torch.randn(cells, 4, dtype=D, requires_grad=True)
    dyn = x[:, :, :3].detach().requires_grad_(True)
    full = torch.cat([dyn, static[:, None].expand(-1, x.shape[1], -1)], -1)
    hs_ref, (h_ref, c_ref) = lstm(full, (h0[None], c0[None]))
    hs, h, c = ls.lstm_scan(lstm, dyn, h0, c0, static)
    w = torch.randn(hs.shape, generator=torch.Generator().manual_seed(1), dtype=D)
    grads = []
    for out in ((hs_ref, h_ref[0], c_ref[0]), (hs, h, c)):
        loss = (out[0] * w).sum() + (out[1] ** 2).sum() + 0.3 * (out[2] * out[2].detach()).sum()
        grads.append(torch.autograd.grad(loss, [dyn, static, h0, c0, *lstm.parameters()]))
        torch.testing.assert_close(out[0], hs_ref, rtol=0, atol=1e-12)
    names = ["x", "static", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    for n, a, b in zip(names, *grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11, msg=n)


def test_without_gradients_two_days_of_buffers_give_the_same_values():
    lstm, x, h0, c0 = lstm_and_inputs(D)
    hs, h, c = ls.lstm_scan(lstm, x, h0, c0)
    with torch.no_grad():
        hs2, h2, c2 = ls.lstm_scan(lstm, x, h0, c0)
    assert not hs2.requires_grad
    for a, b in ((hs, hs2), (h, h2), (c, c2)):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)


def test_a_retained_graph_gives_the_same_gradients_twice():
    lstm, x, h0, c0 = lstm_and_inputs(D, days=2 * ls.BLOCK_DAYS + 3)
    hs, _, _ = ls.lstm_scan(lstm, x, h0, c0)
    loss = hs.square().sum()
    first = torch.autograd.grad(loss, [x, *lstm.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [x, *lstm.parameters()])
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_next_step_reuses_the_tape_and_a_stale_graph_raises():
    lstm, x, h0, c0 = lstm_and_inputs(D)
    ref = values_and_grads(lstm, x, h0, c0, own=False)
    got = [values_and_grads(lstm, x, h0, c0, own=True) for _ in range(2)]
    (tape,) = ls._POOL.free.values()
    for a, b, c in zip(got[0], got[1], ref, strict=True):  # a reused tape: the same step
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    hs, _, _ = ls.lstm_scan(lstm, x, h0, c0)
    assert not ls._POOL.free  # this forward took the tape
    loss = hs.square().sum()
    loss.backward(retain_graph=True)
    assert ls._POOL.free[next(iter(ls._POOL.free))].xs is tape.xs
    ls.lstm_scan(lstm, x, h0, c0)  # overwrites the tape the retained graph still holds
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_scan_refuses_what_it_cannot_run():
    lstm, x, _, _ = lstm_and_inputs(torch.float32)
    assert ls.scan_reason(lstm, x) is None
    assert "one dtype" in ls.scan_reason(lstm, x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "autocast" in ls.scan_reason(lstm, x)
    assert "one unidirectional" in ls.scan_reason(nn.LSTM(5, 6, num_layers=2), x)


def decoupled_run(backend, chunk=None, days=40):
    forcing, static = site_inputs(6, days, 0, D)
    m = small_hybrid(D, state_feedback=False, lstm_backend=backend, time_chunk=chunk)
    out = m(forcing, static)
    w = torch.linspace(0.5, 1.5, days, dtype=D)
    loss = sum((v * w).sum() for v in out.daily.values()) * 1e-3 + out.carry.h.sum()
    loss.backward()
    return out, {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("chunk", [None, 15])
def test_decoupled_model_with_the_scan_equals_nn_lstm(chunk, monkeypatch):
    calls = []
    monkeypatch.setattr(ls.LSTMScan, "apply", lambda *a, f=ls.LSTMScan.apply: (
        calls.append(1), f(*a))[1])
    out_a, g_a = decoupled_run("scan", chunk)
    assert calls, "lstm_backend='scan' did not run the scan"
    n_calls = len(calls)
    out_b, g_b = decoupled_run("torch", chunk)
    assert len(calls) == n_calls, "lstm_backend='torch' ran the scan"
    for k in out_a.daily:
        torch.testing.assert_close(out_a.daily[k], out_b.daily[k], rtol=0, atol=1e-10, msg=k)
    for n in g_a:
        scale = float(g_b[n].abs().max()) + 1.0
        torch.testing.assert_close(g_a[n] / scale, g_b[n] / scale, rtol=0, atol=1e-10, msg=n)
    decoupled_run("auto", chunk)
    assert len(calls) > n_calls, "lstm_backend='auto' did not run the scan on the CPU"


def test_lstm_backend_scan_under_autocast_says_why():
    forcing, static = site_inputs(6, 20, 0, torch.float32)
    m = small_hybrid(torch.float32, state_feedback=False, lstm_backend="scan")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(
            ValueError, match="lstm_backend='scan' cannot run: CPU autocast"):
        m(forcing, static)


def test_sequence_lstm_of_the_heads_equals_nn_lstm_and_falls_back(monkeypatch):
    lstm, x, _, _ = lstm_and_inputs(D)
    calls = []
    monkeypatch.setattr(ls.LSTMScan, "apply", lambda *a, f=ls.LSTMScan.apply: (
        calls.append(1), f(*a))[1])
    torch.testing.assert_close(ls.sequence_lstm(lstm, x), lstm(x)[0], rtol=0, atol=1e-12)
    assert calls
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the scan cannot: nn.LSTM runs
        ls.sequence_lstm(lstm.float(), x.float())
    assert len(calls) == 1
