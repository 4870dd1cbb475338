"""Typed containers for the tensors that flow through the process layer.

Each container is a frozen dataclass that is also a read-only mapping, so callers may
use ``fluxes.ET`` or ``fluxes["ET"]`` and ``dict(fluxes)``; plain dicts with the same
keys are accepted wherever a container is expected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import TypeVar

from torch import Tensor

R = TypeVar("R", bound="_Record")


class _Record(Mapping[str, Tensor]):
    """Mapping behaviour shared by the dataclass records below."""

    @classmethod
    @cache
    def field_names(cls) -> tuple[str, ...]:
        """Every key the record may hold, in declaration order."""
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    @cache
    def optional_names(cls) -> tuple[str, ...]:
        """The keys that may be left out (their field defaults to None)."""
        return tuple(f.name for f in fields(cls) if f.default is None)  # type: ignore[arg-type]

    def present_names(self) -> tuple[str, ...]:
        """The keys this record holds: every field but optional ones left at None."""
        # only an optional field can hold None: the required ones are tensors
        return tuple(k for k in self.field_names() if getattr(self, k) is not None)

    def __getitem__(self, name: str) -> Tensor:
        # per-day loops read records by key: a field lookup, not a scan of the fields
        value = getattr(self, name) if name in self.field_names() else None
        if value is None:
            raise KeyError(
                f"{type(self).__name__} has no entry {name!r}; "
                f"valid: {', '.join(self.present_names())}"
            )
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.present_names())

    def __len__(self) -> int:
        return len(self.present_names())

    def map(self: R, fn: Callable[[Tensor], Tensor]) -> R:
        """A record of the same type with ``fn`` applied to every tensor."""
        return type(self)(**{k: fn(v) for k, v in self.items()})

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{k}={tuple(v.shape) if isinstance(v, Tensor) else v}" for k, v in self.items()
        )
        return f"{type(self).__name__}({parts})"


@dataclass(frozen=True, eq=False, repr=False)
class Forcing(_Record):
    """Meteorological forcing, [cells] for one day or [cells, time] for a series.

    rn: net radiation, daily mean, W m⁻². prec: precipitation, mm day⁻¹. tair: air temperature, K.
    """

    rn: Tensor
    prec: Tensor
    tair: Tensor


@dataclass(frozen=True, eq=False, repr=False)
class Alpha(_Record):
    """Activated neural-network coefficients (bounds in :mod:`process_layers.parameters`)."""

    snow_melt: Tensor
    Ei: Tensor
    Es: Tensor
    T: Tensor
    r_soil: Tensor
    r_gw: Tensor
    fapar: Tensor


@dataclass(frozen=True, eq=False, repr=False)
class Static(_Record):
    """Spatially varying, time-constant parameters: ``sm_max`` in mm, shape [cells]."""

    sm_max: Tensor


@dataclass(frozen=True, eq=False, repr=False)
class Beta(_Record):
    """Constant parameters, 0-d (global) or [cells]: ``snow`` (–), ``baseflow`` (day⁻¹).

    ``baseflow_half`` (mm), optional: with it the groundwater outflow is nonlinear
    (:func:`process_layers.runoff.baseflow`); without it, the paper's linear A21.
    """

    snow: Tensor
    baseflow: Tensor
    baseflow_half: Tensor | None = None


@dataclass(frozen=True, eq=False, repr=False)
class States(_Record):
    """Storages in mm, [cells]: snow water equivalent, soil moisture, groundwater."""

    swe: Tensor
    sm: Tensor
    gw: Tensor


@dataclass(frozen=True, eq=False, repr=False)
class Fluxes(_Record):
    """Every flux, fraction and end-of-day storage: [cells] (one day) or [cells, time]."""

    snow_acc: Tensor
    snow_melt: Tensor
    swe: Tensor
    rainfall: Tensor
    Ei: Tensor
    Es: Tensor
    T: Tensor
    ET: Tensor
    EF: Tensor
    w_in: Tensor
    r_soil_frac: Tensor
    r_soil: Tensor
    r_gw_frac: Tensor
    r_gw: Tensor
    sm: Tensor
    q_surf_frac: Tensor
    q_surf: Tensor
    q_base: Tensor
    q_total: Tensor
    gw: Tensor
    tws: Tensor

    def final_states(self) -> States:
        """The storages at the end of the last day of a [cells, time] series."""
        return States(swe=self.swe[:, -1], sm=self.sm[:, -1], gw=self.gw[:, -1])


FLUX_NAMES: tuple[str, ...] = Fluxes.field_names()

#: Unit, long name and equation of every entry of :class:`Fluxes` (for xarray outputs and docs).
FLUX_METADATA: dict[str, tuple[str, str, str]] = {
    "snow_acc": ("mm day-1", "snow accumulation (snowfall)", "A1"),
    "snow_melt": ("mm day-1", "snow melt", "A2"),
    "swe": ("mm", "snow water equivalent", "A3"),
    "rainfall": ("mm day-1", "rainfall", "A4"),
    "Ei": ("mm day-1", "interception evaporation", "A5"),
    "Es": ("mm day-1", "soil evaporation", "A8"),
    "T": ("mm day-1", "transpiration", "A10"),
    "ET": ("mm day-1", "evapotranspiration", "A12"),
    "EF": ("1", "evaporative fraction ET / Rn of each day (a mean over days is a mean of "
                "daily ratios; analysis.emergent_patterns gives the ratio of totals)", "§2.2.1"),
    "w_in": ("mm day-1", "water input at the land surface", "A13"),
    "r_soil_frac": ("1", "soil recharge fraction", "A14"),
    "r_soil": ("mm day-1", "soil recharge", "A15"),
    "r_gw_frac": ("1", "groundwater recharge fraction", "A17"),
    "r_gw": ("mm day-1", "groundwater recharge", "A18"),
    "sm": ("mm", "soil moisture", "A9, A11, A16"),
    "q_surf_frac": ("1", "surface runoff fraction", "A19"),
    "q_surf": ("mm day-1", "surface runoff", "A20"),
    "q_base": ("mm day-1", "baseflow", "A21"),
    "q_total": ("mm day-1", "total runoff", "A22"),
    "gw": ("mm", "groundwater storage", "A23"),
    "tws": ("mm", "terrestrial water storage", "A24"),
}
assert tuple(FLUX_METADATA) == FLUX_NAMES
