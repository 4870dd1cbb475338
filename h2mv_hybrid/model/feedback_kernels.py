"""The state-feedback scan's day as one compiled call, forward and adjoint (CPU, numba).

:class:`~h2mv_hybrid.model.feedback.FeedbackScan` runs each day as one matrix product
(the LSTM gates, ``addmm``) and one call of :func:`forward_day`: the LSTM cell's gates
(:mod:`h2mv_hybrid.model.cell_kernels`), the head's product and activations, the bucket
day (:mod:`process_layers.fused`'s day kernel) and the encoding of the next day's input.
Backward, each day is one call of :func:`backward_day` (the cotangents that the storages
and fAPAR received through the next day's input, the bucket adjoint, the head and cell
adjoint) and one ``mm``. Before, each day ran five torch element-wise ops, a second
``addmm`` and two compiled calls forward, and as many pieces backward: at 64 cells the
dispatch of those small ops cost as much as the arithmetic.

Each kernel takes whole tapes ([slots, C, ...] arrays) and the day's slot numbers, so
that the Python loop over days makes no views. With ``parallel`` the loops over cells run
on numba's threads (from :data:`~process_layers.fused.PARALLEL_CELLS` cells or bucket
rows); the serial build serves small batches, where starting threads costs more than
the day.

With K elevation bands the bucket has R = C · K rows (cell c's band k at row c · K + k):
the head's output of a cell drives its K rows, and the LSTM reads the band means of the
storages and band 0's fAPAR (all bands have the cell's).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from h2mv_hybrid.model.cell_kernels import OPTIONS, cell_row, cell_row_adjoint, unpack
from process_layers.fused import N_DAY_OUT, PARALLEL_CELLS, day_kernels

_DAY_FORWARD_SERIAL, _DAY_BACKWARD_SERIAL = day_kernels(0)
_DAY_FORWARD_PARALLEL, _DAY_BACKWARD_PARALLEL = day_kernels(PARALLEL_CELLS)


@njit(fastmath={"reassoc"}, **OPTIONS)
def _dot(a, b):  # noqa: D103
    # a · b over a row; reassociation lets the sum vectorize (the order of a float sum, as
    # in any matrix product).
    s = a[0] * b[0]
    for j in range(1, a.shape[0]):
        s += a[j] * b[j]
    return s


@njit(inline="always", **OPTIONS)
def _band_mean(st, c, k, i):  # noqa: D103
    # the mean of storage i over cell c's k rows of st [R, 3]
    s = st[c * k, i]
    for b in range(1, k):
        s += st[c * k + b, i]
    return s / k


@njit(inline="always", **OPTIONS)
def _to_rows(raw, rows):  # noqa: D103
    # each cell's head output raw [C, 7] onto its k bucket rows of rows [C · k, 7]
    n_cells = raw.shape[0]
    k = rows.shape[0] // n_cells
    for c in range(n_cells):
        for b in range(k):
            for m in range(7):
                rows[c * k + b, m] = raw[c, m]


def _cell_head(gates, c_prev, c_next, x_next, w_head, b_head, raw, k, fast):  # noqa: D103
    # The LSTM cell and the head of one day for every cell. gates [C, 4H]: in, the gate
    # pre-activations; out, their activations. c_prev [C, H]; c_next [C, H] receives c;
    # h goes to the first H columns of x_next [C, W] (the next day's input row); raw
    # [C, 7] receives the head outputs h w_headᵀ + b_head (w_head [7, H]).
    n_cells, hidden = c_prev.shape
    t = unpack(k)
    for c in prange(n_cells):
        h = x_next[c, :hidden]
        cell_row(gates[c], c_prev[c], c_next[c], h, t, fast)
        for m in range(w_head.shape[0]):
            raw[c, m] = b_head[m] + _dot(h, w_head[m])


def _cell_head_adjoint(g_x, g_raw, w_head, gates, c_prev, c_next, g_c, g_gates, g_h, k,
                       fast):  # noqa: D103
    # Adjoint of _cell_head. g_x [C, W]: the cotangent of the next day's input row (h's in
    # its first H columns); g_raw [C, 7]: the head outputs'. g_c [C, H]: in, the cotangent
    # of c_next; out, that of c_prev. Writes g_gates [C, 4H] (the gate pre-activations');
    # g_h [C, H] is scratch (h's cotangent through the head).
    n_cells, hidden = c_prev.shape
    t = unpack(k)
    for c in prange(n_cells):
        gh, gr = g_h[c], g_raw[c]
        w0, g0 = w_head[0], gr[0]
        for j in range(hidden):
            gh[j] = g0 * w0[j]
        for m in range(1, w_head.shape[0]):
            wm, gm = w_head[m], gr[m]
            for j in range(hidden):
                gh[j] += gm * wm[j]
        cell_row_adjoint(gates[c], g_gates[c], c_prev[c], c_next[c], g_x[c, :hidden], gh,
                         g_c[c], t, fast)


def _encode(x, hidden, fn, st, out, col, scale, with_forcing):  # noqa: D103
    # The non-h part of the next day's LSTM input x [C, W] (h in columns [0, H)):
    # normalized forcing fn [C, 3] in [H, H + 3) (if with_forcing), log1p(band-mean
    # storages / scale) from st [R, 3] in [H + 3, H + 6), and band 0's fAPAR of day col,
    # from out [28, R, T], in column H + 6. Columns from H + 7 on are padding (zeros).
    n_cells = x.shape[0]
    k = st.shape[0] // n_cells
    for c in prange(n_cells):
        if with_forcing:
            for i in range(3):
                x[c, hidden + i] = fn[c, i]
        for i in range(3):
            x[c, hidden + 3 + i] = np.log1p(_band_mean(st, c, k, i) / scale)
        x[c, hidden + 6] = out[N_DAY_OUT - 1, c * k, col]


def _feed(g_x, hidden, st, g_feed, scale):  # noqa: D103
    # The cotangents that the end-of-day storages st [R, 3] and fAPAR received through the
    # next day's input, whose cotangent is g_x [C, W]: through log1p(band mean / scale)
    # for the storages of every row, through band 0's row for fAPAR. Writes g_feed [R, 4].
    n_cells = g_x.shape[0]
    k = st.shape[0] // n_cells
    for c in prange(n_cells):
        for i in range(3):
            g = g_x[c, hidden + 3 + i] / (_band_mean(st, c, k, i) + scale) / k
            for b in range(k):
                g_feed[c * k + b, i] = g
        g_feed[c * k, 3] = g_x[c, hidden + 6]


@njit(**OPTIONS)
def forward_day(x, cb, gates, raw, st, i0, i1, s, w_head, b_head, kc, fast, fo, t, sm_max,
                betas, consts, out, col, fn, scale, with_forcing, raw_rows, par_cells,
                par_rows):
    """Day ``t`` of the recurrence, after the gates' product, in place.

    Tapes (slot 0 … of each): ``x`` [·, C, W] LSTM input rows ([h, f_norm, log1p(band-mean
    storages / scale), fAPAR, zero padding]); ``cb`` [·, C, H] cell states; ``gates``
    [·, C, 4H], whose slot ``s`` holds the day's pre-activations (with both biases and
    the code's projection) and receives their activations; ``raw`` [·, C, 7] head
    outputs; ``st`` [·, R, 3] storages swe, sm, gw (mm). The day reads slots ``i0`` of
    x, cb and st and writes slots ``i1`` and ``s``. ``w_head`` [7, H], ``b_head`` [7];
    ``kc``, ``fast``: the cell kernels' constants and whether tanh is the rational fit
    (float32). Bucket: ``fo`` [T, R, 3] rn (W m⁻²), prec (mm day⁻¹), tair (K);
    ``sm_max`` [R] (mm); ``betas`` [3, R]; ``consts`` :data:`~process_layers.fused.CONSTANTS`;
    ``out`` [28, R, ·] receives the day's fluxes and α in column ``col``. If day t + 1
    exists, its input row is encoded from ``fn`` [T, C, 3] (if ``with_forcing``), the
    new storages and fAPAR. ``raw_rows`` [R, 7]: scratch for K > 1 bands.
    ``par_cells``, ``par_rows``: the LSTM's and the bucket's loops on numba's threads.
    """
    hidden = cb.shape[2]
    n_cells = cb.shape[1]
    k = st.shape[1] // n_cells
    if par_cells:
        _CELL_HEAD_PARALLEL(gates[s], cb[i0], cb[i1], x[i1], w_head, b_head, raw[s], kc, fast)
    else:
        _CELL_HEAD_SERIAL(gates[s], cb[i0], cb[i1], x[i1], w_head, b_head, raw[s], kc, fast)
    r = raw[s]
    if k > 1:  # a cell's head output drives its K rows
        _to_rows(r, raw_rows)
        r = raw_rows
    if par_rows:
        _DAY_FORWARD_PARALLEL(r, fo[t], st[i0], sm_max, betas, consts, out, col, st[i1])
    else:
        _DAY_FORWARD_SERIAL(r, fo[t], st[i0], sm_max, betas, consts, out, col, st[i1])
    if t + 1 < fn.shape[0]:
        if par_cells:
            _ENCODE_PARALLEL(x[i1], hidden, fn[t + 1], st[i1], out, col, scale, with_forcing)
        else:
            _ENCODE_SERIAL(x[i1], hidden, fn[t + 1], st[i1], out, col, scale, with_forcing)


@njit(**OPTIONS)
def backward_day(g_x, cb, gates, raw, st, u, fo, t, sm_max, betas, consts, g_out, lam,
                 g_feed, g_raw, g_raw_rows, g_sm_max, g_betas, g_forc, want_forc, w_head,
                 g_h, g_c, g_gates, scale, raw_rows, kc, fast, par_cells, par_rows):
    """Reverse mode of :func:`forward_day` for day ``t`` (tape slot ``u``), in place.

    ``g_x`` [C, W]: the cotangent of the next day's input row; ``g_c`` [C, H]: in, that of
    the day's cell state, out, that of the day before's. ``lam`` [R, 3]: in, the
    cotangents of the end-of-day storages from the next day's bucket; out, those of the
    start-of-day ones. ``g_out`` [28, R, T]: the outputs' cotangents. Writes ``g_gates``
    [C, 4H] (the gate pre-activations'), ``g_raw[u]`` [C, 7], and, with ``want_forc``,
    ``g_forc[t]`` [R, 2] (prec's and tair's); adds to ``g_sm_max`` [R] and ``g_betas``
    [3, R]. ``g_feed`` [R, 4], ``g_h`` [C, H], ``g_raw_rows`` and ``raw_rows`` [R, 7]:
    scratch. The other arguments are :func:`forward_day`'s tapes and inputs.
    """
    hidden = cb.shape[2]
    n_cells = cb.shape[1]
    k = st.shape[1] // n_cells
    if par_cells:
        _FEED_PARALLEL(g_x, hidden, st[u + 1], g_feed, scale)
    else:
        _FEED_SERIAL(g_x, hidden, st[u + 1], g_feed, scale)
    r, gr = raw[u], g_raw[u]
    if k > 1:
        _to_rows(r, raw_rows)
        r, gr = raw_rows, g_raw_rows
    g_forc_t = g_forc[t if want_forc else 0]
    if par_rows:
        _DAY_BACKWARD_PARALLEL(r, fo[t], st[u], sm_max, betas, consts, g_out, t, lam, g_feed,
                               gr, g_sm_max, g_betas, g_forc_t, want_forc)
    else:
        _DAY_BACKWARD_SERIAL(r, fo[t], st[u], sm_max, betas, consts, g_out, t, lam, g_feed,
                             gr, g_sm_max, g_betas, g_forc_t, want_forc)
    if k > 1:  # the cotangents of a cell's K rows add up
        gu = g_raw[u]
        for c in range(n_cells):
            for m in range(7):
                a = g_raw_rows[c * k, m]
                for b in range(1, k):
                    a += g_raw_rows[c * k + b, m]
                gu[c, m] = a
    if par_cells:
        _CELL_ADJOINT_PARALLEL(g_x, g_raw[u], w_head, gates[u], cb[u], cb[u + 1], g_c,
                               g_gates, g_h, kc, fast)
    else:
        _CELL_ADJOINT_SERIAL(g_x, g_raw[u], w_head, gates[u], cb[u], cb[u + 1], g_c,
                             g_gates, g_h, kc, fast)


_CELL_HEAD_SERIAL, _CELL_HEAD_PARALLEL = (njit(parallel=p, **OPTIONS)(_cell_head)
                                          for p in (False, True))
_CELL_ADJOINT_SERIAL, _CELL_ADJOINT_PARALLEL = (njit(parallel=p, **OPTIONS)(_cell_head_adjoint)
                                                for p in (False, True))
_ENCODE_SERIAL, _ENCODE_PARALLEL = (njit(parallel=p, **OPTIONS)(_encode) for p in (False, True))
_FEED_SERIAL, _FEED_PARALLEL = (njit(parallel=p, **OPTIONS)(_feed) for p in (False, True))


def feed(g_x, hidden, st, g_feed, scale):
    """The storages' and fAPAR's cotangents through an input row (see ``_feed``), numpy."""
    (_FEED_PARALLEL if g_x.shape[0] >= PARALLEL_CELLS else _FEED_SERIAL)(
        g_x, hidden, st, g_feed, scale)
