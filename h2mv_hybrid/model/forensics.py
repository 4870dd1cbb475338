"""Where a non-finite loss came from: output, day, cell, and the equation that produced it.

The daily outputs say where the first non-finite value appeared, but the fused kernels
compute a whole day in one call, so they cannot say which equation of the day made it.
:func:`locate` re-runs that one cell-day through the per-day bucket
(:func:`process_layers.h2mv.step`) in float64, from the same inputs (the day's forcing, α,
SM_max, β and the storages at the start of the day), and names:

- the inputs that were already non-finite (a network output, the forcing, a storage), or
- the first flux of the day, in Appendix A's order, that is non-finite although every
  input is finite: the equation (A-number) that produced it, or
- that the day is finite in float64: rounding or overflow of the storage dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from process_layers import FLUX_NAMES, h2mv
from process_layers.containers import FLUX_METADATA

#: The forcing columns of a batch, with their units.
FORCING = (("rn", "W m-2"), ("prec", "mm day-1"), ("tair", "K"))


def first_nonfinite_at(daily: Mapping[str, Tensor]) -> tuple[str, int, int] | None:
    """(output, day, cell position) of the earliest non-finite daily value, or None."""
    first = None
    for name, x in daily.items():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            days = bad.any(0).nonzero()[0, 0]
            day = int(days)
            cell = int(bad[:, day].nonzero()[0, 0])
            if first is None or day < first[1]:
                first = (name, day, cell)
    return first


def _value(x: Tensor, cell: int) -> float:
    return float(x.reshape(-1)[cell] if x.dim() else x)


def locate(out, batch: Mapping[str, Tensor], start) -> str:
    """Describe the first non-finite value of a hybrid's outputs, down to its equation.

    Args:
        out: the :class:`~h2mv_hybrid.model.networks.HybridOutput` of the batch's period.
        batch: the DataModule batch (``forcing`` with its spin-up days, ``cell_index``).
        start: the carry the period started from (the storages before its first day).
    """
    found = first_nonfinite_at(out.daily)
    if found is None:
        return "every process output is finite (the loss itself is not)"
    name, day, c = found
    where = (f"process output {name!r}, day {day} of the period, cell "
             f"{int(batch['cell_index'][c])}")
    if name not in FLUX_NAMES:
        return where
    spin = int(batch["spinup_days"])
    forcing = {k: float(batch["forcing"][c, spin + day, i]) for i, (k, _) in enumerate(FORCING)}
    alpha = {k: _value(v[:, day], c) for k, v in out.alpha.items()}
    static = {"sm_max": _value(out.sm_max, c)}
    beta = {k: _value(v, c) for k, v in out.beta.items()}
    if day > 0:
        states = {k: _value(out.daily[k][:, day - 1], c) for k in ("swe", "sm", "gw")}
    else:
        states = {k: _value(getattr(start, k), c) for k in ("swe", "sm", "gw")}
    inputs = {**{f"forcing {k}": v for k, v in forcing.items()},
              **{f"α {k} (network)": v for k, v in alpha.items()},
              "SM_max (static network)": static["sm_max"],
              **{f"β {k}": v for k, v in beta.items()},
              **{f"{k} at the start of the day": v for k, v in states.items()}}
    bad_inputs = [f"{k} = {v}" for k, v in inputs.items() if not math.isfinite(v)]
    if bad_inputs:
        return f"{where}; non-finite inputs that day: {', '.join(bad_inputs)}"
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        fluxes, _ = h2mv.step({k: t(v) for k, v in forcing.items()},
                              {k: t(v) for k, v in alpha.items()}, {"sm_max": t(static["sm_max"])},
                              {k: t(v) for k, v in beta.items()},
                              {k: t(v) for k, v in states.items()}, validate_inputs=False)
    for flux in FLUX_NAMES:
        value = float(fluxes[flux][0])
        if not math.isfinite(value):
            units, long_name, equation = FLUX_METADATA[flux]
            shown = ", ".join(f"{k} = {v:.6g}" for k, v in inputs.items())
            return (f"{where}; first non-finite in equation {equation or '?'} ({flux}: "
                    f"{long_name}) = {value} from finite inputs: {shown}")
    return (f"{where}; the same day re-run in float64 is finite: rounding or overflow of "
            f"the storage dtype ({out.daily[name].dtype})")
