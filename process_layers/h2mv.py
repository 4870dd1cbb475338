"""The H2MV bucket: one day (:func:`step`) and a whole series (:func:`simulate`).

Public contract::

    from process_layers import h2mv
    states = h2mv.initial_states(n_cells)                                 # swe, sm, gw [cells], mm
    fluxes, states = h2mv.step(forcing_t, alpha_t, static, beta, states)  # one day, [cells]
    fluxes = h2mv.simulate(forcing, alpha, static, beta, states=None)     # [cells, time]

``forcing``: ``rn`` (W m⁻², daily mean), ``prec`` (mm day⁻¹), ``tair`` (K).
``alpha`` (activated, inside their bounds): ``snow_melt``, ``Ei``, ``Es``, ``T``,
``r_soil``, ``r_gw``, ``fapar``. ``static``: ``sm_max`` (mm) [cells].
``beta``: ``snow``, ``baseflow`` (scalars, or one per cell [cells]), and optionally
``baseflow_half`` (mm, per cell: nonlinear groundwater outflow, A21′). Fluxes are
:class:`Fluxes` records whose storages are end-of-day values. The order of operations is
that of Appendix A of Baghirov et al. (2024); see ``docs/process_layers.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

import process_layers.evapotranspiration as evap
import process_layers.recharge as recharge
import process_layers.runoff as runoff
import process_layers.snow as snow
import process_layers.storage as storage
from process_layers.containers import (
    FLUX_NAMES,
    Alpha,
    Beta,
    Fluxes,
    Forcing,
    States,
    Static,
)
from process_layers.parameters import ALPHA_NAMES
from process_layers.units import kelvin_to_celsius, net_radiation_mm_per_day
from process_layers.validation import to_record, validate

Backend = Literal["auto", "fused", "loop"]
BACKENDS: tuple[str, ...] = ("auto", "fused", "loop")


def initial_states(
    n_cells: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> States:
    """Empty storages (SWE, SM, GW all 0 mm), each of shape [cells]."""
    zeros = torch.zeros(n_cells, dtype=dtype, device=device)
    return States(swe=zeros, sm=zeros.clone(), gw=zeros.clone())


def day(
    rn_mm: Tensor,
    prec: Tensor,
    tair_c: Tensor,
    alpha: Alpha,
    sm_max: Tensor,
    beta: Beta,
    states: States,
) -> tuple[Fluxes, States]:
    """One day of the bucket in the units of the equations, in Appendix A's order.

    Args:
        rn_mm: available energy, mm day⁻¹ (net radiation converted and floored) [cells].
        prec: precipitation, mm day⁻¹ [cells].
        tair_c: air temperature, °C [cells].
        alpha: activated coefficients, each [cells].
        sm_max: soil water capacity, mm [cells].
        beta: global constants, 0-d (or [cells], one per cell).
        states: storages at the end of the previous day, mm [cells].

    Returns:
        The day's fluxes (mm day⁻¹), fractions (–) and end-of-day storages (mm), and the
        new states.
    """
    # A1–A3: snow
    snow_acc = snow.snow_accumulation(prec, tair_c, beta.snow)
    melt = snow.snow_melt(tair_c, alpha.snow_melt, states.swe)
    swe = snow.snow_water_equivalent(states.swe, snow_acc, melt)
    # A4–A12: rainfall, interception, soil evaporation, transpiration
    rain = evap.rainfall(prec, tair_c)
    ei = evap.interception_evaporation(rain, alpha.fapar, alpha.Ei, rn_mm)
    energy = evap.remaining_energy(rn_mm, ei)
    es = evap.soil_evaporation(
        alpha.fapar, evap.potential_evapotranspiration(energy, states.sm), alpha.Es
    )
    sm = evap.deplete_soil_moisture(states.sm, es)
    energy = evap.remaining_energy(energy, es)
    tr = evap.transpiration(alpha.fapar, evap.potential_evapotranspiration(energy, sm), alpha.T)
    sm = evap.deplete_soil_moisture(sm, tr)
    et = evap.evapotranspiration(ei, es, tr)
    ef = evap.evaporative_fraction(et, rn_mm)
    # A13–A18: water input and recharge
    w_in = recharge.water_input(rain, melt, ei)
    r_soil_frac = recharge.soil_recharge_fraction(sm_max, sm, w_in, alpha.r_soil)
    r_soil = recharge.soil_recharge(r_soil_frac, w_in)
    sm = recharge.recharge_soil_moisture(sm, r_soil)
    r_gw_frac = recharge.groundwater_recharge_fraction(r_soil_frac, alpha.r_gw)
    r_gw = recharge.groundwater_recharge(r_gw_frac, w_in)
    # A19–A23: runoff and groundwater
    q_surf_frac = runoff.surface_runoff_fraction(r_soil_frac, alpha.r_gw)
    q_surf = runoff.surface_runoff(q_surf_frac, w_in)
    q_base = runoff.baseflow(states.gw, beta.baseflow, beta.baseflow_half)
    q_total = runoff.total_runoff(q_surf, q_base)
    gw = storage.groundwater_storage(states.gw, r_gw, q_base)
    # A24
    tws = storage.terrestrial_water_storage(swe, sm, gw)
    fluxes = Fluxes(
        snow_acc=snow_acc, snow_melt=melt, swe=swe, rainfall=rain, Ei=ei, Es=es, T=tr, ET=et,
        EF=ef, w_in=w_in, r_soil_frac=r_soil_frac, r_soil=r_soil, r_gw_frac=r_gw_frac,
        r_gw=r_gw, sm=sm, q_surf_frac=q_surf_frac, q_surf=q_surf, q_base=q_base,
        q_total=q_total, gw=gw, tws=tws,
    )
    return fluxes, States(swe=swe, sm=sm, gw=gw)


def step(
    forcing_t: Mapping[str, Any],
    alpha_t: Mapping[str, Any],
    static: Mapping[str, Any],
    beta: Mapping[str, Any],
    states: Mapping[str, Any],
    *,
    validate_inputs: bool = True,
) -> tuple[Fluxes, States]:
    """Advance the bucket by one day.

    Args:
        forcing_t: ``rn`` (W m⁻²), ``prec`` (mm day⁻¹), ``tair`` (K), each [cells].
        alpha_t: activated coefficients, each [cells].
        static: ``sm_max`` (mm) [cells].
        beta: ``snow``, ``baseflow`` (0-d, or [cells] for a per-cell constant); optional
            ``baseflow_half`` (mm, [cells] or 0-d: nonlinear groundwater outflow, A21′).
        states: ``swe``, ``sm``, ``gw`` (mm) at the end of the previous day [cells].
        validate_inputs: check keys, shapes, units and bounds (see
            :func:`process_layers.validation.validate`). Callers that step through a
            sequence validate the whole sequence once and pass ``False`` here.

    Returns:
        ``(fluxes, states)``: the day's :class:`Fluxes` and the new :class:`States`.
    """
    if validate_inputs:
        f, a, s, b, st = validate(forcing_t, alpha_t, static, beta, states, series=False)
        assert st is not None
    else:
        f = to_record(forcing_t, Forcing, "forcing")
        a = to_record(alpha_t, Alpha, "alpha")
        s = to_record(static, Static, "static")
        b = to_record(beta, Beta, "beta")
        st = to_record(states, States, "states")
    return day(
        net_radiation_mm_per_day(f.rn), f.prec, kelvin_to_celsius(f.tair), a, s.sm_max, b, st
    )


def _simulate_loop(f: Forcing, a: Alpha, sm_max: Tensor, b: Beta, st: States) -> Fluxes:
    rn_mm = net_radiation_mm_per_day(f.rn)
    tair_c = kelvin_to_celsius(f.tair)
    prec = f.prec
    days = zip(
        rn_mm.unbind(1), prec.unbind(1), tair_c.unbind(1),
        *(a[k].unbind(1) for k in ALPHA_NAMES),
        strict=True,
    )
    outputs: list[Fluxes] = []
    for rn_t, prec_t, tc_t, *alpha_t in days:
        fluxes, st = day(rn_t, prec_t, tc_t, Alpha(*alpha_t), sm_max, b, st)
        outputs.append(fluxes)
    return Fluxes(**{k: torch.stack([o[k] for o in outputs], dim=1) for k in FLUX_NAMES})


def fused_kernel(device: torch.device) -> str:
    """Which compiled scan runs on ``device``: ``"numba"`` (CPU) or ``"triton"`` (CUDA)."""
    return "triton" if device.type == "cuda" else "numba"


def triton_missing() -> str | None:
    """Why the Triton kernels cannot be imported here, or None."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return ("Triton is not installed (it ships with PyTorch's CUDA builds; "
                "pip install triton)")
    return None


