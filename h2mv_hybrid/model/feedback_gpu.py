"""The state-feedback recurrence on a GPU: one cuBLAS product and one Triton kernel per day.

:class:`~h2mv_hybrid.model.feedback.FeedbackScan` runs the recurrence on the CPU with numba;
this is the same autograd contract for CUDA tensors. Run day by day with autograd on a GPU
(the day loop), a day is some 60 kernel launches forward and as many backward, each far
too small to fill the device. Here a day is:

- forward: the gate pre-activations ``code_proj + x @ w_x.T`` (one ``addmm``), then one
  kernel (:func:`_day_forward`) for the LSTM cell's element-wise gates, the head's seven
  dot products, the α activations, the whole bucket day (:mod:`process_layers.triton_day`)
  and the next day's input encoding;
- backward: one kernel (:func:`_day_backward`) for the bucket adjoint, the activations'
  and the head's adjoint and the LSTM cell's, then one ``mm`` for the cotangent of the
  day's input; weight gradients are summed over blocks of days in one ``mm`` each.

The tape holds per day the LSTM input, cell state, activated gates, storages and head
outputs (tanh(c) is recomputed in backward); ``chunk`` checkpoints it as on the CPU. The
bucket computes in float64 whatever the networks' dtype; the LSTM in the networks' dtype.
Outputs are written day-major ([28, days, cells], coalesced) and returned as a
[28, cells, days] view.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from h2mv_hybrid.model.feedback import (
    BLOCK_DAYS,
    N_SETUP,
    _Setup,
    _Starts,
    prepare,
    run_spans,
)
from process_layers.fused import N_DAY_OUT, beta_dims, beta_gradients
from process_layers.triton_day import (
    NO_FMA,
    constants,
    day,
    day_adjoint,
    energy,
    kernel_constants,
    log1p,
    sigmoid,
    softplus,
    store_fluxes,
)

# The day kernel is one launch per day: the day index is not specialized on (a
# compilation per value class otherwise).
#: Cells per program of the day kernels (a [16, next_pow2(H)] tile per gate).
BLOCK_C = 16


@triton.jit
def _gate(z):
    # σ(z) in the networks' dtype
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _tanh(z):
    # tanh(z) = 2σ(2z) − 1
    return 2.0 / (1.0 + tl.exp(-2.0 * z)) - 1.0


@triton.jit(do_not_specialize=["t_out"])
def _day_forward(gates, c_prev, c_next, x_next, raw, w_head, b_head, fo, fn_next, st_prev,
                 st_next, out, smax, betas, n_cells, hidden, plane, t_out, consts,
                 HAS_NEXT: tl.constexpr, BLOCK: tl.constexpr, BLOCK_H: tl.constexpr):
    # gates [C, 4H]: in, the pre-activations; out, the activated i, f, g, o. c_prev,
    # c_next [C, H]; x_next [C, H + 7]: the next day's LSTM input, written whole (h,
    # forcing of the next day if HAS_NEXT, log1p(storages / scale), fAPAR); raw [C, 7];
    # w_head [7, H]; b_head [7]; fo [C, 3] forcing of the day, fn_next [C, 3] normalized
    # forcing of the next; st_prev, st_next [C, 3]; out [28, T, C]: day column t_out;
    # consts: kernel_constants(device, state scale).
    rn_factor, t_zero, eps = constants(consts)
    scale = tl.load(consts + 3)
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = c < n_cells
    c = tl.where(m, c, 0)
    j = tl.arange(0, BLOCK_H)
    mj = j < hidden
    m2 = m[:, None] & mj[None, :]
    g_row = c[:, None] * (4 * hidden) + j[None, :]
    zi = tl.load(gates + g_row, mask=m2, other=0.0)
    zf = tl.load(gates + g_row + hidden, mask=m2, other=0.0)
    zg = tl.load(gates + g_row + 2 * hidden, mask=m2, other=0.0)
    zo = tl.load(gates + g_row + 3 * hidden, mask=m2, other=0.0)
    i_g, f_g, g_g, o_g = _gate(zi), _gate(zf), _tanh(zg), _gate(zo)
    tl.store(gates + g_row, i_g, mask=m2)
    tl.store(gates + g_row + hidden, f_g, mask=m2)
    tl.store(gates + g_row + 2 * hidden, g_g, mask=m2)
    tl.store(gates + g_row + 3 * hidden, o_g, mask=m2)
    h_row = c[:, None] * hidden + j[None, :]
    cn = f_g * tl.load(c_prev + h_row, mask=m2, other=0.0) + i_g * g_g
    tl.store(c_next + h_row, cn, mask=m2)
    h = tl.where(m2, o_g * _tanh(cn), 0.0)
    width = hidden + 7
    x_row = c * width
    tl.store(x_next + x_row[:, None] + j[None, :], h, mask=m2)
    dt = raw.dtype.element_ty
    # the head: raw_k = h · w_head[k] + b_head[k], rounded to the networks' dtype as a
    # matrix product would leave it, then activated in float64 as the bucket reads it
    r0 = (tl.sum(h * tl.load(w_head + j, mask=mj, other=0.0)[None, :], 1)
          + tl.load(b_head)).to(dt)
    r1 = (tl.sum(h * tl.load(w_head + hidden + j, mask=mj, other=0.0)[None, :], 1)
          + tl.load(b_head + 1)).to(dt)
    r2 = (tl.sum(h * tl.load(w_head + 2 * hidden + j, mask=mj, other=0.0)[None, :], 1)
          + tl.load(b_head + 2)).to(dt)
    r3 = (tl.sum(h * tl.load(w_head + 3 * hidden + j, mask=mj, other=0.0)[None, :], 1)
          + tl.load(b_head + 3)).to(dt)
    r4 = (tl.sum(h * tl.load(w_head + 4 * hidden + j, mask=mj, other=0.0)[None, :], 1)
          + tl.load(b_head + 4)).to(dt)
    r5 = (tl.sum(h * tl.load(w_head + 5 * hidden + j, mask=mj, other=0.0)[None, :], 1)
          + tl.load(b_head + 5)).to(dt)
    r6 = (tl.sum(h * tl.load(w_head + 6 * hidden + j, mask=mj, other=0.0)[None, :], 1)
          + tl.load(b_head + 6)).to(dt)
    tl.store(raw + c * 7, r0, mask=m)
    tl.store(raw + c * 7 + 1, r1, mask=m)
    tl.store(raw + c * 7 + 2, r2, mask=m)
    tl.store(raw + c * 7 + 3, r3, mask=m)
    tl.store(raw + c * 7 + 4, r4, mask=m)
    tl.store(raw + c * 7 + 5, r5, mask=m)
    tl.store(raw + c * 7 + 6, r6, mask=m)
    am, _ = softplus(r0.to(tl.float64))
    aei, _ = softplus(r1.to(tl.float64))
    aes, _ = sigmoid(r2.to(tl.float64))
    at, _ = sigmoid(r3.to(tl.float64))
    ars, _ = sigmoid(r4.to(tl.float64))
    arg, _ = sigmoid(r5.to(tl.float64))
    f, _ = sigmoid(r6.to(tl.float64))
    (frozen, s_acc, pos_t, m_pot, melt, swe_raw, swe1, rain, ic, ei0, ei, rn1, etp1, es, sm1,
     rn2, etp2, tr, sm2, et, ef, w, wd, ratio, rmin, rsf, rs, sm3, rgf, rg, qsf, qs, qb, qt,
     gw1, tws) = day(
        energy(tl.load(fo + c * 3).to(tl.float64), rn_factor),
        tl.load(fo + c * 3 + 1).to(tl.float64), tl.load(fo + c * 3 + 2).to(tl.float64) - t_zero,
        am, aei, aes, at, ars, arg, f, tl.load(smax + c).to(tl.float64),
        tl.load(betas + c).to(tl.float64), tl.load(betas + n_cells + c).to(tl.float64),
        tl.load(betas + 2 * n_cells + c).to(tl.float64),
        tl.load(st_prev + c * 3).to(tl.float64), tl.load(st_prev + c * 3 + 1).to(tl.float64),
        tl.load(st_prev + c * 3 + 2).to(tl.float64), eps)
    o = (c * 0 + t_out).to(tl.int64) * n_cells + c
    pl = o * 0 + plane
    store_fluxes(out, pl, o, m, s_acc, melt, swe1, rain, ei, es, tr, et, ef, w, rsf, rs, rgf, rg,
                 sm3, qsf, qs, qb, qt, gw1, tws)
    tl.store(out + 21 * pl + o, am.to(dt), mask=m)
    tl.store(out + 22 * pl + o, aei.to(dt), mask=m)
    tl.store(out + 23 * pl + o, aes.to(dt), mask=m)
    tl.store(out + 24 * pl + o, at.to(dt), mask=m)
    tl.store(out + 25 * pl + o, ars.to(dt), mask=m)
    tl.store(out + 26 * pl + o, arg.to(dt), mask=m)
    tl.store(out + 27 * pl + o, f.to(dt), mask=m)
    # the storages as stored carry on; the next day's LSTM input reads them and fAPAR
    swe_s, sm_s, gw_s, f_s = swe1.to(dt), sm3.to(dt), gw1.to(dt), f.to(dt)
    tl.store(st_next + c * 3, swe_s, mask=m)
    tl.store(st_next + c * 3 + 1, sm_s, mask=m)
    tl.store(st_next + c * 3 + 2, gw_s, mask=m)
    if HAS_NEXT:
        tl.store(x_next + x_row + hidden, tl.load(fn_next + c * 3), mask=m)
        tl.store(x_next + x_row + hidden + 1, tl.load(fn_next + c * 3 + 1), mask=m)
        tl.store(x_next + x_row + hidden + 2, tl.load(fn_next + c * 3 + 2), mask=m)
    tl.store(x_next + x_row + hidden + 3, log1p(swe_s.to(tl.float64) / scale).to(dt), mask=m)
    tl.store(x_next + x_row + hidden + 4, log1p(sm_s.to(tl.float64) / scale).to(dt), mask=m)
    tl.store(x_next + x_row + hidden + 5, log1p(gw_s.to(tl.float64) / scale).to(dt), mask=m)
    tl.store(x_next + x_row + hidden + 6, f_s, mask=m)


@triton.jit
def _g_out(g_out, k: tl.constexpr, pl, o):
    return tl.load(g_out + k * pl + o).to(tl.float64)


@triton.jit(do_not_specialize=["t_out"])
def _day_backward(raw, fo, st_prev, st_next, smax, betas, g_out, lam, g_x, gates, c_prev,
                  c_next, g_c, w_head, g_gates, g_raw, g_smax, g_betas, n_cells, hidden,
                  plane, t_out, consts, BLOCK: tl.constexpr, BLOCK_H: tl.constexpr):
    # Reverse mode of _day_forward. g_out [28, T, C]: the outputs' cotangents (column
    # t_out); lam [C, 3]: in, the cotangents of the end-of-day storages from the next
    # day's bucket, out, those of the start-of-day ones; g_x [C, H + 7]: the cotangent of
    # the next day's LSTM input; g_c [C, H]: in, that of c_next, out, that of c_prev.
    # Writes g_gates [C, 4H] (pre-activation cotangents) and g_raw [C, 7]; adds to
    # g_smax [C] and g_betas [3, C].
    rn_factor, t_zero, eps = constants(consts)
    scale = tl.load(consts + 3)
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = c < n_cells
    c = tl.where(m, c, 0)
    dt = raw.dtype.element_ty
    width = hidden + 7
    x_row = c * width
    # end-of-day storages and fAPAR also entered the next day's LSTM input
    gf0 = (tl.load(g_x + x_row + hidden + 3) / (tl.load(st_next + c * 3) + scale)).to(dt)
    gf1 = (tl.load(g_x + x_row + hidden + 4) / (tl.load(st_next + c * 3 + 1) + scale)).to(dt)
    gf2 = (tl.load(g_x + x_row + hidden + 5) / (tl.load(st_next + c * 3 + 2) + scale)).to(dt)
    gf3 = tl.load(g_x + x_row + hidden + 6).to(tl.float64)
    am, d_am = softplus(tl.load(raw + c * 7).to(tl.float64))
    aei, d_aei = softplus(tl.load(raw + c * 7 + 1).to(tl.float64))
    aes, d_aes = sigmoid(tl.load(raw + c * 7 + 2).to(tl.float64))
    at, d_at = sigmoid(tl.load(raw + c * 7 + 3).to(tl.float64))
    ars, d_ars = sigmoid(tl.load(raw + c * 7 + 4).to(tl.float64))
    arg, d_arg = sigmoid(tl.load(raw + c * 7 + 5).to(tl.float64))
    f, d_f = sigmoid(tl.load(raw + c * 7 + 6).to(tl.float64))
    o = (c * 0 + t_out).to(tl.int64) * n_cells + c
    pl = o * 0 + plane
    # the forcing is data here: its cotangents (the last two) are dropped
    (a_am, a_aei, a_aes, a_at, a_ars, a_arg, a_f, a_swe, a_sm, a_gw, d_smx, d_bs, d_bg, d_kg, _,
     _) = day_adjoint(
            energy(tl.load(fo + c * 3).to(tl.float64), rn_factor),
            tl.load(fo + c * 3 + 1).to(tl.float64),
            tl.load(fo + c * 3 + 2).to(tl.float64) - t_zero, am, aei, aes, at, ars, arg, f,
            tl.load(smax + c).to(tl.float64), tl.load(betas + c).to(tl.float64),
            tl.load(betas + n_cells + c).to(tl.float64),
            tl.load(betas + 2 * n_cells + c).to(tl.float64),
            tl.load(st_prev + c * 3).to(tl.float64), tl.load(st_prev + c * 3 + 1).to(tl.float64),
            tl.load(st_prev + c * 3 + 2).to(tl.float64), eps,
            _g_out(g_out, 0, pl, o), _g_out(g_out, 1, pl, o), _g_out(g_out, 2, pl, o),
            _g_out(g_out, 3, pl, o), _g_out(g_out, 4, pl, o), _g_out(g_out, 5, pl, o),
            _g_out(g_out, 6, pl, o), _g_out(g_out, 7, pl, o), _g_out(g_out, 8, pl, o),
            _g_out(g_out, 9, pl, o), _g_out(g_out, 10, pl, o), _g_out(g_out, 11, pl, o),
            _g_out(g_out, 12, pl, o), _g_out(g_out, 13, pl, o), _g_out(g_out, 14, pl, o),
            _g_out(g_out, 15, pl, o), _g_out(g_out, 16, pl, o), _g_out(g_out, 17, pl, o),
            _g_out(g_out, 18, pl, o), _g_out(g_out, 19, pl, o), _g_out(g_out, 20, pl, o),
            tl.load(lam + c * 3).to(tl.float64) + gf0.to(tl.float64),
            tl.load(lam + c * 3 + 1).to(tl.float64) + gf1.to(tl.float64),
            tl.load(lam + c * 3 + 2).to(tl.float64) + gf2.to(tl.float64))
    # α also leave as outputs; fAPAR also enters the networks the next day
    g0 = ((a_am + _g_out(g_out, 21, pl, o)) * d_am).to(dt)
    g1 = ((a_aei + _g_out(g_out, 22, pl, o)) * d_aei).to(dt)
    g2 = ((a_aes + _g_out(g_out, 23, pl, o)) * d_aes).to(dt)
    g3 = ((a_at + _g_out(g_out, 24, pl, o)) * d_at).to(dt)
    g4 = ((a_ars + _g_out(g_out, 25, pl, o)) * d_ars).to(dt)
    g5 = ((a_arg + _g_out(g_out, 26, pl, o)) * d_arg).to(dt)
    g6 = ((a_f + _g_out(g_out, 27, pl, o) + gf3) * d_f).to(dt)
    tl.store(g_raw + c * 7, g0, mask=m)
    tl.store(g_raw + c * 7 + 1, g1, mask=m)
    tl.store(g_raw + c * 7 + 2, g2, mask=m)
    tl.store(g_raw + c * 7 + 3, g3, mask=m)
    tl.store(g_raw + c * 7 + 4, g4, mask=m)
    tl.store(g_raw + c * 7 + 5, g5, mask=m)
    tl.store(g_raw + c * 7 + 6, g6, mask=m)
    tl.store(lam + c * 3, a_swe.to(dt), mask=m)
    tl.store(lam + c * 3 + 1, a_sm.to(dt), mask=m)
    tl.store(lam + c * 3 + 2, a_gw.to(dt), mask=m)
    tl.store(g_smax + c, (tl.load(g_smax + c) + d_smx).to(dt), mask=m)
    tl.store(g_betas + c, (tl.load(g_betas + c) + d_bs).to(dt), mask=m)
    tl.store(g_betas + n_cells + c, (tl.load(g_betas + n_cells + c) + d_bg).to(dt), mask=m)
    tl.store(g_betas + 2 * n_cells + c, (tl.load(g_betas + 2 * n_cells + c) + d_kg).to(dt),
             mask=m)
    # the head's adjoint, then the LSTM cell's
    j = tl.arange(0, BLOCK_H)
    mj = j < hidden
    m2 = m[:, None] & mj[None, :]
    g_h = tl.load(g_x + x_row[:, None] + j[None, :], mask=m2, other=0.0)
    g_h += g0[:, None] * tl.load(w_head + j, mask=mj, other=0.0)[None, :]
    g_h += g1[:, None] * tl.load(w_head + hidden + j, mask=mj, other=0.0)[None, :]
    g_h += g2[:, None] * tl.load(w_head + 2 * hidden + j, mask=mj, other=0.0)[None, :]
    g_h += g3[:, None] * tl.load(w_head + 3 * hidden + j, mask=mj, other=0.0)[None, :]
    g_h += g4[:, None] * tl.load(w_head + 4 * hidden + j, mask=mj, other=0.0)[None, :]
    g_h += g5[:, None] * tl.load(w_head + 5 * hidden + j, mask=mj, other=0.0)[None, :]
    g_h += g6[:, None] * tl.load(w_head + 6 * hidden + j, mask=mj, other=0.0)[None, :]
    g_row = c[:, None] * (4 * hidden) + j[None, :]
    i_g = tl.load(gates + g_row, mask=m2, other=0.0)
    f_g = tl.load(gates + g_row + hidden, mask=m2, other=0.0)
    g_g = tl.load(gates + g_row + 2 * hidden, mask=m2, other=0.0)
    o_g = tl.load(gates + g_row + 3 * hidden, mask=m2, other=0.0)
    h_row = c[:, None] * hidden + j[None, :]
    tc = _tanh(tl.load(c_next + h_row, mask=m2, other=0.0))
    gc = tl.load(g_c + h_row, mask=m2, other=0.0) + g_h * (o_g - o_g * tc * tc)
    tl.store(g_gates + g_row, gc * g_g * (i_g - i_g * i_g), mask=m2)
    tl.store(g_gates + g_row + hidden,
             gc * tl.load(c_prev + h_row, mask=m2, other=0.0) * (f_g - f_g * f_g), mask=m2)
    tl.store(g_gates + g_row + 2 * hidden, gc * (i_g - i_g * g_g * g_g), mask=m2)
    tl.store(g_gates + g_row + 3 * hidden, g_h * tc * (o_g - o_g * o_g), mask=m2)
    tl.store(g_c + h_row, gc * f_g, mask=m2)


def _launch(kernel, n_cells: int, hidden: int, *args, **kw) -> None:
    kernel[(triton.cdiv(n_cells, BLOCK_C),)](
        *args, BLOCK=BLOCK_C, BLOCK_H=triton.next_power_of_2(hidden), **kw, **NO_FMA)


class _Tape(NamedTuple):
    """Per-day buffers of a span of n days (slots 0..n for x, cb, st; 0..n-1 for the rest)."""

    x: Tensor  # [n + 1, C, H + 7]: [h, f_norm, log1p(storages / scale), fAPAR]
    cb: Tensor  # [n + 1, C, H]: LSTM cell state
    st: Tensor  # [n + 1, C, 3]: storages swe, sm, gw
    gates: Tensor  # [n, C, 4H]: activated i, f, g, o
    raw: Tensor  # [n, C, 7]: head outputs

    @classmethod
    def empty(cls, n_slot: int, n_step: int, n_cells: int, hidden: int, like: Tensor) -> _Tape:
        """Uninitialized buffers of ``like``'s dtype and device."""
        new = lambda *shape: torch.empty(shape, dtype=like.dtype, device=like.device)  # noqa: E731
        return cls(new(n_slot, n_cells, hidden + 7), new(n_slot, n_cells, hidden),
                   new(n_slot, n_cells, 3), new(n_step, n_cells, 4 * hidden),
                   new(n_step, n_cells, 7))


