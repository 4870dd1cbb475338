"""Fused scan of the H2MV bucket over time, with a hand-written adjoint (CPU, numba).

The per-day path (:func:`process_layers.h2mv.step` in a Python loop) dispatches ~35 tiny
tensor operations per day and records as many autograd nodes; at ~100 flops per
cell-day, dispatch, not arithmetic, sets its cost. Here the whole time loop of every cell
runs in one compiled kernel (cells in parallel, ``prange``), and the backward pass is a
second compiled kernel that walks the days in reverse, recomputing each day's
intermediates from the stored end-of-day storages (no per-day tape is kept).

The arithmetic of one day is written once, in :func:`_day`, which both kernels call. It
mirrors the equation functions of :mod:`process_layers.snow`,
:mod:`process_layers.evapotranspiration`, :mod:`process_layers.recharge`,
:mod:`process_layers.runoff` and :mod:`process_layers.storage` operation for operation,
including which branch of a min/max receives the gradient at a tie
(:mod:`process_layers._ops`); tests compare both paths value by value and gradient by
gradient. Arithmetic runs in float64 whatever the storage dtype; storages are rounded to
the storage dtype at the end of every day so that the backward pass recomputes exactly
what the forward pass did.

The forcing enters in its input units (W m⁻², mm day⁻¹, K) and is converted in the
kernel exactly as :mod:`process_layers.units` does, sparing two full-size temporaries.
Gradients flow to α, SM_max, β, the initial storages and, where asked, to ``prec`` and
``tair`` (so that a model may learn a per-basin precipitation factor or temperature
offset, as conceptual models calibrate them); ``rn`` is data (``simulate`` uses the
per-day path when it requires a gradient).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from process_layers.constants import (
    LATENT_HEAT_VAPORISATION,
    RECHARGE_EPSILON,
    W_M2_TO_MJ_M2_DAY,
    ZERO_CELSIUS_IN_KELVIN,
)
from process_layers.containers import FLUX_NAMES
from process_layers.parameters import ALPHA_NAMES, BY_NAME

# Passed to the kernels as arguments, not read as globals: numba's on-disk cache is keyed
# on this file, so a constant compiled in from another module could go stale.
CONSTANTS = np.array(
    [W_M2_TO_MJ_M2_DAY / LATENT_HEAT_VAPORISATION, ZERO_CELSIUS_IN_KELVIN, RECHARGE_EPSILON]
)
N_FLUX = len(FLUX_NAMES)
# Every value read from an array is widened with this before arithmetic: numba's float()
# keeps float32 as float32, and the kernels compute in float64 whatever the storage.
_f64 = np.float64

# Indices into the flux tuple; the order is that of containers.Fluxes.
SNOW_ACC, SNOW_MELT, SWE, RAINFALL, EI, ES, TR, ET, EF, W_IN = range(10)
R_SOIL_FRAC, R_SOIL, R_GW_FRAC, R_GW, SM, Q_SURF_FRAC, Q_SURF, Q_BASE, Q_TOTAL, GW, TWS = range(
    10, 21
)
assert FLUX_NAMES[TWS] == "tws" and FLUX_NAMES[SM] == "sm" and FLUX_NAMES[TR] == "T"
N_ALPHA = len(ALPHA_NAMES)
#: Rows of the per-day kernels' output: the 21 fluxes, then the 7 activated α.
N_DAY_OUT = N_FLUX + N_ALPHA
# The per-day kernels activate raw network outputs; they hard-code the table's choice:
# softplus for the first two α (snow_melt, Ei), sigmoid for the rest.
assert [BY_NAME[("alpha", k)].activation for k in ALPHA_NAMES] == ["softplus"] * 2 + [
    "sigmoid"
] * 5


#: Every intermediate of one cell-day of :func:`_day`, by name (Appendix A's symbols).
#: Numba compiles the record to a plain tuple: reading a field by name costs nothing.
DayValues = namedtuple("DayValues", [
    "frozen", "s_acc", "pos_t", "m_pot", "melt", "swe_raw", "swe1",  # A1–A3
    "rain", "ic", "ei0", "ei", "rn1", "etp1", "es", "sm1", "rn2", "etp2", "tr", "sm2",  # A4–A11
    "et", "ef", "w", "wd", "ratio", "rmin", "rsf", "rs", "sm3", "rgf", "rg",  # A12–A18
    "qsf", "qs", "qb", "qt", "gw1", "tws",  # A19–A24
])


@njit(inline="always")
def _day(rn, prec, tc, am, aei, aes, at, ars, arg, f, smx, bs, bg, kg, swe, sm, gw, eps):  # noqa: D103
    # Inputs are float64 scalars of one cell-day: rn in mm day⁻¹ (converted, floored),
    # tc in °C; kg: K_gw (mm) of the nonlinear outflow A21′, or 0 for the linear A21;
    # see the module docstring for the rest.
    frozen = tc <= 0.0
    s_acc = prec * bs if frozen else 0.0  # A1
    pos_t = tc if tc > 0.0 else 0.0
    m_pot = pos_t * am
    melt = m_pot if m_pot <= swe else swe  # A2
    swe_raw = swe + s_acc - melt
    swe1 = swe_raw if swe_raw >= 0.0 else 0.0  # A3
    rain = 0.0 if frozen else prec  # A4
    ic = f * aei
    ei0 = rain if rain <= ic else ic
    ei = ei0 if ei0 <= rn else rn  # A5
    rn1 = rn - ei  # A6
    etp1 = rn1 if rn1 <= sm else sm  # A7
    es = (1.0 - f) * etp1 * aes  # A8
    sm1 = sm - es  # A9
    rn2 = rn1 - es
    etp2 = rn2 if rn2 <= sm1 else sm1  # A7 again
    tr = f * etp2 * at  # A10
    sm2 = sm1 - tr  # A11
    et = ei + es + tr  # A12
    ef = et / rn if rn > 0.0 else 0.0
    w = rain + melt - ei  # A13
    wd = w if w >= eps else eps
    ratio = (smx - sm2) / wd
    rmin = ratio if ratio <= 1.0 else 1.0
    rsf = rmin * ars  # A14
    rs = rsf * w  # A15
    sm3 = sm2 + rs  # A16
    rgf = (1.0 - rsf) * arg  # A17
    rg = rgf * w  # A18
    qsf = (1.0 - rsf) * (1.0 - arg)  # A19
    qs = qsf * w  # A20
    qb = gw * bg if kg <= 0.0 else bg * gw * (gw / (gw + kg))  # A21, A21′
    qt = qs + qb  # A22
    gw1 = gw + rg - qb  # A23
    tws = swe1 + gw1 + sm3  # A24
    return DayValues(
        frozen, s_acc, pos_t, m_pot, melt, swe_raw, swe1, rain, ic, ei0, ei, rn1, etp1, es,
        sm1, rn2, etp2, tr, sm2, et, ef, w, wd, ratio, rmin, rsf, rs, sm3, rgf, rg, qsf, qs,
        qb, qt, gw1, tws,
    )


@njit(parallel=True, cache=True)
def _forward_kernel(rn, prec, tair, alpha, smax, betas, s0, consts, out):  # noqa: D103
    # rn (W m⁻²), prec (mm day⁻¹), tair (K): [C, T]; alpha: 7 × [C, T]; smax: [C];
    # betas: [3, C] (β_snow, β_gw, K_gw of each cell); s0: [3, C]; consts: CONSTANTS;
    # out: 21 × [C, T], written in place.
    n_cells, n_days = rn.shape
    rn_factor, t0, eps = consts[0], consts[1], consts[2]
    for c in prange(n_cells):
        bs = _f64(betas[0, c])
        bg = _f64(betas[1, c])
        kg = _f64(betas[2, c])
        swe = _f64(s0[0, c])
        sm = _f64(s0[1, c])
        gw = _f64(s0[2, c])
        smx = _f64(smax[c])
        for t in range(n_days):
            v = _day(
                _energy(_f64(rn[c, t]), rn_factor), _f64(prec[c, t]), _f64(tair[c, t]) - t0,
                _f64(alpha[0][c, t]), _f64(alpha[1][c, t]), _f64(alpha[2][c, t]),
                _f64(alpha[3][c, t]), _f64(alpha[4][c, t]), _f64(alpha[5][c, t]),
                _f64(alpha[6][c, t]), smx, bs, bg, kg, swe, sm, gw, eps,
            )
            out[SNOW_ACC][c, t] = v.s_acc
            out[SNOW_MELT][c, t] = v.melt
            out[SWE][c, t] = v.swe1
            out[RAINFALL][c, t] = v.rain
            out[EI][c, t] = v.ei
            out[ES][c, t] = v.es
            out[TR][c, t] = v.tr
            out[ET][c, t] = v.et
            out[EF][c, t] = v.ef
            out[W_IN][c, t] = v.w
            out[R_SOIL_FRAC][c, t] = v.rsf
            out[R_SOIL][c, t] = v.rs
            out[R_GW_FRAC][c, t] = v.rgf
            out[R_GW][c, t] = v.rg
            out[SM][c, t] = v.sm3
            out[Q_SURF_FRAC][c, t] = v.qsf
            out[Q_SURF][c, t] = v.qs
            out[Q_BASE][c, t] = v.qb
            out[Q_TOTAL][c, t] = v.qt
            out[GW][c, t] = v.gw1
            out[TWS][c, t] = v.tws
            # Carry the storages as stored, so the backward pass sees the same values.
            swe = _f64(out[SWE][c, t])
            sm = _f64(out[SM][c, t])
            gw = _f64(out[GW][c, t])


@njit(inline="always")
def _energy(rn_w_m2, factor):  # noqa: D103
    # units.net_radiation_mm_per_day, in float64: W m⁻² → mm day⁻¹, floored at 0.
    x = rn_w_m2 * factor
    return x if x >= 0.0 else 0.0


@njit(inline="always")
def _cot(g, present, k, c, t):  # noqa: D103
    # Cotangent of flux k at (c, t); absent cotangents (unused outputs) are zero.
    return _f64(g[k][c, t]) if present[k] else 0.0


@njit(inline="always")
def _scan_cots(g, present, c, t):  # noqa: D103
    # The 21 flux cotangents of cell c, day t, from the scan's per-flux arrays.
    return (
        _cot(g, present, 0, c, t), _cot(g, present, 1, c, t), _cot(g, present, 2, c, t),
        _cot(g, present, 3, c, t), _cot(g, present, 4, c, t), _cot(g, present, 5, c, t),
        _cot(g, present, 6, c, t), _cot(g, present, 7, c, t), _cot(g, present, 8, c, t),
        _cot(g, present, 9, c, t), _cot(g, present, 10, c, t), _cot(g, present, 11, c, t),
        _cot(g, present, 12, c, t), _cot(g, present, 13, c, t), _cot(g, present, 14, c, t),
        _cot(g, present, 15, c, t), _cot(g, present, 16, c, t), _cot(g, present, 17, c, t),
        _cot(g, present, 18, c, t), _cot(g, present, 19, c, t), _cot(g, present, 20, c, t),
    )


@njit(inline="always")
def _day_adjoint(  # noqa: D103
    rnv, pr, tc, am, aei, aes, at, ars, arg, f, smx, bs, bg, kg, swe, sm, gw, eps, cot, lam_swe,
    lam_sm, lam_gw,
):
    # Reverse mode of one cell-day. cot: the 21 flux cotangents of the day; lam_*: the
    # cotangents of the end-of-day storages from later days. Returns the cotangents of
    # the seven α (ALPHA_NAMES order), of the start-of-day storages, and this day's
    # contributions to those of SM_max, β_snow, β_gw and K_gw. Each line is the adjoint of the
    # forward line it names (A-numbers), taken in reverse order.
    v = _day(rnv, pr, tc, am, aei, aes, at, ars, arg, f, smx, bs, bg, kg, swe, sm, gw, eps)
    d_bs = 0.0
    # A24: tws = swe1 + gw1 + sm3
    a_tws = cot[TWS]
    a_swe1 = cot[SWE] + lam_swe + a_tws
    a_sm3 = cot[SM] + lam_sm + a_tws
    a_gw1 = cot[GW] + lam_gw + a_tws
    # A23: gw1 = gw + rg - qb
    a_gw = a_gw1
    a_rg = cot[R_GW] + a_gw1
    a_qb = cot[Q_BASE] - a_gw1
    # A22: qt = qs + qb
    a_qt = cot[Q_TOTAL]
    a_qs = cot[Q_SURF] + a_qt
    a_qb += a_qt
    # A21: qb = gw * bg; A21′: qb = bg * gw * r, r = gw / (gw + kg)
    d_kg = 0.0
    if kg <= 0.0:
        a_gw += a_qb * bg
        d_bg = a_qb * gw
    else:
        r = gw / (gw + kg)
        a_gw += a_qb * bg * r * (2.0 - r)
        d_bg = a_qb * gw * r
        d_kg = -a_qb * bg * r * r
    # A20: qs = qsf * w
    a_qsf = cot[Q_SURF_FRAC] + a_qs * v.w
    a_w = cot[W_IN] + a_qs * v.qsf
    # A19: qsf = (1 - rsf) * (1 - arg)
    a_rsf = cot[R_SOIL_FRAC] - a_qsf * (1.0 - arg)
    a_arg = -a_qsf * (1.0 - v.rsf)
    # A18: rg = rgf * w
    a_rgf = cot[R_GW_FRAC] + a_rg * v.w
    a_w += a_rg * v.rgf
    # A17: rgf = (1 - rsf) * arg
    a_rsf -= a_rgf * arg
    a_arg += a_rgf * (1.0 - v.rsf)
    # A16: sm3 = sm2 + rs
    a_sm2 = a_sm3
    a_rs = cot[R_SOIL] + a_sm3
    # A15: rs = rsf * w
    a_rsf += a_rs * v.w
    a_w += a_rs * v.rsf
    # A14: rsf = min(ratio, 1) * ars, ratio = (smx - sm2) / max(w, eps)
    a_rmin = a_rsf * ars
    a_ars = a_rsf * v.rmin
    a_ratio = a_rmin if v.ratio <= 1.0 else 0.0
    d_smx = a_ratio / v.wd
    a_sm2 -= a_ratio / v.wd
    if v.w >= eps:
        a_w -= a_ratio * v.ratio / v.wd
    # A13: w = rain + melt - ei
    a_melt = cot[SNOW_MELT] + a_w
    a_ei = cot[EI] - a_w
    # EF = et / rn
    a_et = cot[ET]
    if rnv > 0.0:
        a_et += cot[EF] / rnv
    # A12: et = ei + es + tr
    a_ei += a_et
    a_es = cot[ES] + a_et
    a_tr = cot[TR] + a_et
    # A11: sm2 = sm1 - tr
    a_sm1 = a_sm2
    a_tr -= a_sm2
    # A10: tr = f * etp2 * at
    a_f = a_tr * v.etp2 * at
    a_etp2 = a_tr * f * at
    a_at = a_tr * f * v.etp2
    # A7 (second): etp2 = min(rn2, sm1)
    a_rn2 = 0.0
    if v.rn2 <= v.sm1:
        a_rn2 = a_etp2
    else:
        a_sm1 += a_etp2
    # A6 (second): rn2 = rn1 - es
    a_rn1 = a_rn2
    a_es -= a_rn2
    # A9: sm1 = sm - es
    a_sm = a_sm1
    a_es -= a_sm1
    # A8: es = (1 - f) * etp1 * aes
    a_f -= a_es * v.etp1 * aes
    a_etp1 = a_es * (1.0 - f) * aes
    a_aes = a_es * (1.0 - f) * v.etp1
    # A7: etp1 = min(rn1, sm)
    if v.rn1 <= sm:
        a_rn1 += a_etp1
    else:
        a_sm += a_etp1
    # A6: rn1 = rn - ei
    a_ei -= a_rn1
    # A5: ei = min(min(rain, ic), rn), ic = f * aei
    a_ei0 = a_ei if v.ei0 <= rnv else 0.0
    a_ic = 0.0 if v.rain <= v.ic else a_ei0
    a_f += a_ic * aei
    a_aei = a_ic * f
    # A3: swe1 = max(swe + s_acc - melt, 0)
    a_raw = a_swe1 if v.swe_raw >= 0.0 else 0.0
    a_swe = a_raw
    a_sacc = cot[SNOW_ACC] + a_raw
    a_melt -= a_raw
    # A2: melt = min(pos_t * am, swe)
    a_mpot = 0.0
    if v.m_pot <= swe:
        a_mpot = a_melt
    else:
        a_swe += a_melt
    a_am = a_mpot * v.pos_t
    # pos_t = clamp(tc, min=0): torch passes the gradient at tc = 0 too
    a_tc = a_mpot * am if tc >= 0.0 else 0.0
    # A1: s_acc = prec * bs where frozen; A4: rain = prec elsewhere (read by A5 and A13)
    if v.frozen:
        d_bs = a_sacc * pr
        a_pr = a_sacc * bs
    else:
        a_pr = cot[RAINFALL] + a_w + (a_ei0 if v.rain <= v.ic else 0.0)
    return (a_am, a_aei, a_aes, a_at, a_ars, a_arg, a_f, a_swe, a_sm, a_gw, d_smx, d_bs, d_bg,
            d_kg, a_pr, a_tc)


@njit(parallel=True, cache=True)
def _backward_kernel(  # noqa: D103
    rn, prec, tair, alpha, smax, betas, s0, consts, swe_out, sm_out, gw_out, g, present,
    g_alpha, g_smax, g_betas, g_s0, g_forc, want_forc,
):
    # Reverse-mode sweep. g: 21 cotangent arrays (dummies where present[k] is False).
    # Writes g_alpha (7 × [C, T]), g_smax [C], g_betas [3, C] (per cell, summed by the
    # caller), g_s0 [3, C] and, if want_forc, g_forc (2 × [C, T]: prec, tair). Each day
    # recomputes its forward values from the stored start-of-day storages and runs
    # _day_adjoint.
    n_cells, n_days = rn.shape
    rn_factor, t0, eps = consts[0], consts[1], consts[2]
    for c in prange(n_cells):
        bs = _f64(betas[0, c])
        bg = _f64(betas[1, c])
        kg = _f64(betas[2, c])
        smx = _f64(smax[c])
        lam_swe = 0.0
        lam_sm = 0.0
        lam_gw = 0.0
        acc_smx = 0.0
        acc_bs = 0.0
        acc_bg = 0.0
        acc_kg = 0.0
        for t in range(n_days - 1, -1, -1):
            if t == 0:
                swe = _f64(s0[0, c])
                sm = _f64(s0[1, c])
                gw = _f64(s0[2, c])
            else:
                swe = _f64(swe_out[c, t - 1])
                sm = _f64(sm_out[c, t - 1])
                gw = _f64(gw_out[c, t - 1])
            (
                a_am, a_aei, a_aes, a_at, a_ars, a_arg, a_f, lam_swe, lam_sm, lam_gw, d_smx,
                d_bs, d_bg, d_kg, a_pr, a_tc,
            ) = _day_adjoint(
                _energy(_f64(rn[c, t]), rn_factor), _f64(prec[c, t]), _f64(tair[c, t]) - t0,
                _f64(alpha[0][c, t]), _f64(alpha[1][c, t]), _f64(alpha[2][c, t]),
                _f64(alpha[3][c, t]), _f64(alpha[4][c, t]), _f64(alpha[5][c, t]),
                _f64(alpha[6][c, t]), smx, bs, bg, kg, swe, sm, gw, eps,
                _scan_cots(g, present, c, t), lam_swe, lam_sm, lam_gw,
            )
            acc_smx += d_smx
            acc_bs += d_bs
            acc_bg += d_bg
            acc_kg += d_kg
            g_alpha[0][c, t] = a_am
            g_alpha[1][c, t] = a_aei
            g_alpha[2][c, t] = a_aes
            g_alpha[3][c, t] = a_at
            g_alpha[4][c, t] = a_ars
            g_alpha[5][c, t] = a_arg
            g_alpha[6][c, t] = a_f
            if want_forc:
                g_forc[0][c, t] = a_pr
                g_forc[1][c, t] = a_tc
        g_s0[0, c] = lam_swe
        g_s0[1, c] = lam_sm
        g_s0[2, c] = lam_gw
        g_smax[c] = acc_smx
        g_betas[0, c] = acc_bs
        g_betas[1, c] = acc_bg
        g_betas[2, c] = acc_kg


@njit(inline="always")
def _softplus(x):  # noqa: D103
    # torch.nn.functional.softplus with beta 1 and threshold 20, value and derivative.
    if x > 20.0:
        return x, 1.0
    z = math.exp(x)
    return math.log1p(z), z / (z + 1.0)


@njit(inline="always")
def _sigmoid(x):  # noqa: D103
    # torch.sigmoid, value and derivative (from the value, as torch does).
    s = 1.0 / (1.0 + math.exp(-x))
    return s, s * (1.0 - s)


@njit(inline="always")
def _activate(raw, c):  # noqa: D103
    # Cell c's raw head outputs (row of [C, 7]) → the 7 α, then their 7 derivatives; a
    # flat tuple, unpacked by name (numba's parfor analysis rejects nested tuples here).
    am, d_am = _softplus(_f64(raw[c, 0]))
    aei, d_aei = _softplus(_f64(raw[c, 1]))
    aes, d_aes = _sigmoid(_f64(raw[c, 2]))
    at, d_at = _sigmoid(_f64(raw[c, 3]))
    ars, d_ars = _sigmoid(_f64(raw[c, 4]))
    arg, d_arg = _sigmoid(_f64(raw[c, 5]))
    f, d_f = _sigmoid(_f64(raw[c, 6]))
    return am, aei, aes, at, ars, arg, f, d_am, d_aei, d_aes, d_at, d_ars, d_arg, d_f


def _day_forward(raw, forcing, s_prev, smax, betas, consts, out, t, s_next):  # noqa: D103
    # One day of every cell from raw network outputs. raw [C, 7]; forcing [C, 3]: rn
    # (W m⁻²), prec (mm day⁻¹), tair (K); s_prev, s_next [C, 3]: swe, sm, gw (mm);
    # out [28, C, T]: writes the 21 fluxes and the 7 α of day t.
    n_cells = raw.shape[0]
    rn_factor, t0, eps = consts[0], consts[1], consts[2]
    for c in prange(n_cells):
        bs = _f64(betas[0, c])
        bg = _f64(betas[1, c])
        kg = _f64(betas[2, c])
        am, aei, aes, at, ars, arg, f, _, _, _, _, _, _, _ = _activate(raw, c)
        v = _day(
            _energy(_f64(forcing[c, 0]), rn_factor), _f64(forcing[c, 1]),
            _f64(forcing[c, 2]) - t0, am, aei, aes, at, ars, arg, f,
            _f64(smax[c]), bs, bg, kg, _f64(s_prev[c, 0]), _f64(s_prev[c, 1]),
            _f64(s_prev[c, 2]), eps,
        )
        out[SNOW_ACC, c, t] = v.s_acc
        out[SNOW_MELT, c, t] = v.melt
        out[SWE, c, t] = v.swe1
        out[RAINFALL, c, t] = v.rain
        out[EI, c, t] = v.ei
        out[ES, c, t] = v.es
        out[TR, c, t] = v.tr
        out[ET, c, t] = v.et
        out[EF, c, t] = v.ef
        out[W_IN, c, t] = v.w
        out[R_SOIL_FRAC, c, t] = v.rsf
        out[R_SOIL, c, t] = v.rs
        out[R_GW_FRAC, c, t] = v.rgf
        out[R_GW, c, t] = v.rg
        out[SM, c, t] = v.sm3
        out[Q_SURF_FRAC, c, t] = v.qsf
        out[Q_SURF, c, t] = v.qs
        out[Q_BASE, c, t] = v.qb
        out[Q_TOTAL, c, t] = v.qt
        out[GW, c, t] = v.gw1
        out[TWS, c, t] = v.tws
        out[N_FLUX, c, t] = am
        out[N_FLUX + 1, c, t] = aei
        out[N_FLUX + 2, c, t] = aes
        out[N_FLUX + 3, c, t] = at
        out[N_FLUX + 4, c, t] = ars
        out[N_FLUX + 5, c, t] = arg
        out[N_FLUX + 6, c, t] = f
        # Carry the storages as stored, so the backward pass sees the same values.
        s_next[c, 0] = out[SWE, c, t]
        s_next[c, 1] = out[SM, c, t]
        s_next[c, 2] = out[GW, c, t]


def _day_backward(  # noqa: D103
    raw, forcing, s_prev, smax, betas, consts, g_out, t, lam, g_feed, g_raw, g_smax, g_betas,
    g_forc, want_forc,
):
    # Reverse mode of _day_forward for day t. g_out [28, C, T]: cotangents of the outputs;
    # lam [C, 3]: in, the cotangents of the end-of-day storages from the next day's
    # bucket; out, those of the start-of-day storages. g_feed [C, 4]: further cotangents
    # of the end-of-day swe, sm, gw and of fAPAR (their other consumers). Writes g_raw
    # [C, 7] and, if want_forc, g_forc [C, 2] (the day's prec and tair; rn gets none);
    # adds to g_smax [C] and g_betas [3, C].
    n_cells = raw.shape[0]
    rn_factor, t0, eps = consts[0], consts[1], consts[2]
    for c in prange(n_cells):
        bs = _f64(betas[0, c])
        bg = _f64(betas[1, c])
        kg = _f64(betas[2, c])
        am, aei, aes, at, ars, arg, f, d_am, d_aei, d_aes, d_at, d_ars, d_arg, d_f = _activate(
            raw, c)
        cot = (
            _f64(g_out[0, c, t]), _f64(g_out[1, c, t]), _f64(g_out[2, c, t]),
            _f64(g_out[3, c, t]), _f64(g_out[4, c, t]), _f64(g_out[5, c, t]),
            _f64(g_out[6, c, t]), _f64(g_out[7, c, t]), _f64(g_out[8, c, t]),
            _f64(g_out[9, c, t]), _f64(g_out[10, c, t]), _f64(g_out[11, c, t]),
            _f64(g_out[12, c, t]), _f64(g_out[13, c, t]), _f64(g_out[14, c, t]),
            _f64(g_out[15, c, t]), _f64(g_out[16, c, t]), _f64(g_out[17, c, t]),
            _f64(g_out[18, c, t]), _f64(g_out[19, c, t]), _f64(g_out[20, c, t]),
        )
        (
            a_am, a_aei, a_aes, a_at, a_ars, a_arg, a_f, a_swe, a_sm, a_gw, d_smx, d_bs, d_bg,
            d_kg, a_pr, a_tc,
        ) = _day_adjoint(
            _energy(_f64(forcing[c, 0]), rn_factor), _f64(forcing[c, 1]),
            _f64(forcing[c, 2]) - t0, am, aei, aes, at, ars, arg, f,
            _f64(smax[c]), bs, bg, kg, _f64(s_prev[c, 0]), _f64(s_prev[c, 1]),
            _f64(s_prev[c, 2]), eps, cot, _f64(lam[c, 0]) + _f64(g_feed[c, 0]),
            _f64(lam[c, 1]) + _f64(g_feed[c, 1]), _f64(lam[c, 2]) + _f64(g_feed[c, 2]),
        )
        # α also leave as outputs; fAPAR also enters the networks the next day.
        g_raw[c, 0] = (a_am + _f64(g_out[N_FLUX, c, t])) * d_am
        g_raw[c, 1] = (a_aei + _f64(g_out[N_FLUX + 1, c, t])) * d_aei
        g_raw[c, 2] = (a_aes + _f64(g_out[N_FLUX + 2, c, t])) * d_aes
        g_raw[c, 3] = (a_at + _f64(g_out[N_FLUX + 3, c, t])) * d_at
        g_raw[c, 4] = (a_ars + _f64(g_out[N_FLUX + 4, c, t])) * d_ars
        g_raw[c, 5] = (a_arg + _f64(g_out[N_FLUX + 5, c, t])) * d_arg
        g_raw[c, 6] = (a_f + _f64(g_out[N_FLUX + 6, c, t]) + _f64(g_feed[c, 3])) * d_f
        lam[c, 0] = a_swe
        lam[c, 1] = a_sm
        lam[c, 2] = a_gw
        g_smax[c] += d_smx
        g_betas[0, c] += d_bs
        g_betas[1, c] += d_bg
        g_betas[2, c] += d_kg
        if want_forc:
            g_forc[c, 0] = a_pr
            g_forc[c, 1] = a_tc


# Each per-day kernel is compiled twice from one source: a serial build for small
# batches, where starting threads costs more than the work, and a parallel one.
_DAY_KERNELS = {
    parallel: (njit(parallel=parallel, cache=True)(_day_forward),
               njit(parallel=parallel, cache=True)(_day_backward))
    for parallel in (False, True)
}
#: Cells from which the per-day kernels run on several threads.
PARALLEL_CELLS = 256


def day_kernels(n_cells: int):
    """The compiled (forward, backward) per-day kernels suited to ``n_cells``.

    They take numpy arrays in the order of :func:`day_forward` and :func:`day_backward`,
    with :data:`CONSTANTS` after ``betas``: for time loops that keep numpy views of their
    buffers and call once per day, where converting tensors would cost more than the day.
    """
    return _DAY_KERNELS[n_cells >= PARALLEL_CELLS]


def day_forward(raw: Tensor, forcing: Tensor, s_prev: Tensor, sm_max: Tensor, betas: Tensor,
                out: Tensor, t: int, s_next: Tensor) -> None:
    """One bucket day of every cell from raw network outputs, written in place (CPU).

    A building block for callers that run their own time loop and autograd function
    (the hybrid model's state-feedback scan); the arithmetic is :func:`_day`, shared
    with :class:`FusedScan`, so values and tie conventions are those of the bucket.

    Args:
        raw: [cells, 7] raw head outputs in :data:`ALPHA_NAMES` order, activated here
            as the coefficient table says (softplus or sigmoid).
        forcing: [cells, 3]: rn (W m⁻²), prec (mm day⁻¹), tair (K) of the day.
        s_prev: [cells, 3] start-of-day swe, sm, gw (mm).
        sm_max: [cells] (mm).
        betas: [3, cells]: β_snow, β_gw, K_gw of each cell (:func:`per_cell_betas`;
            K_gw 0: the linear outflow), or [2, cells] without K_gw.
        out: [28, cells, days]; row k < 21 receives flux ``FLUX_NAMES[k]`` of day ``t``,
            row 21 + j the activated ``ALPHA_NAMES[j]``.
        t: the day's column in ``out``.
        s_next: [cells, 3] receives the end-of-day storages.

    All tensors are contiguous, on the CPU, of one floating dtype.
    """
    kernel = _DAY_KERNELS[raw.shape[0] >= PARALLEL_CELLS][0]
    kernel(raw.numpy(), forcing.numpy(), s_prev.numpy(), sm_max.numpy(),
           _three_rows(betas).numpy(), CONSTANTS, out.numpy(), t, s_next.numpy())


def day_backward(raw: Tensor, forcing: Tensor, s_prev: Tensor, sm_max: Tensor, betas: Tensor,
                 g_out: Tensor, t: int, lam: Tensor, g_feed: Tensor, g_raw: Tensor,
                 g_sm_max: Tensor, g_betas: Tensor) -> None:
    """Reverse mode of :func:`day_forward` for day ``t``, in place (CPU).

    Args:
        raw: as given to :func:`day_forward`.
        forcing: as given to :func:`day_forward`.
        s_prev: as given to :func:`day_forward`.
        sm_max: as given to :func:`day_forward`.
        betas: as given to :func:`day_forward`.
        g_out: [28, cells, days] cotangents of ``out``.
        t: the day.
        lam: [cells, 3] on entry the cotangents of the end-of-day storages reaching the
            next day's bucket; on return those of the start-of-day storages ``s_prev``.
        g_feed: [cells, 4] further cotangents of the end-of-day swe, sm, gw and of the
            day's fAPAR (e.g. through a network that reads them).
        g_raw: [cells, 7] receives the cotangents of ``raw``.
        g_sm_max: [cells], added to.
        g_betas: [3, cells] (or [2, cells], as ``betas``), added to.

    The forcing's cotangents are left out here; the compiled kernel
    (:func:`day_kernels`) writes them when asked, as the state-feedback op does.
    """
    kernel = _DAY_KERNELS[raw.shape[0] >= PARALLEL_CELLS][1]
    # the kernel writes three rows; a caller's two (linear outflow) get theirs added back
    g3 = g_betas if len(g_betas) == 3 else torch.zeros((3, g_betas.shape[1]),
                                                       dtype=g_betas.dtype)
    kernel(raw.numpy(), forcing.numpy(), s_prev.numpy(), sm_max.numpy(),
           _three_rows(betas).numpy(), CONSTANTS, g_out.numpy(), t, lam.numpy(),
           g_feed.numpy(), g_raw.numpy(), g_sm_max.numpy(), g3.numpy(),
           np.zeros((1, 2), dtype=raw.numpy().dtype), False)
    if g3 is not g_betas:
        g_betas += g3[:2]


def _three_rows(betas: Tensor) -> Tensor:
    """[2, cells] (β_snow, β_gw: the linear outflow) or [3, cells] → [3, cells]."""
    if betas.dim() != 2 or len(betas) not in (2, 3):
        raise ValueError(f"betas: expected [2 or 3, cells], found {tuple(betas.shape)}")
    if len(betas) == 3:
        return betas
    return torch.cat([betas, betas.new_zeros(1, betas.shape[1])]).contiguous()


def per_cell_betas(beta_snow: Tensor, beta_gw: Tensor, n_cells: int, dtype: torch.dtype,
                   baseflow_half: Tensor | None = None) -> Tensor:
    """β_snow, β_gw and K_gw as the kernels read them: [3, cells] (a global value repeated).

    Without ``baseflow_half`` the row of K_gw is 0, which the kernels read as the linear
    outflow A21.
    """
    half = beta_gw.new_zeros(()) if baseflow_half is None else baseflow_half.detach()
    return torch.stack([beta_snow.detach().expand(n_cells), beta_gw.detach().expand(n_cells),
                        half.expand(n_cells)]).to(dtype).contiguous()


def beta_dims(beta_snow: Tensor, beta_gw: Tensor, baseflow_half: Tensor | None
              ) -> tuple[int, ...]:
    """The dims of the constants given, for :func:`beta_gradients` (K_gw's only if given)."""
    return (beta_snow.dim(), beta_gw.dim(),
            *(() if baseflow_half is None else (baseflow_half.dim(),)))


def beta_gradients(g_betas: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, ...]:
    """Per-cell cotangents [2 or 3, cells] → those of the constants of ``dims`` as given.

    A 0-d (global) constant's are summed over cells; K_gw's row is read only if ``dims``
    has a third entry.
    """
    return tuple(g if d else g.sum() for g, d in zip(g_betas[:len(dims)], dims, strict=True))


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


class FusedScan(torch.autograd.Function):
    """Autograd function: the whole H2MV series in one kernel, adjoint in another.

    Inputs (CPU tensors of one floating dtype): ``rn``, ``prec``, ``tair`` [C, T] in
    W m⁻², mm day⁻¹, K (converted inside the kernel; ``prec`` and ``tair`` receive
    gradients where asked, ``rn`` none); the seven α [C, T]
    in the order of :data:`process_layers.parameters.ALPHA_NAMES`; ``sm_max`` [C];
    ``beta_snow``, ``beta_gw`` (0-d, global, or [C], per cell); initial ``swe``, ``sm``,
    ``gw`` [C]; optionally last ``baseflow_half`` (K_gw, mm, 0-d or [C]: the nonlinear
    outflow A21′). Returns the 21 fluxes of :class:`process_layers.containers.Fluxes`,
    each [C, T].
    """

    @staticmethod
    def forward(ctx, rn, prec, tair, *params):  # noqa: D102
        alphas, (sm_max, beta_snow, beta_gw, swe0, sm0, gw0, *half) = params[:7], params[7:]
        half = half[0] if half else None
        dtype = rn.dtype
        n_cells, n_days = rn.shape
        outs = tuple(torch.empty((n_cells, n_days), dtype=dtype) for _ in range(N_FLUX))
        alphas = tuple(a.detach().contiguous() for a in alphas)
        betas = per_cell_betas(beta_snow, beta_gw, n_cells, dtype, half)
        ctx.beta_dims = beta_dims(beta_snow, beta_gw, half)
        s0 = torch.stack([swe0.detach(), sm0.detach(), gw0.detach()]).contiguous()
        rn_c, prec_c, tc_c = (x.detach().contiguous() for x in (rn, prec, tair))
        sm_max_c = sm_max.detach().contiguous()
        _forward_kernel(
            rn_c.numpy(), prec_c.numpy(), tc_c.numpy(), tuple(a.numpy() for a in alphas),
            sm_max_c.numpy(), betas.numpy(), s0.numpy(), CONSTANTS,
            tuple(o.numpy() for o in outs),
        )
        ctx.save_for_backward(
            rn_c, prec_c, tc_c, *alphas, sm_max_c, betas, s0, outs[SWE], outs[SM], outs[GW]
        )
        ctx.set_materialize_grads(False)
        return outs

    @staticmethod
    def backward(ctx, *grads):  # noqa: D102
        rn_c, prec_c, tc_c, *rest = ctx.saved_tensors
        alphas, (sm_max, betas, s0, swe_out, sm_out, gw_out) = rest[:7], rest[7:]
        dtype = rn_c.dtype
        n_cells, n_days = rn_c.shape
        dummy = np.zeros((1, 1), dtype=rn_c.numpy().dtype)
        present = np.array([g is not None for g in grads], dtype=np.bool_)
        g_np = tuple(dummy if g is None else _np(g.to(dtype)) for g in grads)
        g_alpha = tuple(torch.empty((n_cells, n_days), dtype=dtype) for _ in range(7))
        g_smax = torch.empty(n_cells, dtype=dtype)
        g_betas = torch.empty((3, n_cells), dtype=dtype)
        g_s0 = torch.empty((3, n_cells), dtype=dtype)
        want_forc = bool(ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        g_forc = tuple(torch.empty((n_cells, n_days) if want_forc else (1, 1), dtype=dtype)
                       for _ in range(2))
        _backward_kernel(
            rn_c.numpy(), prec_c.numpy(), tc_c.numpy(), tuple(a.numpy() for a in alphas),
            sm_max.numpy(), betas.numpy(), s0.numpy(), CONSTANTS, swe_out.numpy(), sm_out.numpy(),
            gw_out.numpy(), g_np, present, tuple(a.numpy() for a in g_alpha),
            g_smax.numpy(), g_betas.numpy(), g_s0.numpy(), tuple(x.numpy() for x in g_forc),
            want_forc,
        )
        g_bs, g_bg, *g_half = beta_gradients(g_betas, ctx.beta_dims)
        g_prec, g_tair = (g_forc[i] if ctx.needs_input_grad[1 + i] else None for i in range(2))
        return (
            None, g_prec, g_tair, *g_alpha, g_smax, g_bs, g_bg, g_s0[0], g_s0[1], g_s0[2],
            *g_half,
        )
