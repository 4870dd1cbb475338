"""The fused H2MV scan on a GPU: one Triton kernel over all days, its adjoint in another.

The contract is that of :class:`process_layers.fused.FusedScan` (the numba kernels of the
CPU): the same inputs, the same 21 outputs, the same hand-written adjoint that recomputes
each day from the stored end-of-day storages, float64 arithmetic whatever the storage
dtype, storages rounded to the storage dtype at the end of every day. One GPU lane runs
one cell through all its days; a program holds a block of cells.

Why Triton: it ships with PyTorch's CUDA builds (nothing more to install on a GPU), it
compiles for the device at hand, and its interpreter (``TRITON_INTERPRET=1``) runs the same
source on the CPU with numpy, so CI holds these kernels to the numba ones without a GPU.
numba-cuda would need its own install and its simulator is a separate code path.

Layout: on the GPU neighbouring lanes must read neighbouring addresses, so the kernels
read and write day-major planes [k, days, cells] (one coalesced row per day); the
[cells, days] tensors of the interface are transposed on the way in and returned as
transposed views (no copy) on the way out.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from process_layers.fused import N_FLUX, beta_dims, beta_gradients, per_cell_betas
from process_layers.triton_day import (
    NO_FMA,
    constants,
    day,
    day_adjoint,
    energy,
    kernel_constants,
    store_fluxes,
)


def block_cells(n_cells: int) -> int:
    """Cells per program: enough programs to fill a large GPU (~132 SMs), 32 to 256 lanes."""
    block = 256
    while block > 32 and triton.cdiv(n_cells, block) < 264:
        block //= 2
    return block


@triton.jit
def _cell_constants(betas, smax, s0, c, n_cells):
    # β_snow, β_gw, K_gw, SM_max and the initial swe, sm, gw of cells c, in float64
    return (tl.load(betas + c).to(tl.float64), tl.load(betas + n_cells + c).to(tl.float64),
            tl.load(betas + 2 * n_cells + c).to(tl.float64), tl.load(smax + c).to(tl.float64),
            tl.load(s0 + c).to(tl.float64), tl.load(s0 + n_cells + c).to(tl.float64),
            tl.load(s0 + 2 * n_cells + c).to(tl.float64))


@triton.jit
def _scan_forward(forc, alpha, smax, betas, s0, out, n_cells, n_days, plane, consts,
                  BLOCK: tl.constexpr):
    # forc [3, T, C]: rn (W m⁻²), prec, tair (K); alpha [7, T, C]; smax [C]; betas [3, C];
    # s0 [3, C]; out [21, T, C]; plane = T·C (64-bit offsets: 21 planes can pass 2³¹);
    # consts: kernel_constants().
    rn_factor, t_zero, eps = constants(consts)
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = c < n_cells
    c = tl.where(m, c, 0)
    pl = c.to(tl.int64) * 0 + plane
    dt = out.dtype.element_ty
    bs, bg, kg, smx, swe, sm, gw = _cell_constants(betas, smax, s0, c, n_cells)
    o = c.to(tl.int64)
    for _ in range(n_days):
        rn = energy(tl.load(forc + o).to(tl.float64), rn_factor)
        pr = tl.load(forc + pl + o).to(tl.float64)
        tc = tl.load(forc + 2 * pl + o).to(tl.float64) - t_zero
        am = tl.load(alpha + o).to(tl.float64)
        aei = tl.load(alpha + pl + o).to(tl.float64)
        aes = tl.load(alpha + 2 * pl + o).to(tl.float64)
        at = tl.load(alpha + 3 * pl + o).to(tl.float64)
        ars = tl.load(alpha + 4 * pl + o).to(tl.float64)
        arg = tl.load(alpha + 5 * pl + o).to(tl.float64)
        f = tl.load(alpha + 6 * pl + o).to(tl.float64)
        (frozen, s_acc, pos_t, m_pot, melt, swe_raw, swe1, rain, ic, ei0, ei, rn1, etp1, es,
         sm1, rn2, etp2, tr, sm2, et, ef, w, wd, ratio, rmin, rsf, rs, sm3, rgf, rg, qsf, qs,
         qb, qt, gw1, tws) = day(rn, pr, tc, am, aei, aes, at, ars, arg, f, smx, bs, bg, kg,
                                 swe, sm, gw, eps)
        store_fluxes(out, pl, o, m, s_acc, melt, swe1, rain, ei, es, tr, et, ef, w, rsf, rs,
                     rgf, rg, sm3, qsf, qs, qb, qt, gw1, tws)
        swe_s, sm_s, gw_s = swe1.to(dt), sm3.to(dt), gw1.to(dt)
        # Carry the storages as stored, so the backward pass sees the same values.
        swe, sm, gw = swe_s.to(tl.float64), sm_s.to(tl.float64), gw_s.to(tl.float64)
        o += n_cells


@triton.jit
def _cot(g, slots, k: tl.constexpr, pl, o, m):
    # Cotangent of flux k: plane slots[k] of g, or 0 where that output got none.
    # (the slot is broadcast to a block before the mask: the interpreter rejects a mask
    # built from a scalar comparison)
    s = o * 0 + tl.load(slots + k)
    return tl.load(g + s * pl + o, mask=m & (s >= 0), other=0.0).to(tl.float64)


@triton.jit
def _scan_backward(forc, alpha, smax, betas, s0, out, g, slots, g_alpha, g_smax, g_betas,
                   g_s0, g_forc, n_cells, n_days, plane, consts, BLOCK: tl.constexpr,
                   WANT_FORC: tl.constexpr):
    # Reverse sweep. g [n, T, C]: the cotangents that exist; slots [21]: flux k's plane in
    # g, or -1. Writes g_alpha [7, T, C], g_smax [C], g_betas [3, C] (per cell), g_s0 [3, C]
    # and, if WANT_FORC, g_forc [2, T, C] (prec, tair).
    rn_factor, t_zero, eps = constants(consts)
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = c < n_cells
    c = tl.where(m, c, 0)
    pl = c.to(tl.int64) * 0 + plane
    dt = g_alpha.dtype.element_ty
    bs, bg, kg, smx, swe0, sm0, gw0 = _cell_constants(betas, smax, s0, c, n_cells)
    lam_swe = tl.zeros([BLOCK], tl.float64)
    lam_sm = tl.zeros([BLOCK], tl.float64)
    lam_gw = tl.zeros([BLOCK], tl.float64)
    acc_smx = tl.zeros([BLOCK], tl.float64)
    acc_bs = tl.zeros([BLOCK], tl.float64)
    acc_bg = tl.zeros([BLOCK], tl.float64)
    acc_kg = tl.zeros([BLOCK], tl.float64)
    o = pl - n_cells + c  # the last day's offsets
    for i in range(n_days):
        # start-of-day storages: the previous day's as stored, or the initial ones (day 0
        # reads its own row, unused, to stay in bounds without a mask)
        first = i == n_days - 1
        prev = tl.where(first, o, o - n_cells)
        swe = tl.where(first, swe0, tl.load(out + 2 * pl + prev).to(tl.float64))
        sm = tl.where(first, sm0, tl.load(out + 14 * pl + prev).to(tl.float64))
        gw = tl.where(first, gw0, tl.load(out + 19 * pl + prev).to(tl.float64))
        (a_am, a_aei, a_aes, a_at, a_ars, a_arg, a_f, lam_swe, lam_sm, lam_gw, d_smx, d_bs, d_bg,
         d_kg, a_pr, a_tc) = day_adjoint(
                energy(tl.load(forc + o).to(tl.float64), rn_factor),
                tl.load(forc + pl + o).to(tl.float64),
                tl.load(forc + 2 * pl + o).to(tl.float64) - t_zero,
                tl.load(alpha + o).to(tl.float64), tl.load(alpha + pl + o).to(tl.float64),
                tl.load(alpha + 2 * pl + o).to(tl.float64),
                tl.load(alpha + 3 * pl + o).to(tl.float64),
                tl.load(alpha + 4 * pl + o).to(tl.float64),
                tl.load(alpha + 5 * pl + o).to(tl.float64),
                tl.load(alpha + 6 * pl + o).to(tl.float64), smx, bs, bg, kg, swe, sm, gw, eps,
                _cot(g, slots, 0, pl, o, m), _cot(g, slots, 1, pl, o, m),
                _cot(g, slots, 2, pl, o, m), _cot(g, slots, 3, pl, o, m),
                _cot(g, slots, 4, pl, o, m), _cot(g, slots, 5, pl, o, m),
                _cot(g, slots, 6, pl, o, m), _cot(g, slots, 7, pl, o, m),
                _cot(g, slots, 8, pl, o, m), _cot(g, slots, 9, pl, o, m),
                _cot(g, slots, 10, pl, o, m), _cot(g, slots, 11, pl, o, m),
                _cot(g, slots, 12, pl, o, m), _cot(g, slots, 13, pl, o, m),
                _cot(g, slots, 14, pl, o, m), _cot(g, slots, 15, pl, o, m),
                _cot(g, slots, 16, pl, o, m), _cot(g, slots, 17, pl, o, m),
                _cot(g, slots, 18, pl, o, m), _cot(g, slots, 19, pl, o, m),
                _cot(g, slots, 20, pl, o, m), lam_swe, lam_sm, lam_gw)
        acc_smx += d_smx
        acc_bs += d_bs
        acc_bg += d_bg
        acc_kg += d_kg
        tl.store(g_alpha + o, a_am.to(dt), mask=m)
        tl.store(g_alpha + pl + o, a_aei.to(dt), mask=m)
        tl.store(g_alpha + 2 * pl + o, a_aes.to(dt), mask=m)
        tl.store(g_alpha + 3 * pl + o, a_at.to(dt), mask=m)
        tl.store(g_alpha + 4 * pl + o, a_ars.to(dt), mask=m)
        tl.store(g_alpha + 5 * pl + o, a_arg.to(dt), mask=m)
        tl.store(g_alpha + 6 * pl + o, a_f.to(dt), mask=m)
        if WANT_FORC:
            tl.store(g_forc + o, a_pr.to(dt), mask=m)
            tl.store(g_forc + pl + o, a_tc.to(dt), mask=m)
        o -= n_cells
    tl.store(g_s0 + c, lam_swe.to(dt), mask=m)
    tl.store(g_s0 + n_cells + c, lam_sm.to(dt), mask=m)
    tl.store(g_s0 + 2 * n_cells + c, lam_gw.to(dt), mask=m)
    tl.store(g_smax + c, acc_smx.to(dt), mask=m)
    tl.store(g_betas + c, acc_bs.to(dt), mask=m)
    tl.store(g_betas + n_cells + c, acc_bg.to(dt), mask=m)
    tl.store(g_betas + 2 * n_cells + c, acc_kg.to(dt), mask=m)


def _day_major(xs, dtype: torch.dtype) -> Tensor:
    """[cells, days] tensors → one contiguous [k, days, cells] tensor of ``dtype``."""
    return torch.stack([x.detach().to(dtype).t() for x in xs]).contiguous()


class TritonScan(torch.autograd.Function):
    """:class:`process_layers.fused.FusedScan`'s contract, on Triton kernels (CUDA tensors).

    Returns the 21 fluxes as [cells, days] views of one day-major buffer.
    """

    @staticmethod
    def forward(ctx, rn, prec, tair, *params):  # noqa: D102
        alphas, (sm_max, beta_snow, beta_gw, swe0, sm0, gw0, *half) = params[:7], params[7:]
        half = half[0] if half else None
        dtype = rn.dtype
        n_cells, n_days = rn.shape
        forc = _day_major((rn, prec, tair), dtype)
        alpha = _day_major(alphas, dtype)
        betas = per_cell_betas(beta_snow, beta_gw, n_cells, dtype, half)
        ctx.beta_dims = beta_dims(beta_snow, beta_gw, half)
        s0 = torch.stack([swe0.detach(), sm0.detach(), gw0.detach()]).to(dtype).contiguous()
        smax = sm_max.detach().to(dtype).contiguous()
        out = torch.empty((N_FLUX, n_days, n_cells), dtype=dtype, device=rn.device)
        block = block_cells(n_cells)
        _scan_forward[(triton.cdiv(n_cells, block),)](
            forc, alpha, smax, betas, s0, out, n_cells, n_days, n_days * n_cells,
            kernel_constants(rn.device), BLOCK=block, **NO_FMA)
        ctx.save_for_backward(forc, alpha, smax, betas, s0, out)
        ctx.set_materialize_grads(False)
        return tuple(o.t() for o in out)

    @staticmethod
    def backward(ctx, *grads):  # noqa: D102
        forc, alpha, smax, betas, s0, out = ctx.saved_tensors
        dtype = forc.dtype
        _, n_days, n_cells = forc.shape
        present = [k for k, g in enumerate(grads) if g is not None]
        slots = torch.full((N_FLUX,), -1, dtype=torch.int32)
        slots[present] = torch.arange(len(present), dtype=torch.int32)
        g = (_day_major([grads[k] for k in present], dtype) if present
             else torch.zeros((1, 1, 1), dtype=dtype, device=forc.device))
        g_alpha = torch.empty((7, n_days, n_cells), dtype=dtype, device=forc.device)
        g_smax = torch.empty(n_cells, dtype=dtype, device=forc.device)
        g_betas = torch.empty((3, n_cells), dtype=dtype, device=forc.device)
        g_s0 = torch.empty((3, n_cells), dtype=dtype, device=forc.device)
        want_forc = bool(ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        g_forc = torch.empty((2, n_days, n_cells) if want_forc else (1, 1, 1), dtype=dtype,
                             device=forc.device)
        block = block_cells(n_cells)
        _scan_backward[(triton.cdiv(n_cells, block),)](
            forc, alpha, smax, betas, s0, out, g, slots.to(forc.device), g_alpha, g_smax,
            g_betas, g_s0, g_forc, n_cells, n_days, n_days * n_cells,
            kernel_constants(forc.device), BLOCK=block, WANT_FORC=want_forc, **NO_FMA)
        g_bs, g_bg, *g_half = beta_gradients(g_betas, ctx.beta_dims)
        g_prec, g_tair = (g_forc[i].t() if ctx.needs_input_grad[1 + i] else None
                          for i in range(2))
        return (None, g_prec, g_tair, *(a.t() for a in g_alpha), g_smax, g_bs, g_bg, g_s0[0],
                g_s0[1], g_s0[2], *g_half)
