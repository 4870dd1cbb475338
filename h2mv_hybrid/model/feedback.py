"""The state-feedback recurrence (LSTM cell → head → bucket day → storages back) as one op.

Run day by day with autograd (``HybridH2MV`` with ``feedback_backend="loop"``), every day
records some 60 small operations (the LSTM cell's, the head's, the activations' and one
per bucket equation) and replays as many in backward: on the CPU, dispatch and the tape
cost more than the arithmetic. :class:`FeedbackScan` runs the same recurrence as one
autograd function with a hand-written backward:

- Forward, per day: one ``addmm`` for the LSTM gates, five in-place element-wise ops for
  the cell, one ``addmm`` for the head, and one compiled kernel
  (:func:`process_layers.fused.day_forward`) for the activations and the whole bucket day.
- Backward, per day: the bucket adjoint (:func:`process_layers.fused.day_backward`), one
  compiled kernel for the head and LSTM-cell adjoint, and one ``mm`` for the cotangent
  of the next input. Weight gradients are summed over blocks of days in one ``mm``
  each instead of one per day.

Same parameters, same arithmetic (up to the order of floating-point sums): tests compare
both backends value by value and gradient by gradient in float64.

The LSTM's input is ``[f_norm (3), code, log1p(states / scale) (3), fAPAR]``, as in
``HybridH2MV``. The code part does not change over days, so its projection (with both
biases) is computed once per sequence; each day multiplies only ``x = [h, f_norm,
log1p(states / scale), fAPAR]`` by ``w_x = [W_hh | W_ih columns of f_norm, states,
fAPAR]``.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from process_layers.fused import CONSTANTS, N_DAY_OUT, PARALLEL_CELLS, day_kernels

#: Days whose gate cotangents are gathered before one weight-gradient ``mm``.
BLOCK_DAYS = 64


def _lstm_backward(g_x, g_raw, w_head, gates, c_prev, tanh_c, g_c, g_gates, g_h, g_code):  # noqa: D103
    # Adjoint of one day's head and LSTM cell for every cell. g_x [C, H + 7]: cotangent
    # of the next day's input (its first H columns are h); g_raw [C, 7], w_head [7, H]:
    # the head's; gates [C, 4H]: activated i, f, g, o; c_prev, tanh_c [C, H]. g_c [C, H]:
    # in, the cotangent of c from the next day; out, that of c_prev. Writes g_gates [C, 4H]
    # (cotangents of the gate pre-activations), adds them to g_code [C, 4H]; g_h [C, H] is
    # scratch. No literal constants: they would promote float32 arithmetic to float64 and
    # keep the inner loops from vectorizing.
    n_cells, hidden = c_prev.shape
    for c in prange(n_cells):
        for j in range(hidden):
            g_h[c, j] = g_x[c, j]
        for k in range(g_raw.shape[1]):
            gr = g_raw[c, k]
            for j in range(hidden):
                g_h[c, j] += gr * w_head[k, j]
        for j in range(hidden):
            gh = g_h[c, j]
            i = gates[c, j]
            f = gates[c, hidden + j]
            g = gates[c, 2 * hidden + j]
            o = gates[c, 3 * hidden + j]
            tc = tanh_c[c, j]
            gc = g_c[c, j] + gh * (o - o * tc * tc)
            g_gates[c, j] = gc * g * (i - i * i)
            g_gates[c, hidden + j] = gc * c_prev[c, j] * (f - f * f)
            g_gates[c, 2 * hidden + j] = gc * (i - i * g * g)
            g_gates[c, 3 * hidden + j] = gh * tc * (o - o * o)
            g_c[c, j] = gc * f
        for j in range(4 * hidden):
            g_code[c, j] += g_gates[c, j]


def _encode(x, fn, st, out, t, scale, with_forcing):  # noqa: D103
    # The non-h part of one day's LSTM input x [C, H + 7]: normalized forcing fn [C, 3]
    # (if with_forcing), log1p(storages / scale) from st [C, 3], and fAPAR of day t from
    # out [28, C, T] (the previous day's; t = -1: leave the initial value).
    n_cells, width = x.shape
    hidden = width - 7
    for c in prange(n_cells):
        if with_forcing:
            for k in range(3):
                x[c, hidden + k] = fn[c, k]
        for k in range(3):
            x[c, hidden + 3 + k] = np.log1p(st[c, k] / scale)
        if t >= 0:
            x[c, hidden + 6] = out[out.shape[0] - 1, c, t]


_LSTM_BACKWARD = {p: njit(parallel=p, cache=True)(_lstm_backward) for p in (False, True)}
_ENCODE = {p: njit(parallel=p, cache=True)(_encode) for p in (False, True)}


class FeedbackScan(torch.autograd.Function):
    """Autograd function: the state-feedback LSTM and bucket over a span of days (CPU).

    Inputs (one floating dtype; the first four carry no gradient):

    - ``keep``: whether backward will run (save the per-day buffers); without it only
      two days of buffers are held.
    - ``f_norm`` [C, T, 3] normalized forcing; ``forcing`` [C, T, 3] rn (W m⁻²), prec
      (mm day⁻¹), tair (K); ``scale`` (float, mm): storages enter as log1p(s / scale).
    - ``code_proj`` [C, 4H]: the code's input projection plus both LSTM biases;
      ``w_x`` [4H, H + 7]; ``w_head`` [7, H]; ``b_head`` [7].
    - ``sm_max`` [C]; ``beta_snow``, ``beta_gw`` (0-d).
    - The carry at the start: ``swe``, ``sm``, ``gw``, ``fapar`` [C]; ``h``, ``c`` [C, H].

    Returns ``daily`` [28, C, T] (the 21 fluxes of ``FLUX_NAMES``, then the 7 α of
    ``ALPHA_NAMES``), and the final ``h`` and ``c`` [C, H].
    """

    @staticmethod
    def forward(ctx, keep, f_norm, forcing, scale, code_proj, w_x, w_head, b_head,  # noqa: D102
                sm_max, beta_snow, beta_gw, swe0, sm0, gw0, fapar0, h0, c0):
        n_cells, n_days, _ = forcing.shape
        hidden = h0.shape[1]
        dtype = code_proj.dtype
        new = lambda *shape: torch.empty(shape, dtype=dtype)  # noqa: E731
        fn = f_norm.detach().transpose(0, 1).to(dtype).contiguous()  # [T, C, 3]
        fo = forcing.detach().transpose(0, 1).to(dtype).contiguous()
        code_proj, w_x, w_head, b_head, sm_max = (
            x.detach().contiguous() for x in (code_proj, w_x, w_head, b_head, sm_max))
        betas = torch.stack([beta_snow.detach(), beta_gw.detach()]).to(dtype)
        h_ = slice(0, hidden)
        g_rows = slice(2 * hidden, 3 * hidden)
        # tanh(z) = 2σ(2z) − 1 (torch's CPU tanh costs several sigmoids): with the cell-gate
        # rows doubled, one sigmoid serves all four gates; the same for tanh(c) below.
        w_x2, code_proj2 = w_x.clone(), code_proj.clone()
        w_x2[g_rows] *= 2
        code_proj2[:, g_rows] *= 2
        w_x2_t, w_head_t = w_x2.t(), w_head.t()
        # Without gradients, two slots of each per-day buffer are enough.
        n_slot = n_days + 1 if keep else 2
        n_step = n_days if keep else 1
        x = new(n_slot, n_cells, hidden + 7)  # [h, f_norm, log1p(s / scale), fapar]
        cb = new(n_slot, n_cells, hidden)
        st = new(n_slot, n_cells, 3)
        gates = new(n_step, n_cells, 4 * hidden)
        tanh_c = new(n_step, n_cells, hidden)
        raw = new(n_step, n_cells, 7)
        out = new(N_DAY_OUT, n_cells, n_days)
        torch.stack([swe0, sm0, gw0], 1, out=st[0])
        cb[0] = c0
        x[0, :, h_] = h0
        x[0, :, hidden + 6] = fapar0
        if keep:
            x[:n_days, :, hidden:hidden + 3] = fn
        # Per-day views, made in bulk.
        xs, x_h, cbs = x.unbind(0), x[:, :, h_].unbind(0), cb.unbind(0)
        gts, tcs, raws = gates.unbind(0), tanh_c.unbind(0), raw.unbind(0)
        i_g, f_g, c_g, o_g = (gates[:, :, k * hidden:(k + 1) * hidden].unbind(0)
                              for k in range(4))
        x_np, st_np, raw_np, out_np, fn_np, fo_np = (
            a.numpy() for a in (x, st, raw, out, fn, fo))
        sm_max_np, betas_np = sm_max.numpy(), betas.numpy()
        forward_day = day_kernels(n_cells)[0]
        encode = _ENCODE[n_cells >= PARALLEL_CELLS]
        for t in range(n_days):
            i0, i1 = (t, t + 1) if keep else (t % 2, (t + 1) % 2)
            s = t if keep else 0
            if t == 0:
                encode(x_np[0], fn_np[0], st_np[0], out_np, -1, scale, not keep)
            torch.addmm(code_proj2, xs[i0], w_x2_t, out=gts[s])
            gts[s].sigmoid_()
            c_g[s].mul_(2).sub_(1)
            torch.mul(f_g[s], cbs[i0], out=cbs[i1])
            cbs[i1].addcmul_(i_g[s], c_g[s])
            torch.mul(cbs[i1], 2, out=tcs[s])
            tcs[s].sigmoid_().mul_(2).sub_(1)
            torch.mul(o_g[s], tcs[s], out=x_h[i1])
            torch.addmm(b_head, x_h[i1], w_head_t, out=raws[s])
            forward_day(raw_np[s], fo_np[t], st_np[i0], sm_max_np, betas_np, CONSTANTS, out_np,
                        t, st_np[i1])
            if t + 1 < n_days:
                encode(x_np[i1], fn_np[t + 1], st_np[i1], out_np, t, scale, not keep)
        last = n_days if keep else n_days % 2
        h_end, c_end = x[last, :, :hidden].clone(), cb[last].clone()
        if keep:
            ctx.save_for_backward(fo, code_proj, w_x, w_head, sm_max, betas, x, cb, st, gates,
                                  tanh_c, raw)
            ctx.scale = scale
        ctx.set_materialize_grads(False)
        return out, h_end, c_end

    @staticmethod
    def backward(ctx, g_out, g_h_end, g_c_end):  # noqa: D102
        fo, code_proj, w_x, w_head, sm_max, betas, x, cb, st, gates, tanh_c, raw = (
            ctx.saved_tensors)
        scale = ctx.scale
        n_days, n_cells, _ = fo.shape
        hidden = cb.shape[2]
        dtype = code_proj.dtype
        zeros = lambda *shape: torch.zeros(shape, dtype=dtype)  # noqa: E731
        g_out = zeros(N_DAY_OUT, n_cells, n_days) if g_out is None else g_out.to(dtype).contiguous()
        g_x = zeros(n_cells, hidden + 7)  # cotangent of the next day's LSTM input
        if g_h_end is not None:
            g_x[:, :hidden] = g_h_end
        g_c = zeros(n_cells, hidden) if g_c_end is None else g_c_end.to(dtype).clone()
        lam = zeros(n_cells, 3)
        g_feed = zeros(n_cells, 4)
        g_raw = torch.empty(n_days, n_cells, 7, dtype=dtype)
        g_sm_max, g_betas = zeros(n_cells), zeros(2, n_cells)
        g_code_proj, g_w_x, g_w_head = zeros(n_cells, 4 * hidden), zeros(*w_x.shape), zeros(
            7, hidden + 7)
        block = torch.empty(min(BLOCK_DAYS, n_days), n_cells, 4 * hidden, dtype=dtype)
        lstm_backward = _LSTM_BACKWARD[n_cells >= PARALLEL_CELLS]
        g_h = torch.empty(n_cells, hidden, dtype=dtype)
        g_h_np, g_c_np, g_x_np = g_h.numpy(), g_c.numpy(), g_x.numpy()
        g_code_np = g_code_proj.numpy()
        w_head_np = w_head.numpy()
        gates_np, cb_np, tanh_c_np, block_np = (a.numpy() for a in (gates, cb, tanh_c, block))
        raw_np, fo_np, st_np, sm_max_np, betas_np, g_out_np, lam_np, g_feed_np, g_raw_np = (
            a.numpy() for a in (raw, fo, st, sm_max, betas, g_out, lam, g_feed, g_raw))
        g_sm_max_np, g_betas_np = g_sm_max.numpy(), g_betas.numpy()
        backward_day = day_kernels(n_cells)[1]
        for t in range(n_days - 1, -1, -1):
            # End-of-day storages and fAPAR also entered the next day's LSTM input.
            torch.div(g_x[:, hidden + 3:hidden + 6], st[t + 1] + scale, out=g_feed[:, :3])
            g_feed[:, 3] = g_x[:, hidden + 6]
            backward_day(raw_np[t], fo_np[t], st_np[t], sm_max_np, betas_np, CONSTANTS, g_out_np,
                         t, lam_np, g_feed_np, g_raw_np[t], g_sm_max_np, g_betas_np)
            start = t - t % BLOCK_DAYS
            lstm_backward(g_x_np, g_raw_np[t], w_head_np, gates_np[t], cb_np[t], tanh_c_np[t],
                          g_c_np, block_np[t - start], g_h_np, g_code_np)
            torch.mm(block[t - start], w_x, out=g_x)
            if t == start:
                n = min(start + BLOCK_DAYS, n_days) - start
                g_blk = block[:n].reshape(-1, 4 * hidden)
                g_w_x.addmm_(g_blk.t(), x[start:start + n].reshape(-1, hidden + 7))
                # h_t is x[t + 1][:, :H]; multiplying whole rows avoids copying the slice.
                g_w_head.addmm_(g_raw[start:start + n].reshape(-1, 7).t(),
                                x[start + 1:start + n + 1].reshape(-1, hidden + 7))
        g_s0 = lam + g_x[:, hidden + 3:hidden + 6] / (st[0] + scale)
        return (
            None, None, None, None, g_code_proj, g_w_x, g_w_head[:, :hidden], g_raw.sum((0, 1)),
            g_sm_max,
            g_betas[0].sum(), g_betas[1].sum(), g_s0[:, 0], g_s0[:, 1], g_s0[:, 2],
            g_x[:, hidden + 6].clone(), g_x[:, :hidden].clone(), g_c,
        )


def feedback_scan(f_norm: Tensor, forcing: Tensor, scale: float, code_proj: Tensor, w_x: Tensor,
                  w_head: Tensor, b_head: Tensor, sm_max: Tensor, beta_snow: Tensor,
                  beta_gw: Tensor, carry: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`FeedbackScan` applied; ``carry`` is (swe, sm, gw, h, c, fapar)."""
    swe, sm, gw, h, c, fapar = carry
    params = (code_proj, w_x, w_head, b_head, sm_max, beta_snow, beta_gw, swe, sm, gw, fapar, h, c)
    # Whether backward can run: inside a Function, needs_input_grad ignores no_grad mode.
    keep = torch.is_grad_enabled() and any(p.requires_grad for p in params)
    return FeedbackScan.apply(keep, f_norm, forcing, scale, *params)