def _simulate_fused(f: Forcing, a: Alpha, sm_max: Tensor, b: Beta, st: States) -> Fluxes:
    if fused_kernel(a.fapar.device) == "triton":
        from process_layers.triton_scan import TritonScan as Scan
    else:
        from process_layers.fused import FusedScan as Scan

    outs = Scan.apply(
        f.rn, f.prec, f.tair, *(a[k] for k in ALPHA_NAMES), sm_max, b.snow, b.baseflow,
        st.swe, st.sm, st.gw, *(() if b.baseflow_half is None else (b.baseflow_half,)),
    )
    return Fluxes(**dict(zip(FLUX_NAMES, outs, strict=True)))


def kernel_missing(device: torch.device) -> str | None:
    """Why no fused kernel runs on ``device`` (not the CPU or CUDA, Triton absent), or None."""
    if device.type not in ("cpu", "cuda"):
        return f"tensors are on {device}; the fused kernels run on the CPU and CUDA GPUs"
    if fused_kernel(device) == "triton":
        return triton_missing()
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a core dependency
        return "numba is not installed"
    return None


def fused_available(forcing: Forcing, alpha: Alpha) -> str | None:
    """Why the fused path cannot run on these inputs, or None if it can."""
    if forcing.rn.requires_grad:
        return "rn requires a gradient; the fused adjoint treats the energy forcing as data"
    return kernel_missing(alpha.fapar.device)