def _run(p: _Setup, t0: int, t1: int, x0: Tensor, c0: Tensor, s0: Tensor, out: Tensor,
         col0: int, keep: bool) -> _Tape:
    """Days [t0, t1) from the LSTM input ``x0``, cell ``c0``, storages ``s0`` of day t0.

    Writes day t's 28 outputs to column ``t - col0`` of ``out`` [28, days, cells]. With
    ``keep`` every day's buffers are kept; otherwise two slots are reused and slot
    ``(t1 - t0) % 2`` holds the state after the last day.
    """
    n_days, (n_cells, hidden) = t1 - t0, c0.shape
    n_slot, n_step = (n_days + 1, n_days) if keep else (2, 1)
    tape = _Tape.empty(n_slot, n_step, n_cells, hidden, c0)
    tape.x[0], tape.cb[0], tape.st[0] = x0, c0, s0
    w_x_t = p.w_x.t()
    plane = out.shape[1] * n_cells
    consts = kernel_constants(c0.device, p.scale)
    for t in range(t0, t1):
        u = t - t0
        i0, i1, s = (u, u + 1, u) if keep else (u % 2, (u + 1) % 2, 0)
        has_next = t + 1 < len(p.fn)
        torch.addmm(p.code_proj, tape.x[i0], w_x_t, out=tape.gates[s])
        _launch(_day_forward, n_cells, hidden, tape.gates[s], tape.cb[i0], tape.cb[i1],
                tape.x[i1], tape.raw[s], p.w_head, p.b_head, p.fo[t], p.fn[t + 1 if has_next
                                                                          else t],
                tape.st[i0], tape.st[i1], out, p.sm_max, p.betas, n_cells, hidden, plane,
                t - col0, consts, HAS_NEXT=has_next)
    return tape


