"""Differentiable process layers of h2mv-hybrid: pure tensor functions, one per equation.

``process_layers.h2mv`` holds the H2MV bucket of Baghirov et al. (2024, Appendix A):
``initial_states``, ``step`` and ``simulate``. The package knows nothing of networks,
files or Lightning.
"""

from process_layers import h2mv
from process_layers.balance import WaterBalance, water_balance
from process_layers.containers import (
    FLUX_METADATA,
    FLUX_NAMES,
    Alpha,
    Beta,
    Fluxes,
    Forcing,
    States,
    Static,
)

__all__ = [
    "FLUX_METADATA",
    "FLUX_NAMES",
    "Alpha",
    "Beta",
    "Fluxes",
    "Forcing",
    "States",
    "Static",
    "WaterBalance",
    "h2mv",
    "water_balance",
]
