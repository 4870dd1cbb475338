"""A whole-sequence LSTM on the CPU as one op: the decoupled configuration's recurrence.

oneDNN's LSTM (what ``nn.LSTM`` runs on the CPU) spends about five times its forward in
backward, and in the decoupled configuration it was 77 % of a 2048-cell training step
(docs/benchmarks.md). :class:`LSTMScan` runs the same recurrence with the layout of the
state-feedback op (:mod:`h2mv_hybrid.model.feedback`):

- Forward, per day: one ``addmm`` of ``[h, x]`` (the day's input row, its inputs
  copied in for all days at once) by ``[W_hh | W_ih]ᵀ`` into the day's gates, and one
  compiled kernel that activates them in place, steps the cell and writes h into the
  next day's input row. The input rows, activated gates and cell states are the tape.
- Backward, per day: one compiled kernel for the cell adjoint and one ``mm`` for the
  cotangent of the day's input row (h's and x's at once); the weight gradients are one
  matrix product per block of 32 days.
- The tape of the last backward is reused by the next forward of the same shape.

(Projecting all days' inputs at once, then adding h W_hhᵀ day by day, was measured and
dropped: at 2048 cells its 1.2 GB buffer, written at once, was read back from memory
every day.)

The gate kernels' arithmetic (a rational tanh in float32, so that they vectorize) is
:mod:`h2mv_hybrid.model.cell_kernels`', shared with the state-feedback scan.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from numba import njit, prange
from torch import Tensor, nn

from h2mv_hybrid.model.cell_kernels import (
    OPTIONS,
    cell_row,
    cell_row_adjoint,
    constants,
    padded_width,
    unpack,
)
from h2mv_hybrid.model.feedback import TapePool

#: Cells from which the gate kernels run in parallel over cells (numba threads).
PARALLEL_CELLS = 256


def _cell_forward(gates, c_prev, c_next, h_next, k, fast):  # noqa: D103
    # One day for every cell. gates [C, 4H]: in, the pre-activations of i, f, g, o; out,
    # their activations (the tape). c_prev [C, H] in; c_next [C, H] out; h_next [C, ≥ H]:
    # h is written to its first H columns (the next day's input row).
    n_cells, hidden = c_prev.shape
    t = unpack(k)
    for c in prange(n_cells):
        cell_row(gates[c], c_prev[c], c_next[c], h_next[c, :hidden], t, fast)


def _cell_backward(gates, c_prev, c_next, g_out, g_rec, g_c, g_gates, k, fast):  # noqa: D103
    # Adjoint of one day. gates [C, 4H]: the activated i, f, g, o. g_out [C, H]: the
    # cotangent of this day's h from outside (the head), g_rec [C, ≥ H]: in its first H
    # columns, that from the next day's gates. g_c [C, H]: in, the cotangent of c_next;
    # out, that of c_prev. Writes g_gates [C, 4H], the cotangents of the gate
    # pre-activations.
    n_cells, hidden = c_prev.shape
    t = unpack(k)
    for c in prange(n_cells):
        cell_row_adjoint(gates[c], g_gates[c], c_prev[c], c_next[c], g_out[c],
                         g_rec[c, :hidden], g_c[c], t, fast)


_FORWARD = {p: njit(parallel=p, **OPTIONS)(_cell_forward) for p in (False, True)}
_BACKWARD = {p: njit(parallel=p, **OPTIONS)(_cell_backward) for p in (False, True)}


#: Days whose gate cotangents are gathered before the weight gradients' product (as in
#: the state-feedback op).
BLOCK_DAYS = 32


def _padded_weights(w_ih: Tensor, w_hh: Tensor, width: int) -> Tensor:
    """[W_hh | W_ih | 0], [4H, width]: the weights of an input row [h, x, zero padding]."""
    hidden, n_in = w_hh.shape[1], w_ih.shape[1]
    w = w_hh.new_zeros(w_hh.shape[0], width)
    w[:, :hidden] = w_hh.detach()
    w[:, hidden:hidden + n_in] = w_ih.detach()
    return w


class _Tape(NamedTuple):
    """What backward reads: every day's LSTM input and activated gates, and the cell state."""

    xs: Tensor  # [T + 1, C, W]: day t's [h_{t-1}, x_t, 0 …] (slot T: h_T, inputs unused)
    gates: Tensor  # [T, C, 4H]: activated i, f, g, o
    c: Tensor  # [T + 1, C, H]


