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
Forcing is treated as data: gradients flow to α, SM_max, β and the initial storages,
not to ``rn``, ``prec`` or ``tair`` (``simulate`` uses the per-day path when the forcing
requires a gradient).
"""

from __future__ import annotations

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

# Passed to the kernels as arguments, not read as globals: numba's on-disk cache is keyed
# on this file, so a constant compiled in from another module could go stale.
CONSTANTS = np.array(
    [W_M2_TO_MJ_M2_DAY / LATENT_HEAT_VAPORISATION, ZERO_CELSIUS_IN_KELVIN, RECHARGE_EPSILON]
)
N_FLUX = len(FLUX_NAMES)

# Indices into the flux tuple; the order is that of containers.Fluxes.
SNOW_ACC, SNOW_MELT, SWE, RAINFALL, EI, ES, TR, ET, EF, W_IN = range(10)
R_SOIL_FRAC, R_SOIL, R_GW_FRAC, R_GW, SM, Q_SURF_FRAC, Q_SURF, Q_BASE, Q_TOTAL, GW, TWS = range(
    10, 21
)
assert FLUX_NAMES[TWS] == "tws" and FLUX_NAMES[SM] == "sm" and FLUX_NAMES[TR] == "T"


@njit(inline="always")
def _day(rn, prec, tc, am, aei, aes, at, ars, arg, f, smx, bs, bg, swe, sm, gw, eps):  # noqa: D103
    # Inputs are float64 scalars of one cell-day: rn in mm day⁻¹ (converted, floored),
    # tc in °C; see the module docstring for the rest.
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
    qb = gw * bg  # A21
    qt = qs + qb  # A22
    gw1 = gw + rg - qb  # A23
    tws = swe1 + gw1 + sm3  # A24
    return (
        frozen, s_acc, pos_t, m_pot, melt, swe_raw, swe1, rain, ic, ei0, ei, rn1, etp1, es,
        sm1, rn2, etp2, tr, sm2, et, ef, w, wd, ratio, rmin, rsf, rs, sm3, rgf, rg, qsf, qs,
        qb, qt, gw1, tws,
    )


@njit(parallel=True, cache=True)
def _forward_kernel(rn, prec, tair, alpha, smax, betas, s0, consts, out):  # noqa: D103
    # rn (W m⁻²), prec (mm day⁻¹), tair (K): [C, T]; alpha: 7 × [C, T]; smax: [C];
    # betas: [2]; s0: [3, C]; consts: CONSTANTS; out: 21 × [C, T], written in place.
    n_cells, n_days = rn.shape
    bs = float(betas[0])
    bg = float(betas[1])
    rn_factor, t0, eps = consts[0], consts[1], consts[2]
    for c in prange(n_cells):
        swe = float(s0[0, c])
        sm = float(s0[1, c])
        gw = float(s0[2, c])
        smx = float(smax[c])
        for t in range(n_days):
            (
                frozen, s_acc, pos_t, m_pot, melt, swe_raw, swe1, rain, ic, ei0, ei, rn1, etp1,
                es, sm1, rn2, etp2, tr, sm2, et, ef, w, wd, ratio, rmin, rsf, rs, sm3, rgf, rg,
                qsf, qs, qb, qt, gw1, tws,
            ) = _day(
                _energy(float(rn[c, t]), rn_factor), float(prec[c, t]), float(tair[c, t]) - t0,
                float(alpha[0][c, t]), float(alpha[1][c, t]), float(alpha[2][c, t]),
                float(alpha[3][c, t]), float(alpha[4][c, t]), float(alpha[5][c, t]),
                float(alpha[6][c, t]), smx, bs, bg, swe, sm, gw, eps,
            )
            out[SNOW_ACC][c, t] = s_acc
            out[SNOW_MELT][c, t] = melt
            out[SWE][c, t] = swe1
            out[RAINFALL][c, t] = rain
            out[EI][c, t] = ei
            out[ES][c, t] = es
            out[TR][c, t] = tr
            out[ET][c, t] = et
            out[EF][c, t] = ef
            out[W_IN][c, t] = w
            out[R_SOIL_FRAC][c, t] = rsf
            out[R_SOIL][c, t] = rs
            out[R_GW_FRAC][c, t] = rgf
            out[R_GW][c, t] = rg
            out[SM][c, t] = sm3
            out[Q_SURF_FRAC][c, t] = qsf
            out[Q_SURF][c, t] = qs
            out[Q_BASE][c, t] = qb
            out[Q_TOTAL][c, t] = qt
            out[GW][c, t] = gw1
            out[TWS][c, t] = tws
            # Carry the storages as stored, so the backward pass sees the same values.
            swe = float(out[SWE][c, t])
            sm = float(out[SM][c, t])
            gw = float(out[GW][c, t])


@njit(inline="always")
def _energy(rn_w_m2, factor):  # noqa: D103
    # units.net_radiation_mm_per_day, in float64: W m⁻² → mm day⁻¹, floored at 0.
    x = rn_w_m2 * factor
    return x if x >= 0.0 else 0.0


@njit(inline="always")
def _cot(g, present, k, c, t):  # noqa: D103
    # Cotangent of flux k at (c, t); absent cotangents (unused outputs) are zero.
    return float(g[k][c, t]) if present[k] else 0.0


@njit(parallel=True, cache=True)
def _backward_kernel(  # noqa: D103
    rn, prec, tair, alpha, smax, betas, s0, consts, swe_out, sm_out, gw_out, g, present,
    g_alpha, g_smax, g_betas, g_s0,
):
    # Reverse-mode sweep. g: 21 cotangent arrays (dummies where present[k] is False).
    # Writes g_alpha (7 × [C, T]), g_smax [C], g_betas [2, C] (per cell, summed by the
    # caller) and g_s0 [3, C]. Each line below is the adjoint of the forward line it
    # names (A-numbers), taken in reverse order.
    n_cells, n_days = rn.shape
    bs = float(betas[0])
    bg = float(betas[1])
    rn_factor, t0, eps = consts[0], consts[1], consts[2]
    for c in prange(n_cells):
        smx = float(smax[c])
        lam_swe = 0.0
        lam_sm = 0.0
        lam_gw = 0.0
        acc_smx = 0.0
        acc_bs = 0.0
        acc_bg = 0.0
        for t in range(n_days - 1, -1, -1):
            if t == 0:
                swe = float(s0[0, c])
                sm = float(s0[1, c])
                gw = float(s0[2, c])
            else:
                swe = float(swe_out[c, t - 1])
                sm = float(sm_out[c, t - 1])
                gw = float(gw_out[c, t - 1])
            rnv = _energy(float(rn[c, t]), rn_factor)
            pr = float(prec[c, t])
            am = float(alpha[0][c, t])
            aei = float(alpha[1][c, t])
            aes = float(alpha[2][c, t])
            at = float(alpha[3][c, t])
            ars = float(alpha[4][c, t])
            arg = float(alpha[5][c, t])
            f = float(alpha[6][c, t])
            (
                frozen, s_acc, pos_t, m_pot, melt, swe_raw, swe1, rain, ic, ei0, ei, rn1, etp1,
                es, sm1, rn2, etp2, tr, sm2, et, ef, w, wd, ratio, rmin, rsf, rs, sm3, rgf, rg,
                qsf, qs, qb, qt, gw1, tws,
            ) = _day(rnv, pr, float(tair[c, t]) - t0, am, aei, aes, at, ars, arg, f, smx, bs,
                     bg, swe, sm, gw, eps)

            # A24: tws = swe1 + gw1 + sm3
            a_tws = _cot(g, present, TWS, c, t)
            a_swe1 = _cot(g, present, SWE, c, t) + lam_swe + a_tws
            a_sm3 = _cot(g, present, SM, c, t) + lam_sm + a_tws
            a_gw1 = _cot(g, present, GW, c, t) + lam_gw + a_tws
            # A23: gw1 = gw + rg - qb
            a_gw = a_gw1
            a_rg = _cot(g, present, R_GW, c, t) + a_gw1
            a_qb = _cot(g, present, Q_BASE, c, t) - a_gw1
            # A22: qt = qs + qb
            a_qt = _cot(g, present, Q_TOTAL, c, t)
            a_qs = _cot(g, present, Q_SURF, c, t) + a_qt
            a_qb += a_qt
            # A21: qb = gw * bg
            a_gw += a_qb * bg
            acc_bg += a_qb * gw
            # A20: qs = qsf * w
            a_qsf = _cot(g, present, Q_SURF_FRAC, c, t) + a_qs * w
            a_w = _cot(g, present, W_IN, c, t) + a_qs * qsf
            # A19: qsf = (1 - rsf) * (1 - arg)
            a_rsf = _cot(g, present, R_SOIL_FRAC, c, t) - a_qsf * (1.0 - arg)
            a_arg = -a_qsf * (1.0 - rsf)
            # A18: rg = rgf * w
            a_rgf = _cot(g, present, R_GW_FRAC, c, t) + a_rg * w
            a_w += a_rg * rgf
            # A17: rgf = (1 - rsf) * arg
            a_rsf -= a_rgf * arg
            a_arg += a_rgf * (1.0 - rsf)
            # A16: sm3 = sm2 + rs
            a_sm2 = a_sm3
            a_rs = _cot(g, present, R_SOIL, c, t) + a_sm3
            # A15: rs = rsf * w
            a_rsf += a_rs * w
            a_w += a_rs * rsf
            # A14: rsf = min(ratio, 1) * ars, ratio = (smx - sm2) / max(w, eps)
            a_rmin = a_rsf * ars
            a_ars = a_rsf * rmin
            a_ratio = a_rmin if ratio <= 1.0 else 0.0
            acc_smx += a_ratio / wd
            a_sm2 -= a_ratio / wd
            if w >= eps:
                a_w -= a_ratio * ratio / wd
            # A13: w = rain + melt - ei
            a_melt = _cot(g, present, SNOW_MELT, c, t) + a_w
            a_ei = _cot(g, present, EI, c, t) - a_w
            # EF = et / rn
            a_et = _cot(g, present, ET, c, t)
            if rnv > 0.0:
                a_et += _cot(g, present, EF, c, t) / rnv
            # A12: et = ei + es + tr
            a_ei += a_et
            a_es = _cot(g, present, ES, c, t) + a_et
            a_tr = _cot(g, present, TR, c, t) + a_et
            # A11: sm2 = sm1 - tr
            a_sm1 = a_sm2
            a_tr -= a_sm2
            # A10: tr = f * etp2 * at
            a_f = a_tr * etp2 * at
            a_etp2 = a_tr * f * at
            a_at = a_tr * f * etp2
            # A7 (second): etp2 = min(rn2, sm1)
            a_rn2 = 0.0
            if rn2 <= sm1:
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
            a_f -= a_es * etp1 * aes
            a_etp1 = a_es * (1.0 - f) * aes
            a_aes = a_es * (1.0 - f) * etp1
            # A7: etp1 = min(rn1, sm)
            if rn1 <= sm:
                a_rn1 += a_etp1
            else:
                a_sm += a_etp1
            # A6: rn1 = rn - ei
            a_ei -= a_rn1
            # A5: ei = min(min(rain, ic), rn), ic = f * aei
            a_ei0 = a_ei if ei0 <= rnv else 0.0
            a_ic = 0.0 if rain <= ic else a_ei0
            a_f += a_ic * aei
            a_aei = a_ic * f
            # A3: swe1 = max(swe + s_acc - melt, 0)
            a_raw = a_swe1 if swe_raw >= 0.0 else 0.0
            a_swe = a_raw
            a_sacc = _cot(g, present, SNOW_ACC, c, t) + a_raw
            a_melt -= a_raw
            # A2: melt = min(pos_t * am, swe)
            a_mpot = 0.0
            if m_pot <= swe:
                a_mpot = a_melt
            else:
                a_swe += a_melt
            a_am = a_mpot * pos_t
            # A1: s_acc = prec * bs where frozen
            if frozen:
                acc_bs += a_sacc * pr

            g_alpha[0][c, t] = a_am
            g_alpha[1][c, t] = a_aei
            g_alpha[2][c, t] = a_aes
            g_alpha[3][c, t] = a_at
            g_alpha[4][c, t] = a_ars
            g_alpha[5][c, t] = a_arg
            g_alpha[6][c, t] = a_f
            lam_swe = a_swe
            lam_sm = a_sm
            lam_gw = a_gw
        g_s0[0, c] = lam_swe
        g_s0[1, c] = lam_sm
        g_s0[2, c] = lam_gw
        g_smax[c] = acc_smx
        g_betas[0, c] = acc_bs
        g_betas[1, c] = acc_bg


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


class FusedScan(torch.autograd.Function):
    """Autograd function: the whole H2MV series in one kernel, adjoint in another.

    Inputs (CPU tensors of one floating dtype): ``rn``, ``prec``, ``tair`` [C, T] in
    W m⁻², mm day⁻¹, K (no gradient; converted inside the kernel); the seven α [C, T]
    in the order of :data:`process_layers.parameters.ALPHA_NAMES`; ``sm_max`` [C]; ``beta_snow``,
    ``beta_gw`` (0-d); initial ``swe``, ``sm``, ``gw`` [C]. Returns the 21 fluxes of
    :class:`process_layers.containers.Fluxes`, each [C, T].
    """

    @staticmethod
    def forward(ctx, rn, prec, tair, *params):  # noqa: D102
        alphas, (sm_max, beta_snow, beta_gw, swe0, sm0, gw0) = params[:7], params[7:]
        dtype = rn.dtype
        n_cells, n_days = rn.shape
        outs = tuple(torch.empty((n_cells, n_days), dtype=dtype) for _ in range(N_FLUX))
        alphas = tuple(a.detach().contiguous() for a in alphas)
        betas = torch.stack([beta_snow.detach(), beta_gw.detach()]).to(dtype)
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
        g_betas = torch.empty((2, n_cells), dtype=dtype)
        g_s0 = torch.empty((3, n_cells), dtype=dtype)
        _backward_kernel(
            rn_c.numpy(), prec_c.numpy(), tc_c.numpy(), tuple(a.numpy() for a in alphas),
            sm_max.numpy(), betas.numpy(), s0.numpy(), CONSTANTS, swe_out.numpy(), sm_out.numpy(),
            gw_out.numpy(), g_np, present, tuple(a.numpy() for a in g_alpha),
            g_smax.numpy(), g_betas.numpy(), g_s0.numpy(),
        )
        g_beta_sum = g_betas.sum(dim=1)
        return (
            None, None, None, *g_alpha, g_smax, g_beta_sum[0], g_beta_sum[1],
            g_s0[0], g_s0[1], g_s0[2],
        )
