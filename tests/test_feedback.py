"""The fused state-feedback recurrence matches the per-day loop: values, gradients, guards."""

import pytest
import torch
from helpers.small_hybrid import F, feedback_scan_params, site_inputs, small_hybrid

from h2mv_hybrid.model import feedback, scans
from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings, activate_alpha
from process_layers import FLUX_NAMES, Alpha, Beta, States, h2mv
from process_layers.fused import N_DAY_OUT, day_backward, day_forward
from process_layers.parameters import ALPHA_NAMES
from process_layers.units import kelvin_to_celsius, net_radiation_mm_per_day

D = torch.float64


def inputs(cells=6, days=60, seed=0, dtype=D):
    return site_inputs(cells, days, seed, dtype)


def model(backend, dtype=D, **kw):
    return small_hybrid(dtype, feedback_backend=backend, **kw)


def weighted_loss(out, days):
    """A loss that reaches every output, α and the final carry, with day-varying weights."""
    w = torch.linspace(0.5, 1.5, days, dtype=D)
    loss = sum((v * w).sum() for v in out.daily.values()) * 1e-3
    loss = loss + sum((v * w).sum() for v in out.alpha.values())
    c = out.carry
    return loss + c.swe.sum() + c.sm.sum() + c.gw.sum() + c.h.sum() + 0.3 * c.c.sum() + c.fapar.sum()


def run(backend, forcing, static, carry=None, **kw):
    m = model(backend, **kw)
    out = m(forcing, static, carry)
    weighted_loss(out, forcing.shape[1]).backward()
    return out, {n: p.grad.clone() for n, p in m.named_parameters()}


def assert_same(a, b, atol=1e-10):
    (out_a, g_a), (out_b, g_b) = a, b
    for k in out_a.daily:
        torch.testing.assert_close(out_a.daily[k], out_b.daily[k], rtol=0, atol=atol, msg=k)
    for x, y in zip(out_a.carry, out_b.carry, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)
    for n in g_a:
        scale = float(g_b[n].abs().max()) + 1.0
        torch.testing.assert_close(g_a[n] / scale, g_b[n] / scale, rtol=0, atol=atol, msg=n)


def test_fused_equals_loop_float64():
    forcing, static = inputs()
    assert_same(run("fused", forcing, static), run("loop", forcing, static))


def test_fused_equals_loop_from_a_carried_state_and_in_checkpointed_chunks():
    forcing, static = inputs(days=70, seed=1)
    spin = model("loop").spinup(forcing[:, :40], static)
    carry = type(spin)(*(t.clone().requires_grad_(True) for t in spin))
    ref = run("loop", forcing[:, 40:], static, carry)
    for kw in ({}, {"time_chunk": 7}, {"time_chunk": 30}):
        assert_same(run("fused", forcing[:, 40:], static, carry, **kw), ref)
    # Gradients reach the carried state through both paths alike.
    grads = []
    for backend in ("loop", "fused"):
        c = type(spin)(*(t.clone().requires_grad_(True) for t in spin))
        out = model(backend, time_chunk=9)(forcing[:, 40:], static, c)
        weighted_loss(out, 30).backward()
        grads.append([t.grad for t in c])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("bands", [1, 2])
def test_fused_equals_loop_on_the_threaded_kernels(bands):
    """From PARALLEL_CELLS cells (or bucket rows) the day kernels loop over cells on numba's
    threads: the same values and gradients as the loop, with and without bands."""
    from process_layers.fused import PARALLEL_CELLS

    cells = PARALLEL_CELLS if bands == 1 else PARALLEL_CELLS // 2 + 3
    forcing, static = inputs(cells=cells, days=12, seed=4)
    out = {b: run(b, forcing, static, state_feedback=True, elevation_bands=bands)
           for b in ("fused", "loop")}
    assert out["fused"][0].daily["q_total"].shape[0] == cells
    assert_same(out["fused"], out["loop"])


def test_fused_float32_agrees_with_loop_to_rounding():
    forcing, static = inputs(cells=16, days=200, dtype=torch.float32)
    outs = {}
    for backend in ("loop", "fused"):
        m = model(backend, dtype=torch.float32)
        with torch.no_grad():
            outs[backend] = m(forcing, static)
    for k in ("ET", "q_total", "tws", "swe", "fapar"):
        a, b = outs["fused"].daily[k], outs["loop"].daily[k]
        assert float((a - b).abs().max()) <= 1e-3 * (float(b.abs().max()) + 1.0), k


