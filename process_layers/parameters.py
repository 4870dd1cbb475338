"""The table of every learned coefficient of the H2MV bucket: name, symbol, bounds, activation.

This is the single place where bounds live. The networks' raw outputs are mapped into
these bounds by the activation named here (``h2mv_hybrid`` applies it), and
:mod:`process_layers.validation` rejects values outside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Group = Literal["alpha", "static", "beta"]
Activation = Literal["softplus", "sigmoid"]


@dataclass(frozen=True)
class Coefficient:
    """One learned coefficient of the process layer.

    ``lower`` and ``upper`` are the closed bounds accepted by the physics; the paper
    states open bounds (e.g. 0 < α < 1), which the activations reach only in the limit,
    but float32 sigmoids saturate to exactly 0 or 1, so the physics accepts the closure.
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
                "mm", "A14", "maximum plant-available soil water storage"),
    Coefficient("snow", "beta", "β_snow", 0.0, 1.0, "sigmoid",
                "–", "A1", "global snowfall correction (precipitation over-correction)"),
    Coefficient("baseflow", "beta", "β_gw", 0.0, 1.0, "sigmoid",
                "day⁻¹", "A21", "global baseflow recession constant"),
)

BY_NAME: dict[tuple[Group, str], Coefficient] = {(c.group, c.name): c for c in COEFFICIENTS}


def names(group: Group) -> tuple[str, ...]:
    """The coefficient names of one group, in table order."""
    return tuple(c.name for c in COEFFICIENTS if c.group == group)


ALPHA_NAMES = names("alpha")
STATIC_NAMES = names("static")
BETA_NAMES = names("beta")
