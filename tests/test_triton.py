"""The GPU kernels (Triton) held to the numba kernels: values and gradients.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, numpy on
the CPU): the same source, the same arithmetic, so CI proves them on every machine. With
a GPU they run compiled on it. The interpreter must be chosen before triton is imported:
conftest.py sets it on machines without ``nvidia-smi``.
"""

import os

import pytest
import torch

GPU = torch.cuda.is_available()
pytest.importorskip("triton")
if not GPU and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU, and Triton's interpreter was not chosen before triton was imported",
                allow_module_level=True)

from conftest import kinky_case, random_alpha, site_case  # noqa: E402

from h2mv_hybrid.model import feedback, scans  # noqa: E402
from h2mv_hybrid.model.feedback_gpu import FeedbackScanGPU  # noqa: E402
from process_layers import FLUX_NAMES, h2mv  # noqa: E402
from process_layers.fused import FusedScan  # noqa: E402
from process_layers.parameters import ALPHA_NAMES  # noqa: E402
from process_layers.triton_scan import TritonScan, block_cells  # noqa: E402

pytestmark = pytest.mark.gpu
DEV = "cuda" if GPU else "cpu"
D = torch.float64


def _scan(op, forcing, alpha, static, beta, states, weights, device, forcing_grad=False):
    """The 21 outputs and the gradients of a weighted sum w.r.t. α, SM_max, β, states.

    With ``forcing_grad`` also w.r.t. prec and tair; with ``beta["baseflow_half"]`` (the
    nonlinear outflow) also w.r.t. K_gw.
    """
    leaf = lambda x: x.detach().to(device).clone().requires_grad_()  # noqa: E731
    a = [leaf(alpha[k]) for k in ALPHA_NAMES]
    sx, bs, bg = leaf(static["sm_max"]), leaf(beta["snow"]), leaf(beta["baseflow"])
    st = [leaf(states[k]) for k in ("swe", "sm", "gw")]
    half = [leaf(beta["baseflow_half"])] if "baseflow_half" in beta else []
    f = [forcing[k].to(device) for k in ("rn", "prec", "tair")]
    if forcing_grad:
        f = [f[0], leaf(f[1]), leaf(f[2])]
    outs = op.apply(*f, *a, sx, bs, bg, *st, *half)
    loss = sum((w.to(device) * o).sum() for o, w in zip(outs, weights, strict=True) if w is not None)
    grads = torch.autograd.grad(loss, [*a, sx, bs, bg, *st, *half,
                                       *(f[1:] if forcing_grad else ())])
    return [o.detach().cpu() for o in outs], [g.cpu() for g in grads]


def _weights(shape, dtype, seed=0, only=None):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype) if only is None or k in only else None
            for k in FLUX_NAMES]


def _states(n, dtype=D, offset=1.0):
    return {k: v + offset for k, v in h2mv.initial_states(n, dtype=dtype).items()}


@pytest.mark.parametrize("case", ["kinky", "sites", "ties", "per-cell beta", "forcing",
                                  "nonlinear outflow"])