#: The tape of the last backward, for the next forward (:class:`TapePool`); a 2048-cell ×
#: 365-day tape is 1.9 GB, whose page faults a fresh one would cost every step.
_POOL = TapePool()


class LSTMScan(torch.autograd.Function):
    """Autograd function: a one-layer LSTM over whole sequences, batch first (CPU).

    Inputs: ``keep`` (whether backward will run: without it two days of buffers are held);
    ``x`` [C, T, In]; ``h0``, ``c0`` [C, H]; ``w_ih`` [4H, In], ``w_hh`` [4H, H]
    (``nn.LSTM``'s layout and gate order i, f, g, o); ``bias`` [4H] (``b_ih + b_hh``), or
    [C, 4H] per cell (with the projection of inputs that do not change over days, see
    :func:`lstm_scan`), all of one floating dtype. Returns ``hs`` [C, T, H] (a copy: the
    tape is reused), and ``h`` and ``c`` at the end [C, H].
    """

    @staticmethod
    def forward(ctx, keep, x, h0, c0, w_ih, w_hh, bias):  # noqa: D102
        n_cells, n_days, n_in = x.shape
        hidden = w_hh.shape[1]
        dtype = x.dtype
        width = padded_width(hidden + n_in)
        w_t = _padded_weights(w_ih, w_hh, width).t()  # [W, 4H]
        ctx.bias_dim = bias.dim()
        bias = bias.detach()
        key = (n_days, n_cells, n_in, hidden, dtype)
        n_slot = n_days + 1 if keep else 2

        def make() -> _Tape:
            # zeros: the padding columns must hold numbers (0 · NaN is NaN)
            return _Tape(torch.zeros(n_slot, n_cells, width, dtype=dtype),
                         torch.empty(n_slot - 1, n_cells, 4 * hidden, dtype=dtype),
                         torch.empty(n_slot, n_cells, hidden, dtype=dtype))

        tape = _POOL.take(key, make) if keep else make()
        xs, gates, c = tape
        if keep:  # every day's inputs in one strided copy
            xs[:n_days, :, hidden:hidden + n_in].copy_(x.detach().transpose(0, 1))
        xs[0, :, :hidden] = h0
        c[0] = c0
        # hs is returned as a copy, [C, T, H]: the tape goes back to the pool after backward
        hs = torch.empty(n_cells, n_days, hidden, dtype=dtype)
        x = x.detach()
        k, fast = constants(dtype), dtype == torch.float32
        step = _FORWARD[n_cells >= PARALLEL_CELLS]
        g_np, c_np, x_np = gates.numpy(), c.numpy(), xs.numpy()
        for t in range(n_days):
            i0, i1, s = (t, t + 1, t) if keep else (t % 2, (t + 1) % 2, 0)
            if not keep:
                xs[i0, :, hidden:hidden + n_in] = x[:, t]
            torch.addmm(bias, xs[i0], w_t, out=gates[s])
            step(g_np[s], c_np[i0], c_np[i1], x_np[i1], k, fast)
            if not keep:
                hs[:, t] = xs[i1, :, :hidden]
        last = n_days if keep else n_days % 2
        if keep:
            hs.copy_(xs[1:, :, :hidden].transpose(0, 1))
            ctx.save_for_backward(*tape, w_ih, w_hh)
            ctx.key = key
        ctx.set_materialize_grads(False)
        return hs, xs[last, :, :hidden].clone(), c[last].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_hs, g_h_end, g_c_end):  # noqa: D102
        *saved, w_ih, w_hh = ctx.saved_tensors
        tape = _Tape(*saved)
        xs, gates, c = tape
        n_days, n_cells, hidden4 = gates.shape
        hidden, width, n_in = hidden4 // 4, xs.shape[2], w_ih.shape[1]
        dtype = gates.dtype
        zeros = lambda *shape: torch.zeros(shape, dtype=dtype)  # noqa: E731
        g_out = zeros(n_days, n_cells, hidden)  # a copy: it is added to in place
        if g_hs is not None:
            g_out.copy_(g_hs.transpose(0, 1))
        if g_h_end is not None:  # h_T is the last day's h: their cotangents add up
            g_out[-1] += g_h_end
        g_c = zeros(n_cells, hidden) if g_c_end is None else g_c_end.to(dtype).clone()
        # g_xs[t]: the cotangent of day t's input [h_{t-1}, x_t]; slot T: none
        g_xs = torch.empty(n_days + 1, n_cells, width, dtype=dtype)
        g_xs[n_days] = 0
        g_w, g_b = zeros(hidden4, width), zeros(n_cells, hidden4)
        # the gates' cotangents of a block of days, then one product for the weights
        block = torch.empty(min(BLOCK_DAYS, n_days), n_cells, hidden4, dtype=dtype)
        k, fast = constants(dtype), dtype == torch.float32
        step = _BACKWARD[n_cells >= PARALLEL_CELLS]
        g_np, c_np, g_out_np, g_c_np, block_np, g_xs_np = (
            a.numpy() for a in (gates, c, g_out, g_c, block, g_xs))
        w = _padded_weights(w_ih, w_hh, width)
        for t in range(n_days - 1, -1, -1):
            start = t - t % BLOCK_DAYS
            u = t - start
            step(g_np[t], c_np[t], c_np[t + 1], g_out_np[t], g_xs_np[t + 1], g_c_np,
                 block_np[u], k, fast)
            torch.mm(block[u], w, out=g_xs[t])
            if u == 0:
                n = min(BLOCK_DAYS, n_days - start)
                g_blk = block[:n].view(-1, hidden4)
                g_w.addmm_(g_blk.t(), xs[start:start + n].view(-1, width))
                g_b += block[:n].sum(0)
        _POOL.give(ctx.key, tape)
        needs = ctx.needs_input_grad
        g_x = g_xs[:n_days, :, hidden:hidden + n_in].transpose(0, 1) if needs[1] else None
        return (None, g_x, g_xs[0, :, :hidden].clone() if needs[2] else None,
                g_c if needs[3] else None, g_w[:, hidden:hidden + n_in].clone(),
                g_w[:, :hidden].clone(), g_b if ctx.bias_dim == 2 else g_b.sum(0))


