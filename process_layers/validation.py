"""Checks of the process layer's inputs, run once per call of ``simulate``.

Every problem raises ``ValueError`` naming the variable, what was expected and what was
found (with the position of the first offending entry), so that a caller learns how to
fix the input rather than receiving NaN water balances later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor

from process_layers.containers import Alpha, Beta, Forcing, States, Static, _Record
from process_layers.parameters import BY_NAME

R = TypeVar("R", bound=_Record)

#: Plausible ranges of the forcing in the units the layer expects. Daily-mean net
#: radiation of the land surface stays within a few hundred W m⁻²; values near 1e6 are
#: daily sums in J m⁻².
RN_RANGE_W_M2 = (-300.0, 1000.0)
TAIR_RANGE_K = (170.0, 340.0)
PREC_MAX_MM_DAY = 2000.0


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _where(mask: Tensor) -> str:
    """Position of the first True entry of ``mask`` as 'cell i' or 'cell i, day t'."""
    idx = torch.nonzero(mask)[0].tolist()
    labels = ("cell", "day")
    return ", ".join(f"{lab} {i}" for lab, i in zip(labels, idx, strict=False))


def to_record(obj: Any, cls: type[R], what: str) -> R:
    """Turn a mapping into the record ``cls``, rejecting missing and unknown keys."""
    if isinstance(obj, cls):
        return obj
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{what}: expected a mapping with keys {', '.join(cls.field_names())}, "
            f"found {type(obj).__name__}"
        )
    expected = set(cls.field_names())
    found = set(obj.keys())
    missing = [k for k in cls.field_names() if k not in found and k not in cls.optional_names()]
    unknown = sorted(found - expected, key=str)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown {', '.join(map(repr, unknown))}")
        raise ValueError(
            f"{what}: {'; '.join(parts)}; expected exactly the keys "
            f"{', '.join(cls.field_names())}"
            + (f" ({', '.join(cls.optional_names())} optional)" if cls.optional_names() else "")
        )
    return cls(**{k: obj[k] for k in cls.field_names() if k in found})


def _tensor(x: Any, what: str, dtype: torch.dtype | None = None) -> Tensor:
    if isinstance(x, Tensor):
        if not (x.is_floating_point()):
            raise ValueError(f"{what}: expected a floating-point tensor, found dtype {x.dtype}")
        return x
    if isinstance(x, (float, int)) and not isinstance(x, bool):
        return torch.tensor(float(x), dtype=dtype or torch.get_default_dtype())
    raise ValueError(f"{what}: expected a torch.Tensor, found {type(x).__name__}")


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype the physics runs in: the widest of the inputs, at least float32.

    Half and bfloat16 inputs (networks under mixed precision) are computed in float32:
    the water balance is not meaningful at 8 bits of mantissa.
    """
    dtype = torch.float32
    for t in tensors:
        if t.dtype == torch.float64:
            dtype = torch.float64
    return dtype


def _check_shape(x: Tensor, shape: tuple[int, ...], what: str, dims: str) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f"{what}: expected shape {dims} = {shape}, found {tuple(x.shape)}")


def _locate_nonfinite(x: Tensor, what: str) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(
            f"{what}: expected finite values, found {int(bad.sum())} NaN/inf "
            f"(first at {_where(bad)})"
        )


def _extremes(x: Tensor, what: str) -> tuple[float, float]:
    """Min and max in one pass; NaN/inf are reported with their position.

    One ``aminmax`` per tensor keeps the checks to a single read of the data (NaN
    propagates into both results); the position of a bad entry is searched only on failure.
    """
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        _locate_nonfinite(x, what)
    return lo, hi


def _check_range(x: Tensor, lo: float, hi: float, what: str, unit: str, hint: str = "",
                 extremes: tuple[float, float] | None = None) -> None:
    xmin, xmax = extremes if extremes is not None else _extremes(x, what)
    if xmin < lo or xmax > hi:
        bad = (x < lo) | (x > hi)
        raise ValueError(
            f"{what}: expected values in [{_fmt(lo)}, {_fmt(hi)}] {unit}, found min "
            f"{_fmt(xmin)} and max {_fmt(xmax)} (first outside at {_where(bad)}){hint}"
        )


def check_forcing(forcing: Forcing, what: str = "forcing") -> None:
    """Check values and units of the forcing (shapes are checked by the caller)."""
    prec = _extremes(forcing.prec, f"{what}['prec']")
    hint = " (precipitation cannot be negative)" if prec[0] < 0 else ""
    _check_range(forcing.prec, 0.0, PREC_MAX_MM_DAY, f"{what}['prec']", "mm day⁻¹", hint, prec)
    tair = _extremes(forcing.tair, f"{what}['tair']")
    hint = ""
    if tair[1] < 100:
        hint = " — this looks like °C: the process layer expects K (add 273.15)"
    _check_range(forcing.tair, *TAIR_RANGE_K, f"{what}['tair']", "K", hint, tair)
    rn = _extremes(forcing.rn, f"{what}['rn']")
    hint = ""
    if rn[1] > 1e5:
        hint = " — this looks like a daily sum in J m⁻²: divide by 86400 for W m⁻²"
    elif rn[1] > RN_RANGE_W_M2[1]:
        hint = " — daily-mean net radiation above 1000 W m⁻² is not physical"
    _check_range(forcing.rn, *RN_RANGE_W_M2, f"{what}['rn']", "W m⁻² (daily mean)", hint, rn)


