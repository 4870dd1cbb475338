"""The state-feedback recurrence (LSTM cell → head → bucket day → storages back) as one op.

Run day by day with autograd (``HybridH2MV`` with ``feedback_backend="loop"``), every day
records some 60 small operations (the LSTM cell's, the head's, the activations' and one
per bucket equation) and replays as many in backward: on the CPU, dispatch and the tape
cost more than the arithmetic. :class:`FeedbackScan` runs the same recurrence as one
autograd function with a hand-written backward:

- Forward, per day: one ``addmm`` for the LSTM gates and one compiled call
  (:func:`~h2mv_hybrid.model.feedback_kernels.forward_day`) for the cell, the head, the
  activations, the whole bucket day and the next day's input.
- Backward, per day: one compiled call
  (:func:`~h2mv_hybrid.model.feedback_kernels.backward_day`: the bucket adjoint, the
  head and cell adjoint) and one ``mm`` for the cotangent of the day's input. Weight
  gradients are summed over blocks of days in one ``mm`` each instead of one per day.

Same parameters, same arithmetic (up to the order of floating-point sums): tests compare
both backends value by value and gradient by gradient in float64.

The LSTM's input is ``[f_norm (3), code, log1p(states / scale) (3), fAPAR]``, as in
``HybridH2MV``. The code part does not change over days, so its projection (with both
biases) is computed once per sequence; each day multiplies only ``x = [h, f_norm,
log1p(states / scale), fAPAR]`` by ``w_x = [W_hh | W_ih columns of f_norm, states,
fAPAR]``, its rows padded with zeros to a multiple of 16 numbers
(:func:`~h2mv_hybrid.model.cell_kernels.padded_width`: 107 → 112 at H = 100, for the
speed of the backward product).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from h2mv_hybrid.model.cell_kernels import constants, padded_width
from h2mv_hybrid.model.feedback_kernels import backward_day, feed, forward_day
from process_layers import bands
from process_layers.fused import (
    CONSTANTS,
    N_DAY_OUT,
    PARALLEL_CELLS,
    beta_dims,
    beta_gradients,
    per_cell_betas,
)

#: Days whose gate cotangents are gathered before one weight-gradient ``mm``; at 512
#: cells a block (26 MB) stays under glibc's largest mmap threshold (32 MB), so its memory
#: is reused rather than mapped afresh (64 days measured ~10 % slower per step).
BLOCK_DAYS = 32


class _Setup(NamedTuple):
    """What every span of one call shares: inputs as contiguous tensors and numpy views."""

    fn: Tensor  # [T, C, 3] normalized forcing
    fo: Tensor  # [T, C, 3] forcing in W m⁻², mm day⁻¹, K
    code_proj: Tensor
    w_x: Tensor  # [4H, H + 7]
    w_xp: Tensor  # [4H, W]: w_x with zero columns up to padded_width(H + 7)
    w_head: Tensor
    b_head: Tensor
    sm_max: Tensor  # [R]: per bucket row (a cell's value repeated for its bands)
    betas: Tensor  # [3, R]: β_snow, β_gw, K_gw (0: linear outflow) per bucket row
    scale: float
    bands: int = 1  # K: the bucket has R = C · K rows, cell c's band k at row c · K + k


#: Tensors of a :class:`_Setup` saved for backward (all its fields but ``scale``, ``bands``).
N_SETUP = len(_Setup._fields) - 2


class _Starts(NamedTuple):
    """The state at the start of every span, for recomputing spans in backward."""

    x: Tensor  # [spans, C, W]: LSTM input of the span's first day
    cb: Tensor  # [spans, C, H]: LSTM cell state
    st: Tensor  # [spans, R, 3]: storages swe, sm, gw of every bucket row


class _Tape(NamedTuple):
    """Per-day buffers of a span of n days (slots 0..n for x, cb, st; 0..n-1 for the rest)."""

    x: Tensor  # [n + 1, C, W]: [h, f_norm, log1p(band-mean storages / scale), fAPAR, 0 …]
    cb: Tensor  # [n + 1, C, H]: LSTM cell state
    st: Tensor  # [n + 1, R, 3]: storages swe, sm, gw of every bucket row
    gates: Tensor  # [n, C, 4H]: activated i, f, g, o
    raw: Tensor  # [n, C, 7]: head outputs


class TapePool:
    """Hands the tape of the last finished backward pass to the next forward pass.

    Shared by the fused ops that keep per-day buffers (this one and
    :class:`~h2mv_hybrid.model.lstm_scan.LSTMScan`), each with its own pool.

    The state-feedback tape is hundreds of MB (745 numbers per cell-day); mapping it
    afresh and releasing it every step cost a quarter of a step at 512 cells × 365 days
    (page faults, munmap).
    One tape is kept, of the latest shape, up to ``max_bytes``. Reuse is safe: the forward
    pass writes the tape with in-place torch ops, so a graph whose tape was reused (a
    second backward with ``retain_graph=True`` after another forward) fails autograd's
    version check ("modified by an inplace operation") instead of reading new data.
    """

    max_bytes = 2 * 2**30

    def __init__(self):
        self.free: dict[tuple, tuple[Tensor, ...]] = {}

    def take(self, key: tuple, make):  # noqa: D102
        return self.free.pop(key, None) or make()

    def give(self, key: tuple, tape: tuple[Tensor, ...]) -> None:  # noqa: D102
        if sum(t.numel() * t.element_size() for t in tape) <= self.max_bytes:
            self.free = {key: tape}


_POOL = TapePool()


def _run(p: _Setup, t0: int, t1: int, x0: Tensor, c0: Tensor, s0: Tensor, out: Tensor,
         col0: int, keep: bool) -> _Tape:
    """Days [t0, t1) from the LSTM input ``x0``, cell ``c0`` and storages ``s0`` of day t0.

    Writes day t's 28 outputs of every bucket row to ``out[:, :, t - col0]``. With ``keep``
    every day's buffers are kept (the tape for backward, from :data:`_POOL`); otherwise two
    slots are reused, and the returned tape's slot ``(t1 - t0) % 2`` holds the state
    after the last day. With K bands the head's output of a cell drives its K rows, and
    the LSTM reads the band means of the storages and the first band's fAPAR (all bands
    have the cell's).
    """
    n_days, (n_cells, hidden) = t1 - t0, c0.shape
    n_rows, width = s0.shape[0], p.w_xp.shape[1]
    dtype = c0.dtype
    new = lambda *shape: torch.empty(shape, dtype=dtype)  # noqa: E731
    n_slot, n_step = (n_days + 1, n_days) if keep else (2, 1)

    def make() -> _Tape:
        # zeros: the padding columns of x must hold numbers (0 · NaN is NaN)
        return _Tape(torch.zeros(n_slot, n_cells, width, dtype=dtype),
                     new(n_slot, n_cells, hidden), new(n_slot, n_rows, 3),
                     new(n_step, n_cells, 4 * hidden), new(n_step, n_cells, 7))

    tape = _POOL.take((n_days, n_cells, n_rows, hidden, dtype), make) if keep else make()
    tape.x[0] = x0
    tape.cb[0] = c0
    tape.st[0] = s0
    if keep:
        tape.x[1:n_days, :, hidden:hidden + 3] = p.fn[t0 + 1:t1]
    xs, gts = tape.x.unbind(0), tape.gates.unbind(0)  # per-day views, made in bulk
    x_np, cb_np, st_np, gates_np, raw_np = (a.numpy() for a in tape)
    w_head, b_head, fo, sm_max, betas, out_np, fn = (
        a.numpy() for a in (p.w_head, p.b_head, p.fo, p.sm_max, p.betas, out, p.fn))
    raw_rows = new(n_rows if p.bands > 1 else 1, 7).numpy()
    w_t, kc, fast = p.w_xp.t(), constants(dtype), dtype == torch.float32
    par_cells, par_rows = n_cells >= PARALLEL_CELLS, n_rows >= PARALLEL_CELLS
    for t in range(t0, t1):
        u = t - t0
        i0, i1, s = (u, u + 1, u) if keep else (u % 2, (u + 1) % 2, 0)
        torch.addmm(p.code_proj, xs[i0], w_t, out=gts[s])
        forward_day(x_np, cb_np, gates_np, raw_np, st_np, i0, i1, s, w_head, b_head, kc, fast,
                    fo, t, sm_max, betas, CONSTANTS, out_np, t - col0, fn, p.scale, not keep,
                    raw_rows, par_cells, par_rows)
    return tape


def prepare(f_norm: Tensor, forcing: Tensor, scale: float, code_proj: Tensor, w_x: Tensor,
            w_head: Tensor, b_head: Tensor, sm_max: Tensor, beta_snow: Tensor, beta_gw: Tensor,
            swe0: Tensor, sm0: Tensor, gw0: Tensor, fapar0: Tensor, h0: Tensor, c0: Tensor,
            baseflow_half: Tensor | None = None) -> tuple[_Setup, Tensor, Tensor, Tensor]:
    """:class:`FeedbackScan`'s inputs as a :class:`_Setup` and the first day's x, c, storages.

    Shared with the GPU op (:mod:`h2mv_hybrid.model.feedback_gpu`); tensors stay on their
    device, in the dtype of ``code_proj``. The number of bands is the bucket's rows
    (``forcing``) per cell (``h0``).
    """
    n_cells, n_rows = h0.shape[0], forcing.shape[0]
    k = n_rows // n_cells
    hidden = h0.shape[1]
    dtype = code_proj.dtype
    code_proj, w_x, w_head, b_head, sm_max = (
        x.detach().to(dtype).contiguous() for x in (code_proj, w_x, w_head, b_head, sm_max))
    w_xp = torch.zeros(w_x.shape[0], padded_width(hidden + 7), dtype=dtype, device=w_x.device)
    w_xp[:, :hidden + 7] = w_x
    p = _Setup(f_norm.detach().transpose(0, 1).to(dtype).contiguous(),
               forcing.detach().transpose(0, 1).to(dtype).contiguous(), code_proj,
               w_x, w_xp, w_head, b_head, bands.to_bands(sm_max, k),
               per_cell_betas(bands.to_bands(beta_snow, k), bands.to_bands(beta_gw, k),
                              n_rows, dtype,
                              None if baseflow_half is None
                              else bands.to_bands(baseflow_half, k)), float(scale), k)
    s0 = torch.stack([swe0.reshape(-1), sm0.reshape(-1), gw0.reshape(-1)], 1).detach().to(dtype)
    x0 = torch.empty(n_cells, hidden + 7, dtype=dtype, device=code_proj.device)
    x0[:, :hidden] = h0
    x0[:, hidden:hidden + 3] = p.fn[0]
    x0[:, hidden + 3:hidden + 6] = torch.log1p(bands.band_mean(s0, k) / p.scale)
    x0[:, hidden + 6] = fapar0
    return p, x0, c0.detach().to(dtype), s0


def run_spans(run, p: _Setup, x0: Tensor, c0: Tensor, s0: Tensor, out: Tensor, keep: bool,
              chunk: int | None) -> tuple[int, bool, tuple[Tensor, ...], Tensor, Tensor]:
    """The forward pass of a fused recurrence, whole or in spans of ``chunk`` days.

    ``run`` is the device's ``_run`` (this module's, or feedback_gpu's). Returns the span,
    whether every day's buffers were kept, what backward needs (the tape, or each span's
    start state; empty without ``keep``), and the final h and c.
    """
    n_days, hidden = len(p.fo), c0.shape[1]
    span = n_days if chunk is None else chunk
    if keep and span >= n_days:  # keep every day's buffers; else recompute spans
        tape = run(p, 0, n_days, x0, c0, s0, out, 0, keep=True)
        return span, True, tuple(tape), tape.x[-1, :, :hidden].clone(), tape.cb[-1].clone()
    # Run in spans; with keep, remember each span's start state for backward.
    starts = []
    for t0 in range(0, n_days, span):
        t1 = min(t0 + span, n_days)
        starts.append((x0, c0, s0))
        tape = run(p, t0, t1, x0, c0, s0, out, 0, keep=False)
        last = (t1 - t0) % 2
        # the next span's input row: run wrote its forcing, storages and fAPAR
        x0, c0, s0 = tape.x[last].clone(), tape.cb[last].clone(), tape.st[last].clone()
    saved = tuple(_Starts(*(torch.stack(z) for z in zip(*starts, strict=True)))) if keep else ()
    return span, False, saved, x0[:, :hidden].clone(), c0


class FeedbackScan(torch.autograd.Function):
    """Autograd function: the state-feedback LSTM and bucket over a span of days (CPU).

    Inputs (one floating dtype; ``keep``, ``chunk``, ``f_norm`` and ``scale`` carry no
    gradient):

    - ``keep``: whether backward will run; without it only two days of buffers are held.
    - ``chunk``: None keeps every day's buffers for backward; N keeps only the state at
      every N-th day and recomputes N days at a time in backward (gradient checkpointing:
      exact gradients, memory of N days, one more forward pass).
    - ``f_norm`` [C, T, 3] normalized forcing (what the LSTM reads); ``forcing``
      [C, T, 3] rn (W m⁻²), prec (mm day⁻¹), tair (K), what the bucket reads: where it
      requires a gradient (a per-basin correction of prec or tair), prec and tair receive
      theirs through the bucket adjoint, rn none, as in
      :class:`~process_layers.fused.FusedScan`; ``scale`` (float, mm): storages enter as
      log1p(s / scale).
    - ``code_proj`` [C, 4H]: the code's input projection plus both LSTM biases;
      ``w_x`` [4H, H + 7]; ``w_head`` [7, H]; ``b_head`` [7].
    - ``sm_max`` [C]; ``beta_snow``, ``beta_gw`` (0-d, or [C] per cell).
    - The carry at the start: ``swe``, ``sm``, ``gw`` [C], or [C, K] with K elevation
      bands; ``fapar`` [C]; ``h``, ``c`` [C, H].
    - ``baseflow_half``: K_gw (mm; 0-d or [C]) of the nonlinear groundwater outflow
      (:func:`process_layers.runoff.baseflow`, A21′), or None for the paper's A21.

    With K elevation bands (``forcing`` has R = C · K rows, cell c's band k at row
    c · K + k, :mod:`process_layers.bands`) the bucket runs on every row from its cell's
    head output, SM_max and β, and the LSTM reads the band means of the storages.

    Returns ``daily`` [28, R, T] (the 21 fluxes of ``FLUX_NAMES``, then the 7 α of
    ``ALPHA_NAMES``, of every bucket row), and the final ``h`` and ``c`` [C, H].
    """

    @staticmethod
    def forward(ctx, keep, chunk, f_norm, forcing, scale, code_proj, w_x, w_head,  # noqa: D102
                b_head, sm_max, beta_snow, beta_gw, swe0, sm0, gw0, fapar0, h0, c0,
                baseflow_half=None):
        p, x0, c0, s0 = prepare(f_norm, forcing, scale, code_proj, w_x, w_head, b_head, sm_max,
                                beta_snow, beta_gw, swe0, sm0, gw0, fapar0, h0, c0,
                                baseflow_half)
        ctx.beta_dims = beta_dims(beta_snow, beta_gw, baseflow_half)
        n_rows, n_days, _ = forcing.shape
        dtype = p.code_proj.dtype
        out = torch.empty(N_DAY_OUT, n_rows, n_days, dtype=dtype)
        x0 = torch.nn.functional.pad(x0, (0, p.w_xp.shape[1] - x0.shape[1]))
        span, whole, saved, h_end, c_end = run_spans(_run, p, x0, c0, s0, out, keep, chunk)
        if keep:
            ctx.save_for_backward(*p[:N_SETUP], *saved)
        ctx.scale, ctx.bands, ctx.span, ctx.whole = p.scale, p.bands, span, whole
        ctx.storage_shape = swe0.shape
        ctx.set_materialize_grads(False)
        return out, h_end, c_end

    @staticmethod
    def backward(ctx, g_out, g_h_end, g_c_end):  # noqa: D102
        saved = ctx.saved_tensors
        p, rest = _Setup(*saved[:N_SETUP], ctx.scale, ctx.bands), saved[N_SETUP:]
        n_days, n_rows, _ = p.fo.shape
        n_cells, hidden = p.code_proj.shape[0], p.w_head.shape[1]
        width = p.w_xp.shape[1]
        k = p.bands
        dtype = p.code_proj.dtype
        whole = ctx.whole
        zeros = lambda *shape: torch.zeros(shape, dtype=dtype)  # noqa: E731
        g_out = zeros(N_DAY_OUT, n_rows, n_days) if g_out is None else g_out.to(dtype).contiguous()
        g_x = zeros(n_cells, width)  # cotangent of the next day's LSTM input
        if g_h_end is not None:
            g_x[:, :hidden] = g_h_end
        g_c = zeros(n_cells, hidden) if g_c_end is None else g_c_end.to(dtype).clone()
        lam, g_feed, g_h = zeros(n_rows, 3), zeros(n_rows, 4), zeros(n_cells, hidden)
        g_sm_max, g_betas, g_b_head = zeros(n_rows), zeros(3, n_rows), zeros(7)
        g_code_proj, g_w_x = zeros(n_cells, 4 * hidden), zeros(p.w_x.shape[0], width)
        g_w_head = zeros(7, width)
        # day-major, so that each day's [R, 2] (prec, tair) is one contiguous block
        want_forc = ctx.needs_input_grad[3]
        g_forc = zeros(n_days, n_rows, 2) if want_forc else zeros(1, 1, 2)
        # scratch of K > 1 bands: a cell's head output drives its K rows
        raw_rows, g_raw_rows = zeros(n_rows if k > 1 else 1, 7), zeros(n_rows if k > 1 else 1, 7)
        span = n_days if whole else ctx.span
        block = torch.empty(min(BLOCK_DAYS, span, n_days), n_cells, 4 * hidden, dtype=dtype)
        kc, fast = constants(dtype), dtype == torch.float32
        par_cells, par_rows = n_cells >= PARALLEL_CELLS, n_rows >= PARALLEL_CELLS
        blocks = block.unbind(0)
        g_x_np, g_c_np, g_h_np, block_np, fo, sm_max, betas, g_out_np, lam_np, g_feed_np = (
            a.numpy() for a in (g_x, g_c, g_h, block, p.fo, p.sm_max, p.betas, g_out, lam,
                                g_feed))
        g_sm_max_np, g_betas_np, g_forc_np, w_head, raw_rows_np, g_raw_rows_np = (
            a.numpy() for a in (g_sm_max, g_betas, g_forc, p.w_head, raw_rows, g_raw_rows))

        tape = None
        for t0 in reversed(range(0, n_days, span)):
            t1 = min(t0 + span, n_days)
            if whole:
                tape = _Tape(*rest)
            else:  # recompute this span's tape from its start state
                tape = cb_np = gates_np = raw_np = st_np = g_raw_np = None  # free the last one
                j, starts = t0 // span, _Starts(*rest)
                scratch = torch.empty(N_DAY_OUT, n_rows, t1 - t0, dtype=dtype)
                tape = _run(p, t0, t1, starts.x[j], starts.cb[j], starts.st[j], scratch, t0,
                            keep=True)
            g_raw = torch.empty(t1 - t0, n_cells, 7, dtype=dtype)
            _, cb_np, st_np, gates_np, raw_np = (a.numpy() for a in tape)
            g_raw_np = g_raw.numpy()
            for t in range(t1 - 1, t0 - 1, -1):
                u = t - t0
                start = u - u % BLOCK_DAYS
                backward_day(g_x_np, cb_np, gates_np, raw_np, st_np, u, fo, t, sm_max, betas,
                             CONSTANTS, g_out_np, lam_np, g_feed_np, g_raw_np, g_raw_rows_np,
                             g_sm_max_np, g_betas_np, g_forc_np, want_forc, w_head, g_h_np,
                             g_c_np, block_np[u - start], p.scale, raw_rows_np, kc, fast,
                             par_cells, par_rows)
                torch.mm(blocks[u - start], p.w_xp, out=g_x)
                if u == start:  # weight gradients of a block of days in one mm each
                    n = min(start + BLOCK_DAYS, t1 - t0) - start
                    g_blk = block[:n].reshape(-1, 4 * hidden)
                    g_w_x.addmm_(g_blk.t(), tape.x[start:start + n].reshape(-1, width))
                    g_code_proj += block[:n].sum(0)
                    # h_u is x[u + 1][:, :H]; multiplying whole rows avoids copying the slice.
                    g_w_head.addmm_(g_raw[start:start + n].reshape(-1, 7).t(),
                                    tape.x[start + 1:start + n + 1].reshape(-1, width))
            g_b_head += g_raw.sum((0, 1))
            _POOL.give((t1 - t0, n_cells, n_rows, hidden, dtype), tape)
        # the first day's storages also entered its input row (through the band means)
        feed(g_x_np, hidden, tape.st[0].numpy(), g_feed_np, p.scale)
        g_s0 = (lam + g_feed[:, :3]).reshape(*ctx.storage_shape, 3)
        g_forcing = None
        if want_forc:
            g_forcing = zeros(n_rows, n_days, 3)
            g_forcing[:, :, 1:] = g_forc.transpose(0, 1)
        g_bs, g_bg, *g_half = beta_gradients(g_betas.reshape(3, n_cells, k).sum(2),
                                             ctx.beta_dims)
        return (
            None, None, None, g_forcing, None, g_code_proj, g_w_x[:, :hidden + 7],
            g_w_head[:, :hidden], g_b_head, g_sm_max.reshape(n_cells, k).sum(1),
            g_bs, g_bg, g_s0[..., 0], g_s0[..., 1], g_s0[..., 2],
            g_x[:, hidden + 6].clone(), g_x[:, :hidden].clone(), g_c, *(g_half or [None]),
        )


def feedback_scan(f_norm: Tensor, forcing: Tensor, scale: float, code_proj: Tensor, w_x: Tensor,
                  w_head: Tensor, b_head: Tensor, sm_max: Tensor, beta_snow: Tensor,
                  beta_gw: Tensor, carry: tuple[Tensor, ...], chunk: int | None = None,
                  kernel: str = "numba", baseflow_half: Tensor | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """The fused recurrence applied; ``carry`` is (swe, sm, gw, h, c, fapar).

    ``kernel``: ``"numba"`` (:class:`FeedbackScan`, CPU tensors) or ``"triton"``
    (:class:`~h2mv_hybrid.model.feedback_gpu.FeedbackScanGPU`, CUDA tensors).
    """
    swe, sm, gw, h, c, fapar = carry
    params = (code_proj, w_x, w_head, b_head, sm_max, beta_snow, beta_gw, swe, sm, gw, fapar, h, c)
    # Whether backward can run: inside a Function, needs_input_grad ignores no_grad mode.
    keep = torch.is_grad_enabled() and (
        forcing.requires_grad or any(p.requires_grad for p in params)
        or (baseflow_half is not None and baseflow_half.requires_grad))
    op = FeedbackScan
    if kernel == "triton":
        from h2mv_hybrid.model.feedback_gpu import FeedbackScanGPU as op
    return op.apply(keep, chunk, f_norm, forcing, scale, *params, baseflow_half)
