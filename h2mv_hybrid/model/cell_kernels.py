"""The LSTM cell's element-wise arithmetic, forward and adjoint, for the compiled scans.

Shared by the whole-sequence LSTM scan (:mod:`h2mv_hybrid.model.lstm_scan`) and the
state-feedback scan (:mod:`h2mv_hybrid.model.feedback`): both multiply one day's input
row by the stacked weights with a matrix product, then call a numba kernel built from
the row functions here, inlined into its loop over cells.

The loops vectorize only if no transcendental function is called per element (numba's
``exp`` and ``tanh`` stay scalar without Intel's SVML) and no division can raise
(``error_model="numpy"``): in float32 tanh is a rational approximation (the 13/6 minimax
fit that Eigen uses for ``tanh``, clamped at ±7.905, largest error 2.4 · 10⁻⁷ against
``torch.tanh``) and σ(z) = (1 + tanh(z / 2)) / 2. In float64 (tests, gradcheck) they call
``np.tanh``, and values and gradients agree with ``nn.LSTM`` to rounding. Two layouts were
measured not to vectorize and are avoided: a loop over j in [2H, 3H) of a row, and a
loop over a row of a strided 2-D view; every loop here runs from 0 over a C-contiguous row.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

#: The rational tanh: x · P(x²) / Q(x²), P of degree 6 and Q of degree 3 in x², on
#: |x| ≤ CLAMP (beyond it the fit is 1 to float32 precision). Coefficients of P from x¹³
#: down to x¹, then Q from x⁶ down to x⁰.
CLAMP = 7.90531110763549805
P_COEF = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
          5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
          4.89352455891786e-03)
Q_COEF = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
          4.89352518554385e-03)

#: numba options of every kernel built on these functions.
OPTIONS = {"cache": True, "error_model": "numpy"}


def constants(dtype: torch.dtype) -> np.ndarray:
    """The kernels' constants in the tensors' dtype: 0.5, 1, the clamp, P, Q.

    A literal in a kernel would promote float32 arithmetic to float64 and keep the loops
    from vectorizing.
    """
    return np.array((0.5, 1.0, CLAMP, *P_COEF, *Q_COEF),
                    dtype=torch.empty(0, dtype=dtype).numpy().dtype)


def padded_width(n: int) -> int:
    """Numbers per LSTM input row of n: rounded up to a multiple of 16 (zero padding).

    The scans' backward product by a [4H, 107] weight ran at 74 GFLOP/s on one core, by a
    [4H, 112] one at 95–99 (the forward product at 91–101 either way; float32, 64 to 2048
    rows, 2026-11-28).
    """
    return -(-n // 16) * 16


@njit(inline="always", **OPTIONS)
def tanh(x, t, fast):  # noqa: D103
    # tanh(x); fast: the rational fit with the constants t (a tuple, see unpack).
    if not fast:
        return np.tanh(x)
    x = min(max(x, -t[2]), t[2])
    x2 = x * x
    p = (((((t[3] * x2 + t[4]) * x2 + t[5]) * x2 + t[6]) * x2 + t[7]) * x2 + t[8]) * x2 + t[9]
    q = ((t[10] * x2 + t[11]) * x2 + t[12]) * x2 + t[13]
    return x * p / q


@njit(inline="always", **OPTIONS)
def unpack(k):  # noqa: D103
    # The constants as a tuple of scalars: loads from the array inside the loops could not
    # be hoisted (LLVM cannot rule out that the array aliases the one written), and the
    # loops would not vectorize (8 ns per value instead of < 1).
    return (k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9], k[10], k[11], k[12],
            k[13])


@njit(inline="always", **OPTIONS)
def cell_row(g, cp, cn, hn, t, fast):  # noqa: D103
    # One cell's day. g [4H]: in, the pre-activations of i, f, g, o; out, their
    # activations (the tape). cp [H]: c of the day before; cn [H], hn [H]: receive c and h.
    hidden = cp.shape[0]
    half = t[0]
    gi, gf, gg, go = (g[:hidden], g[hidden:2 * hidden], g[2 * hidden:3 * hidden],
                      g[3 * hidden:])
    for j in range(2 * hidden):
        g[j] = half + half * tanh(half * g[j], t, fast)
    for j in range(hidden):
        gg[j] = tanh(gg[j], t, fast)
    for j in range(hidden):
        go[j] = half + half * tanh(half * go[j], t, fast)
    for j in range(hidden):
        cn[j] = gf[j] * cp[j] + gi[j] * gg[j]
    for j in range(hidden):
        hn[j] = go[j] * tanh(cn[j], t, fast)


@njit(inline="always", **OPTIONS)
def cell_row_adjoint(g, d, cp, cn, gh_a, gh_b, gcc, t, fast):  # noqa: D103
    # Adjoint of one cell's day. g [4H]: the activated i, f, g, o; cp, cn [H]: c before and
    # after. The cotangent of h is gh_a + gh_b (two consumers, [H] each). gcc [H]: in, the
    # cotangent of cn; out, that of cp. Writes d [4H], the cotangents of the gate
    # pre-activations. tanh(cn) is recomputed rather than stored.
    hidden = cp.shape[0]
    one = t[1]
    gi, gf, gg, go = (g[:hidden], g[hidden:2 * hidden], g[2 * hidden:3 * hidden],
                      g[3 * hidden:])
    di, df, dg, do = (d[:hidden], d[hidden:2 * hidden], d[2 * hidden:3 * hidden],
                      d[3 * hidden:])
    for j in range(hidden):
        i = gi[j]
        f = gf[j]
        u = gg[j]
        o = go[j]
        tc = tanh(cn[j], t, fast)
        gh = gh_a[j] + gh_b[j]
        gc = gcc[j] + gh * o * (one - tc * tc)
        di[j] = gc * u * i * (one - i)
        df[j] = gc * cp[j] * f * (one - f)
        dg[j] = gc * i * (one - u * u)
        do[j] = gh * tc * o * (one - o)
        gcc[j] = gc * f