def test_triton_scan_equals_numba_float64(case):
    if case == "kinky":
        forcing, alpha, static, beta, states = kinky_case()
    else:
        forcing, alpha, static, beta = site_case(37, 50, seed=3)
        states = _states(37)
        if case == "ties":  # α exactly at their bounds, full soils, empty snow and groundwater
            g = torch.Generator().manual_seed(1)
            alpha = {k: (torch.rand(37, 50, generator=g) > 0.5).double() for k in ALPHA_NAMES}
            states = {"swe": torch.zeros(37, dtype=D), "sm": static["sm_max"].clone(),
                      "gw": torch.zeros(37, dtype=D)}
        if case == "per-cell beta":
            beta = {k: v * torch.linspace(0.5, 1.5, 37, dtype=D) for k, v in beta.items()}
        if case == "nonlinear outflow":  # A21′, K_gw per cell, the empty store included
            beta = {**beta, "baseflow_half": torch.linspace(0.5, 300.0, 37, dtype=D)}
            states = {**states, "gw": states["gw"] * torch.linspace(0.0, 50.0, 37, dtype=D)}
    w = _weights(forcing["rn"].shape, D)
    # "forcing": the gradients of prec and tair too (per-basin forcing corrections)
    fg = case == "forcing"
    got = _scan(TritonScan, forcing, alpha, static, beta, states, w, DEV, forcing_grad=fg)
    want = _scan(FusedScan, forcing, alpha, static, beta, states, w, "cpu", forcing_grad=fg)
    for k, a, b in zip(FLUX_NAMES, got[0], want[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-12, msg=k)
    assert len(got[1]) == len(want[1]) == 13 + 2 * fg + (case == "nonlinear outflow")
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_triton_scan_float32_and_missing_cotangents():
    """float32 storage, float64 arithmetic: the numba kernel's values; only some outputs used."""
    forcing, _, static, beta = site_case(40, 90, seed=5, dtype=torch.float32)
    alpha = {k: v.float() for k, v in random_alpha(40, 90, seed=6).items()}
    states = _states(40, torch.float32)
    w = _weights((40, 90), torch.float32, only={"ET", "q_total", "tws"})
    got = _scan(TritonScan, forcing, alpha, static, beta, states, w, DEV)
    want = _scan(FusedScan, forcing, alpha, static, beta, states, w, "cpu")
    for k, a, b in zip(FLUX_NAMES, got[0], want[0], strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5, msg=k)
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_gradcheck_of_the_triton_scan():
    forcing, alpha, static, beta, states = kinky_case()
    forcing = {k: v[:, :5].to(DEV) for k, v in forcing.items()}
    # stores off 0, where melt = min(0 °C melt, empty snow) is a kink of the bucket itself
    params = [*(alpha[k][:, :5] for k in ALPHA_NAMES), static["sm_max"], beta["snow"],
              beta["baseflow"], states["swe"] + 1.0, states["sm"] + 1.0, states["gw"] + 1.0]
    params = [p.detach().to(DEV).clone().requires_grad_() for p in params]

    def fn(*p):
        return TritonScan.apply(forcing["rn"], forcing["prec"], forcing["tair"], *p)

    # fast mode (random projections of the Jacobian): few interpreted passes; missing
    # cotangents are tested against numba above
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True,
                                    check_undefined_grad=False)


#: Tests that run the kernels on CPU tensors through the dispatch (interpreter only; on a
#: GPU, test_cuda.py runs the same dispatch on CUDA tensors).
interpreter_only = pytest.mark.skipif(GPU, reason="test_cuda.py covers this on the GPU")


@interpreter_only
def test_simulate_picks_the_triton_kernel_on_a_gpu(monkeypatch):
    """backend='fused'/'auto' run the device's kernel: Triton where fused_kernel says so."""
    forcing, alpha, static, beta, states = kinky_case()
    used = []
    monkeypatch.setattr(h2mv, "fused_kernel", lambda device: used.append(device) or "triton")
    monkeypatch.setattr(TritonScan, "forward", _spy(TritonScan.forward, used))
    out = h2mv.simulate(forcing, alpha, static, beta, states, backend="auto")
    ref = h2mv.simulate(forcing, alpha, static, beta, states, backend="loop")
    assert "triton kernel" in used
    for k in FLUX_NAMES:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-12, atol=1e-12, msg=k)


def _spy(fn, log):
    def wrapped(*a, **kw):
        log.append("triton kernel")
        return fn(*a, **kw)
    return staticmethod(wrapped)


def test_block_sizes_fill_a_large_gpu():
    assert block_cells(2048) == 32 and block_cells(65536) == 128 and block_cells(10**6) == 256
    assert block_cells(7) == 32


# -- the state-feedback day kernels ---------------------------------------------------------


