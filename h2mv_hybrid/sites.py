"""Built-in synthetic forcing and coefficients for a handful of sites.

Small, deterministic, self-contained series for the demo, the benchmarks and the tests
(the gridded synthetic twin of the data layer is a separate, larger generator). Each site
follows one climate archetype: seasonal temperature and net radiation driven by
latitude, and precipitation with wet and dry spells whose probability follows a wet
season. All randomness comes from one ``numpy.random.Generator`` seeded by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from process_layers.constants import ZERO_CELSIUS_IN_KELVIN


@dataclass(frozen=True)
class Climate:
    """Archetype of a site's climate (annual means and seasonal amplitudes)."""

    name: str
    lat: float  # degrees north; sets the phase of the seasons
    t_mean: float  # °C
    t_amp: float  # °C, half the seasonal range
    rn_mean: float  # W m⁻²
    rn_amp: float  # W m⁻²
    p_annual: float  # mm year⁻¹
    wet_peak_doy: int  # day of year of the wettest season
    seasonality: float  # 0: rain all year, 1: rain only in the wet season
    sm_max: float  # mm, the site's soil water capacity


CLIMATES: tuple[Climate, ...] = (
    Climate("tropical-wet", 2.0, 26.0, 1.0, 140.0, 20.0, 2500.0, 100, 0.2, 400.0),
    Climate("monsoon", 22.0, 25.0, 5.0, 120.0, 40.0, 1400.0, 200, 0.9, 250.0),
    Climate("arid", 25.0, 24.0, 9.0, 110.0, 50.0, 150.0, 30, 0.5, 80.0),
    Climate("temperate", 48.0, 10.0, 9.0, 60.0, 60.0, 800.0, 330, 0.2, 180.0),
    Climate("boreal-snowy", 62.0, -2.0, 17.0, 35.0, 70.0, 550.0, 200, 0.4, 150.0),
)


def wet_spells(rng: np.random.Generator, p_wet: np.ndarray, persistence: float = 0.6) -> np.ndarray:
    """Wet-day mask with serial correlation: an AR(1) latent Gaussian thresholded per day.

    ``p_wet`` [cells, time] is the probability of a wet day; the latent process keeps the
    marginal probability but clusters wet and dry days into spells.
    """
    n_cells, n_days = p_wet.shape
    noise = rng.standard_normal((n_cells, n_days))
    latent = np.empty_like(noise)
    latent[:, 0] = noise[:, 0]
    scale = np.sqrt(1.0 - persistence**2)
    for t in range(1, n_days):
        latent[:, t] = persistence * latent[:, t - 1] + scale * noise[:, t]
    threshold = torch.special.ndtri(torch.as_tensor(np.clip(p_wet, 1e-6, 1 - 1e-6))).numpy()
    return latent < threshold


def site_climates(n_cells: int) -> list[Climate]:
    """The climate of each cell: the archetypes in turn."""
    return [CLIMATES[i % len(CLIMATES)] for i in range(n_cells)]


def site_forcing(
    n_cells: int,
    n_days: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Daily forcing for ``n_cells`` sites, starting on 1 January.

    Returns:
        ``rn`` (W m⁻², daily mean), ``prec`` (mm day⁻¹) and ``tair`` (K), each
        [cells, time].
    """
    rng = np.random.default_rng(seed)
    climates = site_climates(n_cells)
    doy = np.arange(n_days)[None, :] % 365
    col = lambda attr: np.array([getattr(c, attr) for c in climates], dtype=float)[:, None]  # noqa: E731
    north = np.sign(col("lat") + 1e-9)
    # Seasons peak in July in the north and January in the south.
    season = np.cos(2 * np.pi * (doy - 196) / 365) * north
    t_noise = rng.standard_normal((n_cells, n_days)) * 2.5
    tair_c = col("t_mean") + col("t_amp") * season + t_noise
    rn = col("rn_mean") + col("rn_amp") * season + rng.standard_normal((n_cells, n_days)) * 15
    # Cloudy (wet) days get less net radiation.
    wet_season = 0.5 * (1 + np.cos(2 * np.pi * (doy - col("wet_peak_doy")) / 365))
    p_wet = (0.45 * ((1 - col("seasonality")) + col("seasonality") * wet_season)).clip(0.01, 0.9)
    wet = wet_spells(rng, p_wet)
    amounts = rng.gamma(shape=0.8, scale=1.0, size=(n_cells, n_days))
    prec = np.where(wet, amounts, 0.0)
    # Scale each cell to its annual total.
    years = n_days / 365.0
    prec *= col("p_annual") * years / np.maximum(prec.sum(axis=1, keepdims=True), 1e-9)
    rn = np.where(wet, rn - 20.0, rn)
    to = lambda x: torch.as_tensor(x, dtype=dtype)  # noqa: E731
    return {"rn": to(rn), "prec": to(prec), "tair": to(tair_c + ZERO_CELSIUS_IN_KELVIN)}


def site_coefficients(
    forcing: dict[str, torch.Tensor], *, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Plausible hand-set coefficients for :func:`site_forcing` (not learned).

    fAPAR greens up with warmth; α_T follows fAPAR; the rest are per-site constants with
    a little seeded variation. Returns ``(alpha, static, beta)`` in the process layer's
    format.
    """
    rng = np.random.default_rng(seed + 1)
    tair_c = forcing["tair"].double() - ZERO_CELSIUS_IN_KELVIN
    dtype = forcing["tair"].dtype
    n_cells, n_days = tair_c.shape
    # Vegetation follows temperature with a ~2-week lag (running mean).
    kernel = torch.ones(1, 1, 15, dtype=torch.float64) / 15
    smooth = torch.nn.functional.conv1d(tair_c[:, None, :], kernel, padding=7)[:, 0, :n_days]
    fapar = 0.1 + 0.7 * torch.sigmoid((smooth - 5.0) / 4.0)
    per_cell = lambda lo, hi: torch.as_tensor(rng.uniform(lo, hi, (n_cells, 1)))  # noqa: E731
    ones = torch.ones(n_cells, n_days, dtype=torch.float64)
    alpha = {
        "snow_melt": per_cell(2.0, 4.0) * ones,
        "Ei": per_cell(1.0, 3.0) * ones,
        "Es": per_cell(0.2, 0.5) * ones,
        "T": (0.4 + 0.5 * fapar) * per_cell(0.8, 1.0),
        "r_soil": per_cell(0.6, 0.9) * ones,
        "r_gw": per_cell(0.3, 0.6) * ones,
        "fapar": fapar,
    }
    climates = site_climates(n_cells)
    static = {"sm_max": torch.tensor([c.sm_max for c in climates], dtype=torch.float64)}
    beta = {"snow": torch.tensor(0.9), "baseflow": torch.tensor(0.03)}
    cast = lambda d: {k: v.to(dtype) for k, v in d.items()}  # noqa: E731
    return cast(alpha), cast(static), cast(beta)