def test_gradcheck_of_the_fused_recurrence():
    g = torch.Generator().manual_seed(0)
    cells, days, hidden = 3, 6, 4
    forcing, _ = inputs(cells, days, seed=2)
    f_norm = torch.randn(cells, days, 3, generator=g, dtype=D)
    params = tuple(feedback_scan_params(g, cells, hidden))

    for chunk in (None, 4):  # every day kept; checkpointed and recomputed in spans of 4
        def fn(*p, chunk=chunk):
            return feedback.FeedbackScan.apply(True, chunk, f_norm, forcing, 10.0, *p)

        assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_without_gradients_the_rolling_buffers_give_the_same_outputs():
    forcing, static = inputs(days=41)
    m = model("fused")
    with torch.no_grad():
        a = m(forcing, static)
    b = m(forcing, static)
    for k in a.daily:
        torch.testing.assert_close(a.daily[k], b.daily[k].detach(), rtol=0, atol=0)
    for x, y in zip(a.carry, b.carry, strict=True):
        torch.testing.assert_close(x, y.detach(), rtol=0, atol=0)


def test_auto_uses_the_fused_op_on_cpu_and_the_loop_under_autocast(monkeypatch):
    calls = []
    original = feedback.FeedbackScan.apply
    monkeypatch.setattr(feedback.FeedbackScan, "apply",
                        lambda *a: calls.append(1) or original(*a))
    forcing, static = inputs(days=10, dtype=torch.float32)
    m = model("auto", dtype=torch.float32)
    m(forcing, static)
    assert calls == [1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(forcing, static)
    assert calls == [1] and out.daily["tws"].dtype == torch.float32
    assert m.fused_feedback_reason(forcing) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "autocast" in m.fused_feedback_reason(forcing)
        with pytest.raises(ValueError, match="feedback_backend='fused' cannot run: autocast"):
            model("fused", dtype=torch.float32)(forcing, static)
    with pytest.raises(ValueError, match="feedback_backend: expected auto, fused or loop"):
        model("numba")


def test_day_kernels_equal_the_equation_functions():
    """``day_forward`` / ``day_backward`` against ``h2mv.day`` and autograd, one day."""
    g = torch.Generator().manual_seed(5)
    cells = 300  # above PARALLEL_CELLS: the threaded build
    forcing, _ = inputs(cells, 1, seed=5)
    forcing = forcing[:, 0]
    raw = (torch.randn(cells, 7, generator=g, dtype=D) * 3).requires_grad_(True)
    s_prev = (torch.rand(cells, 3, generator=g, dtype=D) * 30).requires_grad_(True)
    sm_max = (20 + 100 * torch.rand(cells, generator=g, dtype=D)).requires_grad_(True)
    betas = torch.tensor([0.8, 0.03], dtype=D, requires_grad=True)
    s_prev.data[:, 1] = torch.minimum(s_prev.data[:, 1], sm_max.data)

    alpha = activate_alpha(raw)
    fluxes, _ = h2mv.day(net_radiation_mm_per_day(forcing[:, 0]), forcing[:, 1],
                         kelvin_to_celsius(forcing[:, 2]), Alpha(**alpha), sm_max,
                         Beta(snow=betas[0], baseflow=betas[1]), States(*s_prev.unbind(1)))
    ref = torch.stack([*(fluxes[k] for k in FLUX_NAMES), *(alpha[k] for k in ALPHA_NAMES)])

    out = torch.empty(N_DAY_OUT, cells, 2, dtype=D)
    s_next = torch.empty(cells, 3, dtype=D)
    day_forward(raw.detach(), forcing, s_prev.detach(), sm_max.detach(),
                betas.detach()[:, None].expand(2, cells).contiguous(), out, 1,
                s_next)
    torch.testing.assert_close(out[:, :, 1], ref.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(s_next, out[[FLUX_NAMES.index(k) for k in ("swe", "sm", "gw")],
                                           :, 1].t())

    cot = torch.randn(N_DAY_OUT, cells, generator=g, dtype=D)
    lam = torch.randn(cells, 3, generator=g, dtype=D)
    g_feed = torch.randn(cells, 4, generator=g, dtype=D)
    # Autograd reference: the cotangents reach the outputs, the end-of-day storages
    # (lam + g_feed) and fAPAR (g_feed).
    ends = torch.stack([fluxes.swe, fluxes.sm, fluxes.gw], 1)
    loss = (ref * cot).sum() + (ends * (lam + g_feed[:, :3])).sum() + (
        alpha["fapar"] * g_feed[:, 3]).sum()
    want = torch.autograd.grad(loss, (raw, s_prev, sm_max, betas))
    g_out = torch.zeros(N_DAY_OUT, cells, 2, dtype=D)
    g_out[:, :, 1] = cot
    g_raw = torch.empty(cells, 7, dtype=D)
    g_sm_max, g_betas = torch.zeros(cells, dtype=D), torch.zeros(2, cells, dtype=D)
    lam_io = lam.clone()
    day_backward(raw.detach(), forcing, s_prev.detach(), sm_max.detach(),
                 betas.detach()[:, None].expand(2, cells).contiguous(), g_out,
                 1, lam_io, g_feed, g_raw, g_sm_max, g_betas)
    for got, exp in zip((g_raw, lam_io, g_sm_max, g_betas.sum(1)), want, strict=True):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-10)


def test_reused_buffers_give_identical_steps_and_stale_graphs_raise():
    forcing, static = inputs(days=33)
    m = model("fused")
    grads = []
    for _ in range(2):  # the second step runs on the first step's pooled buffers
        m.zero_grad()
        weighted_loss(m(forcing, static), 33).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # A graph kept with retain_graph=True stays usable until another forward pass takes
    # its buffers; then its second backward fails autograd's version check instead of
    # reading overwritten data.
    loss = weighted_loss(m(forcing, static), 33)
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)
    weighted_loss(m(forcing, static), 33).backward()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_per_cell_baseflow_constant_fused_equals_loop_and_is_learned():
    """β_gw from the static code (one per basin): the fused kernels read it per cell."""
    forcing, static = inputs(days=50, seed=4)
    fused = run("fused", forcing, static, basin_baseflow=True)
    assert_same(fused, run("loop", forcing, static, basin_baseflow=True))
    out, grads = fused
    assert out.beta["baseflow"].shape == (6,) and out.beta["snow"].dim() == 0
    assert out.beta["baseflow"].std() > 0  # one per cell
    assert "beta_raw.baseflow" not in grads  # no global constant left unused
    assert grads["baseflow_head.weight"].abs().sum() > 0
    # the decoupled configuration runs the per-cell β through the fused series kernel
    dec_fused = model("auto", state_feedback=False, basin_baseflow=True)
    out = dec_fused(forcing, static)
    g = torch.autograd.grad(out.daily["q_base"].sum(), dec_fused.baseflow_head.weight,
                            retain_graph=True)[0]
    beta = out.beta
    alpha = out.alpha
    ref = h2mv.simulate({"rn": forcing[..., 0], "prec": forcing[..., 1],
                         "tair": forcing[..., 2]}, alpha, {"sm_max": out.sm_max}, beta,
                        backend="loop")
    torch.testing.assert_close(out.daily["q_base"], ref.q_base, rtol=0, atol=1e-10)
    ref_g = torch.autograd.grad(ref.q_base.sum(), dec_fused.baseflow_head.weight)[0]
    torch.testing.assert_close(g, ref_g, rtol=1e-8, atol=1e-10)


