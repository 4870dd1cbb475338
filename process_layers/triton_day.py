"""One H2MV bucket day and its adjoint as Triton device functions (GPU).

The same arithmetic as :func:`process_layers.fused._day` and ``_day_adjoint`` (the numba
kernels of the CPU), written branch-free for a block of cells: every ``x if cond else y``
there is ``tl.where(cond, x, y)`` here, with the same comparison, so the value *and the
branch that receives the gradient* at a tie are the same on both devices
(:mod:`process_layers._ops`). Callers pass float64 blocks: the bucket computes in float64
whatever the storage dtype, as on the CPU. Each function is inlined into the kernels of
:mod:`process_layers.triton_scan` and :mod:`h2mv_hybrid.model.feedback_gpu`.

Under ``TRITON_INTERPRET=1`` the same source runs on the CPU with numpy, which is how the
tests hold it to the numba kernels on machines without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from process_layers.fused import CONSTANTS

#: Launch option of every kernel using these functions: no fused multiply-add. The CPU's
#: kernels round every product (numba does not contract), and at an exact tie of the
#: bucket's min/max (a full soil, α at a bound) one ulp decides which branch gets the
#: gradient; measured on an H200, contraction flipped such branches. (The interpreter
#: ignores the option.)
NO_FMA = {"enable_fp_fusion": False}


def kernel_constants(device: torch.device, *extra: float) -> torch.Tensor:
    """fused.CONSTANTS (and ``extra``) as a float64 tensor on ``device``, for :func:`constants`.

    Read from memory, not passed as scalars: Triton passes a Python float as float32,
    which would round the radiation factor (0.0864 / 2.45) before the float64 arithmetic.
    """
    return torch.tensor([*CONSTANTS, *extra], dtype=torch.float64, device=device)


@triton.jit
def constants(consts):
    """(W m⁻² → mm day⁻¹ factor, 0 °C in K, recharge ε) from :func:`kernel_constants`."""
    return tl.load(consts), tl.load(consts + 1), tl.load(consts + 2)


@triton.jit
def energy(rn_w_m2, factor):
    """Net radiation (W m⁻²) → available energy in mm day⁻¹, floored at 0 (units.py)."""
    x = rn_w_m2 * factor
    return tl.where(x >= 0.0, x, 0.0)


@triton.jit
def _share(gw, kg):
    """The share r = GW / (GW + K_gw) of A21′; 1 where K_gw ≤ 0 (the linear A21)."""
    lin = kg <= 0.0
    return tl.where(lin, 1.0, gw / tl.where(lin, 1.0, gw + kg))


@triton.jit
def day(rn, prec, tc, am, aei, aes, at, ars, arg, f, smx, bs, bg, kg, swe, sm, gw, eps):
    """Appendix A, eqs. A1–A24, for a block of cells; every intermediate, in fused.DayValues order.

    rn: available energy (mm day⁻¹, floored), prec (mm day⁻¹), tc (°C); the seven α
    (snow_melt, Ei, Es, T, r_soil, r_gw, fapar); smx = SM_max, swe, sm, gw (mm); bs, bg:
    β_snow, β_gw; kg: K_gw (mm) of the nonlinear outflow A21′, or 0 for the linear A21;
    eps: the recharge ratio's floor of w_in (mm day⁻¹).
    """
    frozen = tc <= 0.0
    s_acc = tl.where(frozen, prec * bs, 0.0)  # A1
    pos_t = tl.where(tc > 0.0, tc, 0.0)
    m_pot = pos_t * am
    melt = tl.where(m_pot <= swe, m_pot, swe)  # A2
    swe_raw = swe + s_acc - melt
    swe1 = tl.where(swe_raw >= 0.0, swe_raw, 0.0)  # A3
    rain = tl.where(frozen, 0.0, prec)  # A4
    ic = f * aei
    ei0 = tl.where(rain <= ic, rain, ic)
    ei = tl.where(ei0 <= rn, ei0, rn)  # A5
    rn1 = rn - ei  # A6
    etp1 = tl.where(rn1 <= sm, rn1, sm)  # A7
    es = (1.0 - f) * etp1 * aes  # A8
    sm1 = sm - es  # A9
    rn2 = rn1 - es
    etp2 = tl.where(rn2 <= sm1, rn2, sm1)  # A7 again
    tr = f * etp2 * at  # A10
    sm2 = sm1 - tr  # A11
    et = ei + es + tr  # A12
    ef = tl.where(rn > 0.0, et / tl.where(rn > 0.0, rn, 1.0), 0.0)
    w = rain + melt - ei  # A13
    wd = tl.where(w >= eps, w, eps)
    ratio = (smx - sm2) / wd
    rmin = tl.where(ratio <= 1.0, ratio, 1.0)
    rsf = rmin * ars  # A14
    rs = rsf * w  # A15
    sm3 = sm2 + rs  # A16
    rgf = (1.0 - rsf) * arg  # A17
    rg = rgf * w  # A18
    qsf = (1.0 - rsf) * (1.0 - arg)  # A19
    qs = qsf * w  # A20
    qb = tl.where(kg <= 0.0, gw * bg, bg * gw * _share(gw, kg))  # A21, A21′
    qt = qs + qb  # A22
    gw1 = gw + rg - qb  # A23
    tws = swe1 + gw1 + sm3  # A24
    return (frozen, s_acc, pos_t, m_pot, melt, swe_raw, swe1, rain, ic, ei0, ei, rn1, etp1, es,
            sm1, rn2, etp2, tr, sm2, et, ef, w, wd, ratio, rmin, rsf, rs, sm3, rgf, rg, qsf, qs,
            qb, qt, gw1, tws)


@triton.jit
def day_adjoint(rnv, pr, tc, am, aei, aes, at, ars, arg, f, smx, bs, bg, kg, swe, sm, gw, eps,
                c_sacc, c_melt, c_swe, c_rain, c_ei, c_es, c_tr, c_et, c_ef, c_w, c_rsf, c_rs,
                c_rgf, c_rg, c_sm, c_qsf, c_qs, c_qb, c_qt, c_gw, c_tws, lam_swe, lam_sm,
                lam_gw):
    """Reverse mode of :func:`day` (fused._day_adjoint, line for line).

    c_*: the 21 flux cotangents of the day (FLUX_NAMES order); lam_*: those of the
    end-of-day storages from later days. Returns the cotangents of the seven α, of the
    start-of-day swe, sm, gw, the day's shares of SM_max's, β_snow's, β_gw's and K_gw's,
    and the cotangents of the day's prec and tc.
    """
    (frozen, s_acc, pos_t, m_pot, melt, swe_raw, swe1, rain, ic, ei0, ei, rn1, etp1, es, sm1,
     rn2, etp2, tr, sm2, et, ef, w, wd, ratio, rmin, rsf, rs, sm3, rgf, rg, qsf, qs, qb, qt,
     gw1, tws) = day(rnv, pr, tc, am, aei, aes, at, ars, arg, f, smx, bs, bg, kg, swe, sm, gw,
                     eps)
    # A24
    a_swe1 = c_swe + lam_swe + c_tws
    a_sm3 = c_sm + lam_sm + c_tws
    a_gw1 = c_gw + lam_gw + c_tws
    # A23
    a_gw = a_gw1
    a_rg = c_rg + a_gw1
    a_qb = c_qb - a_gw1
    # A22
    a_qs = c_qs + c_qt
    a_qb += c_qt
    # A21 (kg ≤ 0; r = 1 there) or A21′: qb = bg * gw * r, r = gw / (gw + kg)
    lin = kg <= 0.0
    r = _share(gw, kg)
    a_gw += a_qb * tl.where(lin, bg, bg * r * (2.0 - r))
    d_bg = a_qb * gw * r
    d_kg = tl.where(lin, 0.0, -a_qb * bg * r * r)
    # A20
    a_qsf = c_qsf + a_qs * w
    a_w = c_w + a_qs * qsf
    # A19
    a_rsf = c_rsf - a_qsf * (1.0 - arg)
    a_arg = -a_qsf * (1.0 - rsf)
    # A18
    a_rgf = c_rgf + a_rg * w
    a_w += a_rg * rgf
    # A17
    a_rsf -= a_rgf * arg
    a_arg += a_rgf * (1.0 - rsf)
    # A16
    a_sm2 = a_sm3
    a_rs = c_rs + a_sm3
    # A15
    a_rsf += a_rs * w
    a_w += a_rs * rsf
    # A14
    a_rmin = a_rsf * ars
    a_ars = a_rsf * rmin
    a_ratio = tl.where(ratio <= 1.0, a_rmin, 0.0)
    d_smx = a_ratio / wd
    a_sm2 -= a_ratio / wd
    a_w = tl.where(w >= eps, a_w - a_ratio * ratio / wd, a_w)
    # A13
    a_melt = c_melt + a_w
    a_ei = c_ei - a_w
    # EF = et / rn
    a_et = c_et + tl.where(rnv > 0.0, c_ef / tl.where(rnv > 0.0, rnv, 1.0), 0.0)
    # A12
    a_ei += a_et
    a_es = c_es + a_et
    a_tr = c_tr + a_et
    # A11
    a_sm1 = a_sm2
    a_tr -= a_sm2
    # A10
    a_f = a_tr * etp2 * at
    a_etp2 = a_tr * f * at
    a_at = a_tr * f * etp2
    # A7 (second)
    second_rn = rn2 <= sm1
    a_rn2 = tl.where(second_rn, a_etp2, 0.0)
    a_sm1 += tl.where(second_rn, 0.0, a_etp2)
    # A6 (second)
    a_rn1 = a_rn2
    a_es -= a_rn2
    # A9
    a_sm = a_sm1
    a_es -= a_sm1
    # A8
    a_f -= a_es * etp1 * aes
    a_etp1 = a_es * (1.0 - f) * aes
    a_aes = a_es * (1.0 - f) * etp1
    # A7
    first_rn = rn1 <= sm
    a_rn1 += tl.where(first_rn, a_etp1, 0.0)
    a_sm += tl.where(first_rn, 0.0, a_etp1)
    # A6
    a_ei -= a_rn1
    # A5
    a_ei0 = tl.where(ei0 <= rnv, a_ei, 0.0)
    a_ic = tl.where(rain <= ic, 0.0, a_ei0)
    a_f += a_ic * aei
    a_aei = a_ic * f
    # A3
    a_raw = tl.where(swe_raw >= 0.0, a_swe1, 0.0)
    a_swe = a_raw
    a_sacc = c_sacc + a_raw
    a_melt -= a_raw
    # A2
    capped = m_pot <= swe
    a_mpot = tl.where(capped, a_melt, 0.0)
    a_swe += tl.where(capped, 0.0, a_melt)
    a_am = a_mpot * pos_t
    a_tc = tl.where(tc >= 0.0, a_mpot * am, 0.0)
    # A1, A4
    d_bs = tl.where(frozen, a_sacc * pr, 0.0)
    a_pr = tl.where(frozen, a_sacc * bs,
                    c_rain + a_w + tl.where(rain <= ic, a_ei0, 0.0))
    return (a_am, a_aei, a_aes, a_at, a_ars, a_arg, a_f, a_swe, a_sm, a_gw, d_smx, d_bs, d_bg,
            d_kg, a_pr, a_tc)


@triton.jit
def store_fluxes(out, pl, o, m, s_acc, melt, swe1, rain, ei, es, tr, et, ef, w, rsf, rs, rgf,
                 rg, sm3, qsf, qs, qb, qt, gw1, tws):
    """Write a day's 21 fluxes (FLUX_NAMES order) to planes 0–20 of ``out`` at offsets ``o``.

    ``pl``: the plane size (days × cells) as an int64 block; values are rounded to
    ``out``'s dtype.
    """
    dt = out.dtype.element_ty
    tl.store(out + o, s_acc.to(dt), mask=m)
    tl.store(out + pl + o, melt.to(dt), mask=m)
    tl.store(out + 2 * pl + o, swe1.to(dt), mask=m)
    tl.store(out + 3 * pl + o, rain.to(dt), mask=m)
    tl.store(out + 4 * pl + o, ei.to(dt), mask=m)
    tl.store(out + 5 * pl + o, es.to(dt), mask=m)
    tl.store(out + 6 * pl + o, tr.to(dt), mask=m)
    tl.store(out + 7 * pl + o, et.to(dt), mask=m)
    tl.store(out + 8 * pl + o, ef.to(dt), mask=m)
    tl.store(out + 9 * pl + o, w.to(dt), mask=m)
    tl.store(out + 10 * pl + o, rsf.to(dt), mask=m)
    tl.store(out + 11 * pl + o, rs.to(dt), mask=m)
    tl.store(out + 12 * pl + o, rgf.to(dt), mask=m)
    tl.store(out + 13 * pl + o, rg.to(dt), mask=m)
    tl.store(out + 14 * pl + o, sm3.to(dt), mask=m)
    tl.store(out + 15 * pl + o, qsf.to(dt), mask=m)
    tl.store(out + 16 * pl + o, qs.to(dt), mask=m)
    tl.store(out + 17 * pl + o, qb.to(dt), mask=m)
    tl.store(out + 18 * pl + o, qt.to(dt), mask=m)
    tl.store(out + 19 * pl + o, gw1.to(dt), mask=m)
    tl.store(out + 20 * pl + o, tws.to(dt), mask=m)


@triton.jit
def log1p(x):
    """log(1 + x), accurate for small x (Goldberg 1991, thm 4; no libdevice call)."""
    u = 1.0 + x
    exact = u == 1.0
    return tl.where(exact, x, tl.log(u) * x / tl.where(exact, 1.0, u - 1.0))


@triton.jit
def softplus(x):
    """Softplus as torch has it (β 1, threshold 20) and its derivative, float64 blocks."""
    big = x > 20.0
    z = tl.exp(tl.where(big, 0.0, x))
    return tl.where(big, x, log1p(z)), tl.where(big, 1.0, z / (z + 1.0))


@triton.jit
def sigmoid(x):
    """The sigmoid as torch has it and its derivative (from the value), float64 blocks."""
    s = 1.0 / (1.0 + tl.exp(-x))
    return s, s * (1.0 - s)