def simulate(
    forcing: Mapping[str, Any],
    alpha: Mapping[str, Any],
    static: Mapping[str, Any],
    beta: Mapping[str, Any],
    states: Mapping[str, Any] | None = None,
    *,
    backend: Backend = "auto",
    validate_inputs: bool = True,
) -> Fluxes:
    """Run the bucket over a whole series.

    Args:
        forcing: ``rn`` (W m⁻²), ``prec`` (mm day⁻¹), ``tair`` (K), each [cells, time].
        alpha: activated coefficients, each [cells, time].
        static: ``sm_max`` (mm) [cells].
        beta: ``snow``, ``baseflow`` (0-d, or [cells] for a per-cell constant); optional
            ``baseflow_half`` (mm, [cells] or 0-d: nonlinear groundwater outflow, A21′).
        states: initial storages (mm) [cells]; empty buckets if None.
        backend: ``"fused"`` (compiled scan with a hand-written adjoint: numba on the CPU,
            Triton on a CUDA GPU; differentiable w.r.t. ``prec`` and ``tair`` too),
            ``"loop"`` (per-day tensor ops; any device, differentiable w.r.t. all forcing)
            or ``"auto"`` (fused where it can run, else loop).
        validate_inputs: check keys, shapes, units and bounds once before running.

    Returns:
        :class:`Fluxes` with every flux, fraction and end-of-day storage, each [cells, time],
        in the compute dtype (float64 if any parameter is float64, else float32).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, found {backend!r}")
    if validate_inputs:
        f, a, s, b, st = validate(forcing, alpha, static, beta, states, series=True)
    else:
        f = to_record(forcing, Forcing, "forcing")
        a = to_record(alpha, Alpha, "alpha")
        s = to_record(static, Static, "static")
        b = to_record(beta, Beta, "beta")
        st = None if states is None else to_record(states, States, "states")
    if st is None:
        st = initial_states(f.rn.shape[0], dtype=a.fapar.dtype, device=a.fapar.device)

    reason = fused_available(f, a)
    if backend == "fused" and reason is not None:
        raise ValueError(f"backend='fused' cannot run: {reason}; use backend='loop' or 'auto'")
    use_fused = backend == "fused" or (backend == "auto" and reason is None)

    run = _simulate_fused if use_fused else _simulate_loop
    return run(f, a, s.sm_max, b, st)