def _feedback_inputs(cells, days, hidden, dtype=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    forcing = torch.stack([site_case(cells, days, seed=seed, dtype=dtype)[0][k]
                           for k in ("rn", "prec", "tair")], -1)
    f_norm = torch.randn(cells, days, 3, generator=g, dtype=dtype)

    def r(*shape, scale=1.0, offset=0.0):
        return (offset + scale * torch.rand(*shape, generator=g, dtype=dtype))

    params = (
        r(cells, 4 * hidden, scale=2, offset=-1), r(4 * hidden, hidden + 7, scale=2, offset=-1),
        r(7, hidden, scale=2, offset=-1), r(7, scale=2, offset=-1), r(cells, scale=80, offset=20),
        r((), scale=0.5, offset=0.3), r((), scale=0.2, offset=0.01),
        r(cells, scale=20), r(cells, scale=20), r(cells, scale=20), r(cells),
        r(cells, hidden, scale=2, offset=-1), r(cells, hidden, scale=2, offset=-1),
    )
    return f_norm, forcing, params


def _feedback(op, f_norm, forcing, params, chunk, device, weights, keep=True):
    p = [x.to(device).clone().requires_grad_(keep) for x in params]
    out, h, c = op.apply(keep, chunk, f_norm.to(device), forcing.to(device), 10.0, *p)
    if not keep:
        return out.cpu(), h.cpu(), c.cpu()
    loss = (out * weights.to(device)).sum() + h.sum() + 0.3 * c.sum()
    return out.detach().cpu(), [g.cpu() for g in torch.autograd.grad(loss, p)]


@pytest.mark.parametrize("chunk,nonlinear", [(None, False), (5, False), (5, True)],
                         ids=["whole", "checkpointed", "nonlinear outflow"])
def test_triton_feedback_equals_numba_float64(chunk, nonlinear):
    cells, days, hidden = 19, 12, 6  # two programs of 16 cells, the second one part-full
    f_norm, forcing, params = _feedback_inputs(cells, days, hidden)
    if nonlinear:  # K_gw [cells] of A21′, after the carry
        params = (*params, torch.linspace(0.5, 80.0, cells, dtype=D))
    w = torch.randn(28, cells, days, generator=torch.Generator().manual_seed(1), dtype=D)
    got = _feedback(FeedbackScanGPU, f_norm, forcing, params, chunk, DEV, w)
    want = _feedback(feedback.FeedbackScan, f_norm, forcing, params, chunk, "cpu", w)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # without gradients: the two rolling slots give the same outputs and final state
    a = _feedback(FeedbackScanGPU, f_norm, forcing, params, chunk, DEV, w, keep=False)
    b = _feedback(feedback.FeedbackScan, f_norm, forcing, params, chunk, "cpu", w, keep=False)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_triton_feedback_float32_agrees_to_rounding():
    cells, days, hidden = 20, 15, 8
    f_norm, forcing, params = _feedback_inputs(cells, days, hidden, dtype=torch.float32, seed=4)
    w = torch.randn(28, cells, days, generator=torch.Generator().manual_seed(2))
    got = _feedback(FeedbackScanGPU, f_norm, forcing, params, None, DEV, w)
    want = _feedback(feedback.FeedbackScan, f_norm, forcing, params, None, "cpu", w)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(got[1], want[1], strict=True):
        scale = float(b.abs().max()) + 1.0
        torch.testing.assert_close(a / scale, b / scale, rtol=0, atol=1e-4)


def test_gradcheck_of_the_triton_feedback():
    f_norm, forcing, params = _feedback_inputs(3, 5, 3, seed=2)
    f_norm, forcing = f_norm.to(DEV), forcing.to(DEV)
    params = [p.to(DEV).requires_grad_() for p in params]

    def fn(*p):
        return FeedbackScanGPU.apply(True, 3, f_norm, forcing, 10.0, *p)

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@interpreter_only
def test_the_hybrid_runs_its_fused_scan_on_the_triton_kernel(monkeypatch):
    """HybridH2MV with feedback_backend 'fused' on the Triton kernel equals the day loop."""
    from test_feedback import assert_same, inputs, model, run

    monkeypatch.setattr(h2mv, "fused_kernel", lambda device: "triton")
    calls = []
    monkeypatch.setattr(FeedbackScanGPU, "forward", _spy(FeedbackScanGPU.forward, calls))
    forcing, static = inputs(days=20)
    fused = run("fused", forcing, static, time_chunk=7)
    assert calls
    assert isinstance(scans.choose_scan(model("auto"), forcing), scans.FusedFeedback)
    assert_same(fused, run("loop", forcing, static, time_chunk=7))