class FeedbackScanGPU(torch.autograd.Function):
    """:class:`~h2mv_hybrid.model.feedback.FeedbackScan`'s contract on CUDA tensors (Triton).

    Same inputs and outputs; ``daily`` is a [28, cells, days] view of a day-major buffer.
    """

    @staticmethod
    def forward(ctx, keep, chunk, f_norm, forcing, scale, code_proj, w_x, w_head,  # noqa: D102
                b_head, sm_max, beta_snow, beta_gw, swe0, sm0, gw0, fapar0, h0, c0,
                baseflow_half=None):
        p, x0, c0, s0 = prepare(f_norm, forcing, scale, code_proj, w_x, w_head, b_head, sm_max,
                                beta_snow, beta_gw, swe0, sm0, gw0, fapar0, h0, c0,
                                baseflow_half)
        ctx.beta_dims = beta_dims(beta_snow, beta_gw, baseflow_half)
        n_days, n_cells, _ = p.fo.shape
        out = torch.empty(N_DAY_OUT, n_days, n_cells, dtype=c0.dtype, device=c0.device)
        span, whole, saved, h_end, c_end = run_spans(_run, p, x0, c0, s0, out, keep, chunk)
        if keep:
            ctx.save_for_backward(*p[:N_SETUP], *saved)
        ctx.scale, ctx.span, ctx.whole = p.scale, span, whole
        ctx.set_materialize_grads(False)
        return out.transpose(1, 2), h_end, c_end

    @staticmethod
    def backward(ctx, g_out, g_h_end, g_c_end):  # noqa: D102
        saved = ctx.saved_tensors
        p, rest = _Setup(*saved[:N_SETUP], ctx.scale), saved[N_SETUP:]
        n_days, n_cells, _ = p.fo.shape
        hidden = p.w_head.shape[1]
        like = p.code_proj
        zeros = lambda *shape: torch.zeros(shape, dtype=like.dtype, device=like.device)  # noqa: E731
        # day-major cotangents, as the kernel reads them
        g_out = (zeros(N_DAY_OUT, n_days, n_cells) if g_out is None
                 else g_out.to(like.dtype).transpose(1, 2).contiguous())
        g_x = zeros(n_cells, hidden + 7)
        if g_h_end is not None:
            g_x[:, :hidden] = g_h_end
        g_c = zeros(n_cells, hidden) if g_c_end is None else g_c_end.to(like.dtype).clone()
        lam = zeros(n_cells, 3)
        g_sm_max, g_betas, g_b_head = zeros(n_cells), zeros(3, n_cells), zeros(7)
        g_code_proj, g_w_x, g_w_head = zeros(n_cells, 4 * hidden), zeros(*p.w_x.shape), zeros(
            7, hidden + 7)
        span = n_days if ctx.whole else ctx.span
        block = torch.empty(min(BLOCK_DAYS, span, n_days), n_cells, 4 * hidden,
                            dtype=like.dtype, device=like.device)
        plane = n_days * n_cells
        consts = kernel_constants(like.device, p.scale)
        tape = None
        for t0 in reversed(range(0, n_days, span)):
            t1 = min(t0 + span, n_days)
            if ctx.whole:
                tape = _Tape(*rest)
            else:
                tape = None
                k, starts = t0 // span, _Starts(*rest)
                scratch = torch.empty(N_DAY_OUT, t1 - t0, n_cells, dtype=like.dtype,
                                      device=like.device)
                tape = _run(p, t0, t1, starts.x[k], starts.cb[k], starts.st[k], scratch, t0,
                            keep=True)
            g_raw = torch.empty(t1 - t0, n_cells, 7, dtype=like.dtype, device=like.device)
            for t in range(t1 - 1, t0 - 1, -1):
                u = t - t0
                start = u - u % BLOCK_DAYS
                _launch(_day_backward, n_cells, hidden, tape.raw[u], p.fo[t], tape.st[u],
                        tape.st[u + 1], p.sm_max, p.betas, g_out, lam, g_x, tape.gates[u],
                        tape.cb[u], tape.cb[u + 1], g_c, p.w_head, block[u - start], g_raw[u],
                        g_sm_max, g_betas, n_cells, hidden, plane, t, consts)
                torch.mm(block[u - start], p.w_x, out=g_x)
                if u == start:  # weight gradients of a block of days in one mm each
                    n = min(start + BLOCK_DAYS, t1 - t0) - start
                    g_w_x.addmm_(block[:n].reshape(-1, 4 * hidden).t(),
                                 tape.x[start:start + n].reshape(-1, hidden + 7))
                    g_w_head.addmm_(g_raw[start:start + n].reshape(-1, 7).t(),
                                    tape.x[start + 1:start + n + 1].reshape(-1, hidden + 7))
                    g_code_proj += block[:n].sum(0)
            g_b_head += g_raw.sum((0, 1))
        g_s0 = lam + g_x[:, hidden + 3:hidden + 6] / (tape.st[0] + p.scale)
        g_bs, g_bg, *g_half = beta_gradients(g_betas, ctx.beta_dims)
        return (
            None, None, None, None, None, g_code_proj, g_w_x, g_w_head[:, :hidden], g_b_head,
            g_sm_max, g_bs, g_bg, g_s0[:, 0], g_s0[:, 1], g_s0[:, 2],
            g_x[:, hidden + 6].clone(), g_x[:, :hidden].clone(), g_c, *(g_half or [None]),
        )