def scan_reason(lstm: nn.LSTM, x: Tensor) -> str | None:
    """Why :class:`LSTMScan` cannot run ``lstm`` on ``x`` (None: it can)."""
    if x.device.type != "cpu":
        return f"the input is on {x.device.type}, the scan runs on the CPU"
    if torch.is_autocast_enabled("cpu"):
        return "CPU autocast is on (the scan computes in the tensors' own dtype)"
    if (lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size or not lstm.batch_first
            or not lstm.bias):
        return "the scan runs one unidirectional, batch-first layer with biases"
    dtypes = {x.dtype, *(p.dtype for p in lstm.parameters())}
    if len(dtypes) != 1 or x.dtype not in (torch.float32, torch.float64):
        return f"the scan needs one dtype, float32 or float64, found {sorted(map(str, dtypes))}"
    return None


def lstm_scan(lstm: nn.LSTM, x: Tensor, h0: Tensor, c0: Tensor, static: Tensor | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`LSTMScan` with the weights of a one-layer, batch-first ``lstm``.

    Returns ``(hs [C, T, H], h [C, H], c [C, H])``, as ``lstm(x, (h0, c0))`` gives them;
    with ``static`` [C, S], as ``lstm`` gives them for the input ``[x, static]`` of every
    day (S = the LSTM's inputs − In). The static part is projected once, into a bias per
    cell, instead of every day: the per-day product shrinks from H + In + S to H + In
    columns (the hybrid's decoupled LSTM: 100 + 3 + 12 → 100 + 3).
    """
    w_ih, w_hh = lstm.weight_ih_l0, lstm.weight_hh_l0
    bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
    if static is not None:
        n_in = x.shape[2]
        bias = torch.addmm(bias, static, w_ih[:, n_in:].t())
        w_ih = w_ih[:, :n_in]
    # inside a Function, needs_input_grad ignores no_grad mode: decide here
    keep = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, h0, c0, w_ih, w_hh, bias))
    return LSTMScan.apply(keep, x, h0.contiguous(), c0.contiguous(), w_ih, w_hh, bias)


def sequence_lstm(lstm: nn.LSTM, x: Tensor) -> Tensor:
    """``lstm(x)[0]`` from zero states: the hidden states [C, T, H] of every day.

    Runs :class:`LSTMScan` where it can (:func:`scan_reason`), else ``lstm`` itself; the
    LSTM heads use it, so the LSTM baselines train on the same kernels as the hybrid.
    """
    if scan_reason(lstm, x) is not None:
        return lstm(x)[0]
    zero = x.new_zeros(x.shape[0], lstm.hidden_size)
    return lstm_scan(lstm, x, zero, zero)[0]