def check_bounds(record: _Record, group: str, what: str) -> None:
    """Check each coefficient of a record against its bounds in the parameter table."""
    for name, x in record.items():
        coef = BY_NAME[(group, name)]  # type: ignore[index]
        xmin, xmax = _extremes(x, f"{what}[{name!r}]")
        if group == "static":
            # A capacity of zero leaves the soil without a state: strictly positive.
            if xmin <= coef.lower:
                raise ValueError(
                    f"{what}[{name!r}]: expected values > {_fmt(coef.lower)} {coef.unit}, "
                    f"found min {_fmt(xmin)} (first at {_where(x <= coef.lower)})"
                )
        else:
            _check_range(x, coef.lower, coef.upper, f"{what}[{name!r}]", coef.unit,
                         extremes=(xmin, xmax))


def validate(
    forcing: Mapping[str, Any],
    alpha: Mapping[str, Any],
    static: Mapping[str, Any],
    beta: Mapping[str, Any],
    states: Mapping[str, Any] | None,
    *,
    series: bool,
) -> tuple[Forcing, Alpha, Static, Beta, States | None]:
    """Check the inputs of ``step`` (series=False, [cells]) or ``simulate`` ([cells, time]).

    Returns the inputs as records, cast to one compute dtype (see :func:`compute_dtype`).
    Raises ``ValueError`` for missing or unknown keys, non-tensors, wrong shapes, mixed
    devices, non-finite values, values out of physical range or coefficient bounds, and
    initial storages that are negative or exceed SM_max.
    """
    f = to_record(forcing, Forcing, "forcing")
    a = to_record(alpha, Alpha, "alpha")
    s = to_record(static, Static, "static")
    b = to_record(beta, Beta, "beta")
    st = None if states is None else to_record(states, States, "states")

    f = Forcing(**{k: _tensor(v, f"forcing[{k!r}]") for k, v in f.items()})
    a = Alpha(**{k: _tensor(v, f"alpha[{k!r}]") for k, v in a.items()})
    s = Static(**{k: _tensor(v, f"static[{k!r}]") for k, v in s.items()})
    b = Beta(**{k: _tensor(v, f"beta[{k!r}]") for k, v in b.items()})
    if st is not None:
        st = States(**{k: _tensor(v, f"states[{k!r}]") for k, v in st.items()})

    device = a.fapar.device
    groups = {"forcing": f, "alpha": a, "static": s, "beta": b}
    if st is not None:
        groups["states"] = st
    for gname, rec in groups.items():
        for k, v in rec.items():
            if gname == "beta" and v.device != device and v.numel() == 1:
                continue  # python floats become CPU scalars; moved below
            if v.device != device:
                raise ValueError(
                    f"{gname}[{k!r}]: expected a tensor on {device} (the device of "
                    f"alpha['fapar']), found {v.device}"
                )

    ref = f.rn
    if series:
        if ref.dim() != 2:
            raise ValueError(
                f"forcing['rn']: expected shape [cells, time], found {tuple(ref.shape)}"
            )
        dims = "[cells, time]"
    else:
        if ref.dim() != 1:
            raise ValueError(f"forcing['rn']: expected shape [cells], found {tuple(ref.shape)}")
        dims = "[cells]"
    shape = tuple(ref.shape)
    n_cells = shape[0]
    for k, v in f.items():
        _check_shape(v, shape, f"forcing[{k!r}]", dims)
    for k, v in a.items():
        _check_shape(v, shape, f"alpha[{k!r}]", dims)
    _check_shape(s.sm_max, (n_cells,), "static['sm_max']", "[cells]")
    for k, v in b.items():
        if v.numel() != 1 and tuple(v.shape) != (n_cells,):
            raise ValueError(
                f"beta[{k!r}]: expected a scalar (global constant) or one per cell "
                f"[{n_cells}], found shape {tuple(v.shape)}"
            )
    if st is not None:
        for k, v in st.items():
            _check_shape(v, (n_cells,), f"states[{k!r}]", "[cells]")

    dtype = compute_dtype(*a.values(), *s.values(), *b.values())
    f = f.map(lambda x: x.to(dtype))
    a = a.map(lambda x: x.to(dtype))
    s = s.map(lambda x: x.to(dtype))
    b = b.map(lambda x: x.to(device=device, dtype=dtype).reshape(() if x.numel() == 1 else -1))
    if st is not None:
        st = st.map(lambda x: x.to(dtype))

    with torch.no_grad():
        check_forcing(f)
        check_bounds(a, "alpha", "alpha")
        check_bounds(s, "static", "static")
        check_bounds(b, "beta", "beta")
        if st is not None:
            for k, v in st.items():
                if _extremes(v, f"states[{k!r}]")[0] < 0:
                    raise ValueError(
                        f"states[{k!r}]: expected storages ≥ 0 mm, found min "
                        f"{_fmt(float(v.min()))} (first at {_where(v < 0)})"
                    )
            over = st.sm > s.sm_max
            if bool(over.any()):
                i = int(torch.nonzero(over)[0])
                raise ValueError(
                    f"states['sm']: expected soil moisture ≤ static['sm_max'], found "
                    f"{_fmt(float(st.sm[i]))} mm > {_fmt(float(s.sm_max[i]))} mm at cell {i}"
                )
    return f, a, s, b, st