def test_forcing_corrections_start_neutral_reach_the_bucket_and_are_learned():
    """c_P · prec and T_air + δ_T per basin, from the static code, in both configurations.

    At initialization every basin starts near c_P = 1 and δ_T = 0 °C. The decoupled
    configuration (fused series kernel, whose adjoint differentiates prec and tair) gives
    the per-day loop's outputs and gradients; the state-feedback one (fused op, whose day
    adjoint does the same: next test) and its gradient reaches the corrections too. The bucket's precipitation is the corrected one, so its water balance
    (rainfall + snowfall, the bucket's own input) closes on c_P · prec.
    """
    forcing, static = inputs(days=80, seed=6)
    kw = {"basin_precip_factor": True, "basin_temperature_offset": True}
    for state_feedback in (False, True):
        m = model("auto", state_feedback=state_feedback, **kw)
        out = m(forcing, static)
        corr = out.corrections
        assert set(corr) == {"precip_factor", "temperature_offset"}
        assert corr["precip_factor"].shape == (6,) and corr["precip_factor"].std() > 0
        # the table's bounds hold; a fresh model starts close to no correction (its weights
        # here are 3× larger than the default initialization's, see model())
        assert bool(((corr["precip_factor"] >= 0.5) & (corr["precip_factor"] <= 2)).all())
        assert bool((corr["temperature_offset"].abs() <= 4).all())
        g = torch.autograd.grad(out.daily["q_total"].sum() + out.daily["swe"].sum(),
                                m.correction_head.weight)[0]
        assert bool((g.abs().sum(1) > 0).all())  # both corrections learn
    fresh = HybridH2MV(F, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * F, [1.0] * F,
                       HybridSettings(static_hidden=12, code_size=4, lstm_hidden=8,
                                      **kw)).to(D)
    c0 = fresh(forcing, static).corrections
    torch.testing.assert_close(c0["precip_factor"], torch.ones(6, dtype=D), rtol=0, atol=0.05)
    torch.testing.assert_close(c0["temperature_offset"], torch.zeros(6, dtype=D), rtol=0,
                               atol=0.2)

    # the decoupled model's fused bucket against the per-day loop on the corrected forcing
    m = model("auto", state_feedback=False, **kw)
    out = m(forcing, static)
    corr = out.corrections
    prec = forcing[..., 1] * corr["precip_factor"][:, None]
    tair = forcing[..., 2] + corr["temperature_offset"][:, None]
    ref = h2mv.simulate({"rn": forcing[..., 0], "prec": prec, "tair": tair}, out.alpha,
                        {"sm_max": out.sm_max}, out.beta, backend="loop")
    for k in FLUX_NAMES:
        torch.testing.assert_close(out.daily[k], ref[k], rtol=0, atol=1e-10, msg=k)
    g = torch.autograd.grad(out.daily["q_total"].sum() + out.daily["tws"].sum(),
                            m.correction_head.weight, retain_graph=True)[0]
    ref_g = torch.autograd.grad(ref.q_total.sum() + ref.tws.sum(), m.correction_head.weight)[0]
    torch.testing.assert_close(g, ref_g, rtol=1e-8, atol=1e-10)
    # water balance on the corrected precipitation: rain where warm, β_snow · c_P · prec
    # where frozen
    frozen = tair - 273.15 <= 0
    want = torch.where(frozen, prec * out.beta["snow"], prec)
    torch.testing.assert_close(out.daily["rainfall"] + out.daily["snow_acc"], want,
                               rtol=1e-12, atol=1e-12)
    assert bool(frozen.any()) and bool((~frozen).any())


