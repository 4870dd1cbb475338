"""The table of every learned coefficient of the H2MV bucket: name, symbol, bounds, activation.

This is the single place where bounds live. The networks' raw outputs are mapped into
these bounds by :meth:`Coefficient.activate` (value = floor + scale · activation(raw),
with the activation, floor and scale named here), and :mod:`process_layers.validation`
rejects values outside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Group = Literal["alpha", "static", "beta", "observation", "routing", "forcing", "exchange"]
Activation = Literal["softplus", "sigmoid"]


@dataclass(frozen=True)
class Coefficient:
    """One learned coefficient of the process layer.

    ``lower`` and ``upper`` are the closed bounds accepted by the physics; the paper
    states open bounds (e.g. 0 < α < 1), which the activations reach only in the limit,
    but float32 sigmoids saturate to exactly 0 or 1, so the physics accepts the closure.

    ``floor`` and ``scale`` map the activation into the coefficient's range and unit
    (value = floor + scale · activation(raw)); they are the network's defaults, which a
    model may override (SM_max's floor and scale are settings of the hybrid).
    """

    name: str
    group: Group
    symbol: str
    lower: float
    upper: float
    activation: Activation
    unit: str
    equations: str
    description: str
    floor: float = 0.0
    scale: float = 1.0

    def activate(self, raw: Tensor, floor: float | None = None, scale: float | None = None
                 ) -> Tensor:
        """Raw network output (any shape) → the coefficient, floor + scale · activation(raw).

        ``floor`` and ``scale`` default to the table's.
        """
        floor = self.floor if floor is None else floor
        scale = self.scale if scale is None else scale
        act = F.softplus(raw) if self.activation == "softplus" else torch.sigmoid(raw)
        if floor == 0.0 and scale == 1.0:
            return act  # the α: no extra ops in the per-day loop
        return floor + scale * act

    def inverse(self, value: float) -> float:
        """The raw output whose activation is ``value`` (table floor and scale)."""
        x = (value - self.floor) / self.scale
        if self.activation == "sigmoid":
            if not 0 < x < 1:
                raise ValueError(f"{self.name}: expected a value in ({self.floor}, "
                                 f"{self.floor + self.scale}), found {value}")
            return math.log(x / (1 - x))
        if x <= 0:
            raise ValueError(f"{self.name}: expected a value above {self.floor}, found {value}")
        return x + math.log(-math.expm1(-x))  # softplus⁻¹


COEFFICIENTS: tuple[Coefficient, ...] = (
    Coefficient("snow_melt", "alpha", "α_smelt", 0.0, math.inf, "softplus",
                "mm °C⁻¹ day⁻¹", "A2", "degree-day snow-melt factor"),
    Coefficient("Ei", "alpha", "α_Ei", 0.0, math.inf, "softplus",
                "mm day⁻¹", "A5 (eq. 2)", "scales fAPAR to an interception storage capacity"),
    Coefficient("Es", "alpha", "α_Es", 0.0, 1.0, "sigmoid",
                "–", "A8 (eq. 3)", "soil-evaporation conductance ('stress')"),
    Coefficient("T", "alpha", "α_T", 0.0, 1.0, "sigmoid",
                "–", "A10 (eq. 4)", "transpiration conductance ('stress')"),
    Coefficient("r_soil", "alpha", "α_rsoil", 0.0, 1.0, "sigmoid",
                "–", "A14 (eq. 6)", "scales the soil-recharge fraction"),
    Coefficient("r_gw", "alpha", "α_rgw", 0.0, 1.0, "sigmoid",
                "–", "A17, A19 (eqs 7–8)", "splits non-infiltrated water into recharge and runoff"),
    Coefficient("fapar", "alpha", "fAPAR", 0.0, 1.0, "sigmoid",
                "–", "A5, A8, A10", "fraction of absorbed photosynthetically active radiation"),
    Coefficient("sm_max", "static", "SM_max", 0.0, math.inf, "softplus",
                "mm", "A14", "maximum plant-available soil water storage",
                floor=10.0, scale=100.0),
    Coefficient("snow", "beta", "β_snow", 0.0, 1.0, "sigmoid",
                "–", "A1", "global snowfall correction (precipitation over-correction)"),
    Coefficient("baseflow", "beta", "β_gw", 0.0, 1.0, "sigmoid",
                "day⁻¹", "A21", "global baseflow recession constant"),
    # Optional (HybridSettings.nonlinear_baseflow): the groundwater storage at which the
    # outflow rate is half of β_gw, per cell from the static code (runoff.baseflow).
    Coefficient("baseflow_half", "beta", "K_gw", 0.5, 1000.0, "sigmoid",
                "mm", "A21′ (runoff.baseflow)", "groundwater storage at which the outflow "
                "rate is half of β_gw (nonlinear groundwater outflow)",
                floor=0.5, scale=999.5),
    # Observation operators: not in the bucket, they map its states to what is observed.
    Coefficient("snow_cover_scale", "observation", "k_SCA", 0.0, math.inf, "softplus",
                "mm", "snow.snow_covered_fraction",
                "SWE at which 63 % of a basin is snow-covered", floor=1.0, scale=20.0),
    # Routing to a catchment's outlet (process_layers.routing), per cell from the static code.
    Coefficient("route_shape", "routing", "a_UH", 0.5, 6.0, "sigmoid",
                "–", "routing.gamma_kernel", "shape of the gamma unit hydrograph",
                floor=0.5, scale=5.5),
    Coefficient("route_scale", "routing", "θ_UH", 0.2, 10.0, "sigmoid",
                "day", "routing.gamma_kernel", "scale of the gamma unit hydrograph "
                "(mean delay ≈ a θ)", floor=0.2, scale=9.8),
    # Optional (HybridSettings.basin_gw_export): the share of the groundwater outflow that
    # leaves the basin instead of reaching its river, per cell from the static code.
    Coefficient("gw_export", "exchange", "f_ex", 0.0, 0.95, "sigmoid",
                "–", "runoff.groundwater_export", "share of the groundwater outflow that "
                "leaves the basin (intercatchment groundwater flow)", floor=0.0, scale=0.95),
    # Per-basin corrections of the forcing before the bucket reads it, from the static
    # code. Conceptual models calibrate both (HBV's precipitation correction and threshold
    # temperature TT, Bergström 1995; CemaNeige shifts P and T over elevation bands),
    # because a basin-mean precipitation and temperature misstate what falls on the basin
    # (gauge under-catch) and where it falls as snow (elevation).
    Coefficient("precip_factor", "forcing", "c_P", 0.5, 2.0, "sigmoid",
                "–", "A1, A4 (their prec)", "per-basin precipitation correction factor",
                floor=0.5, scale=1.5),
    Coefficient("temperature_offset", "forcing", "δ_T", -4.0, 4.0, "sigmoid",
                "°C", "A1, A2, A4 (their T_air)", "per-basin air-temperature offset: "
                "moves the 0 °C rain/snow and melt threshold", floor=-4.0, scale=8.0),
    # With elevation bands (HybridSettings.elevation_bands): the spread of the air
    # temperature over a basin's equal-area bands, as HBV's and CemaNeige's elevation
    # zones shift it with a lapse rate; 6.5 °C km⁻¹ over a basin whose elevation has a
    # standard deviation of 300 m gives 2 °C.
    Coefficient("temperature_spread", "forcing", "σ_T", 0.0, 6.0, "sigmoid",
                "°C", "A1, A2, A4 (their T_air, per band)", "per-basin standard deviation "
                "of the air temperature over its elevation bands", floor=0.0, scale=6.0),
)

BY_NAME: dict[tuple[Group, str], Coefficient] = {(c.group, c.name): c for c in COEFFICIENTS}


def names(group: Group) -> tuple[str, ...]:
    """The coefficient names of one group, in table order."""
    return tuple(c.name for c in COEFFICIENTS if c.group == group)


ALPHA_NAMES = names("alpha")
STATIC_NAMES = names("static")
BETA_NAMES = names("beta")


def activate(group: Group, raw: Tensor) -> dict[str, Tensor]:
    """Raw outputs [..., n] in the table order of ``group`` → each coefficient by name."""
    return {name: BY_NAME[(group, name)].activate(raw[..., i])
            for i, name in enumerate(names(group))}
