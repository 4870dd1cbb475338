"""The hybrid's scans on a CUDA device, held to the CPU ones (skipped without a GPU).

On a CUDA tensor the state-feedback recurrence runs as the fused Triton op
(:mod:`h2mv_hybrid.model.feedback_gpu`) or the day loop, and the decoupled
configuration's bucket as the Triton scan; all must give the CPU's values and gradients
(the CPU runs the numba kernels), in float64.
"""

import pytest
import torch

from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
from h2mv_hybrid.model.scans import DayLoop, Decoupled, FusedFeedback, choose_scan
from h2mv_hybrid.sites import site_forcing

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
F = 6


def case(cells=12, days=90, seed=0, **settings):
    torch.manual_seed(seed)
    model = HybridH2MV(F, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * F, [1.0] * F,
                       HybridSettings(static_hidden=12, code_size=4, lstm_hidden=8, **settings))
    with torch.no_grad():  # larger weights than the default init: more varied α and days
        for p in model.parameters():
            p.mul_(3.0)
    f = site_forcing(cells, days, seed=seed, dtype=torch.float64)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    static = torch.randn(cells, F, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    return model.double(), forcing, static


def run(model, forcing, static):
    """Daily outputs and every parameter's gradient of a loss on ET, runoff, TWS, SWE."""
    model.zero_grad(set_to_none=True)
    out = model(forcing, static)
    d = out.daily
    loss = (d["ET"].pow(2).mean() + d["q_total"].mean() + d["tws"].mean() / 100
            + d["swe"].mean() / 10)
    loss.backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    # float64 for comparing: the decoupled bucket runs in float32, its carry may be float64
    return {k: v.detach().cpu().double() for k, v in d.items()}, grads


@pytest.mark.parametrize("settings", [
    {"state_feedback": True},
    {"state_feedback": True, "time_chunk": 30, "chunk_mode": "checkpoint"},
    {"state_feedback": True, "time_chunk": 30, "chunk_mode": "truncate"},
    {"state_feedback": True, "feedback_backend": "loop"},
    {"state_feedback": False},
], ids=["feedback", "checkpoint", "truncate", "day loop", "decoupled"])
def test_cuda_scans_equal_the_cpu(settings):
    model, forcing, static = case(**settings)
    cpu_scan = choose_scan(model, forcing)
    cpu = run(model, forcing, static)
    model = model.cuda()
    gpu_scan = choose_scan(model, forcing.cuda())
    if settings.get("feedback_backend") == "loop":
        assert isinstance(cpu_scan, DayLoop) and isinstance(gpu_scan, DayLoop)
    elif settings["state_feedback"]:
        assert isinstance(cpu_scan, FusedFeedback) and isinstance(gpu_scan, FusedFeedback)
    else:
        assert isinstance(cpu_scan, Decoupled) and isinstance(gpu_scan, Decoupled)
    gpu = run(model, forcing.cuda(), static.cuda())
    # The decoupled configuration's bucket runs in float32 whatever the networks' dtype
    # (the fused CPU kernel computes in float64 inside): float32 tolerances there.
    tol = ((1e-9, 1e-9), (1e-7, 1e-9)) if settings["state_feedback"] else ((1e-5, 1e-3),
                                                                            (1e-4, 1e-6))
    for k in cpu[0]:
        torch.testing.assert_close(gpu[0][k], cpu[0][k], rtol=tol[0][0], atol=tol[0][1], msg=k)
    assert cpu[1].keys() == gpu[1].keys()
    for k in cpu[1]:
        torch.testing.assert_close(gpu[1][k], cpu[1][k], rtol=tol[1][0], atol=tol[1][1], msg=k)


def test_cuda_bf16_autocast_keeps_the_physics_in_float32():
    model, forcing, static = case(cells=64, days=120, state_feedback=True)
    model = model.float().cuda()
    forcing, static = forcing.float().cuda(), static.float().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        # the fused op runs under autocast too, its recurrence in float32
        assert isinstance(choose_scan(model, forcing), FusedFeedback)
        out = model(forcing, static)
        loss = out.daily["ET"].mean() + out.daily["q_total"].mean()
    loss.backward()
    assert out.daily["tws"].dtype == torch.float32
    assert all(torch.isfinite(v).all() for v in out.daily.values())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # water closes per cell to float32 rounding over the days
    d = out.daily
    inputs = (d["rainfall"] + d["snow_acc"]).sum(1).detach()
    change = d["tws"][:, -1]  # from empty stores
    residual = (inputs - d["ET"].sum(1) - d["q_total"].sum(1) - change).detach()
    assert float(residual.abs().max()) < 1e-2 * max(1.0, float(inputs.abs().max()) / 1000)