def test_fused_feedback_differentiates_the_corrected_forcing_as_the_loop_does():
    """With per-basin c_P and δ_T the forcing the bucket reads carries a gradient: the fused
    op (chosen by ``auto`` on the CPU) gives the loop's values and gradients, also in
    checkpointed chunks, and its forcing cotangent is the loop's for prec and tair."""
    forcing, static = inputs(days=50, seed=7)
    kw = {"basin_precip_factor": True, "basin_temperature_offset": True,
          "basin_baseflow": True}
    m = model("auto", **kw)
    assert m.fused_feedback_reason(forcing.clone().requires_grad_(True)) is None
    ref = run("loop", forcing, static, **kw)
    for extra in ({}, {"time_chunk": 9}):
        fused = run("fused", forcing, static, **kw, **extra)
        assert_same(fused, ref)
        assert fused[1]["correction_head.weight"].abs().sum() > 0
    # a forcing that carries a gradient into the LSTM too (a sensitivity study) runs the
    # loop: the fused op differentiates only the bucket's forcing
    f = forcing.clone().requires_grad_(True)
    d = m.drivers(f, static)
    assert "LSTM" in m.fused_feedback_reason(d.forcing, d.f_norm)
    with pytest.raises(ValueError, match="LSTM's forcing requires a gradient"):
        model("fused")(f, static)
    out = model("auto")(f, static)
    weighted_loss(out, 50).backward()
    assert bool((f.grad[..., 0] != 0).any())  # rn reaches the LSTM


def test_fused_feedback_forcing_cotangent_is_the_bucket_adjoints():
    """The op's own cotangent of the bucket's forcing: prec and tair as autograd through the
    per-day loop gives them with the LSTM's input held fixed; rn none."""
    forcing, static = inputs(days=40, seed=8)
    grads = []
    for backend in ("loop", "fused"):
        m = model(backend)
        f = forcing.clone().requires_grad_(True)
        d = m.drivers(forcing, static)._replace(forcing=f)
        scan = scans.DayLoop() if backend == "loop" else scans.FusedFeedback()
        daily, _, _ = scan(m, d, m.initial_carry(6, f.device))
        w = torch.linspace(0.5, 1.5, 40, dtype=D)
        sum((v * w).sum() for v in daily.values()).backward()
        grads.append(f.grad)
    torch.testing.assert_close(grads[1][..., 1:], grads[0][..., 1:], rtol=1e-9, atol=1e-10)
    assert bool((grads[1][..., 0] == 0).all())
    assert bool((grads[1][..., 1:] != 0).any())
