"""Potential evapotranspiration from temperature and latitude (Oudin et al. 2005).

The bucket's energy limit is available energy in mm day⁻¹. Where a data set has no net
radiation, potential evapotranspiration stands in for it (``pet`` in the store schema,
docs/data.md "Energy forcing"); where only air temperature is known, Oudin's formula
gives PET from temperature and the extraterrestrial radiation of the day and latitude.

Oudin et al. (2005, J. Hydrol. 303, 290–306, eq. 3, their best model for rainfall–runoff
modelling across 308 catchments):

    PE = Re / (λ ρ) · (Ta + 5) / 100   if Ta + 5 > 0, else 0,

with Re the extraterrestrial radiation (MJ m⁻² day⁻¹), λ = 2.45 MJ kg⁻¹, ρ = 1000 kg m⁻³
and Ta the daily mean air temperature (°C); PE in m day⁻¹, here in mm day⁻¹. Re follows
FAO-56 (Allen et al. 1998, eqs. 21–25). Functions take NumPy arrays (or xarray objects)
that broadcast against each other and return the same.
"""

from __future__ import annotations

import numpy as np

from process_layers.constants import LATENT_HEAT_VAPORISATION

#: FAO-56 solar constant, MJ m⁻² min⁻¹.
SOLAR_CONSTANT: float = 0.0820


def extraterrestrial_radiation(lat_deg, day_of_year):
    """Daily extraterrestrial radiation Re, MJ m⁻² day⁻¹ (FAO-56 eqs. 21–25).

    Args:
        lat_deg: latitude, degrees north (−90 … 90).
        day_of_year: day of the year J (1 … 366).

    Polar night gives 0 and polar day the full 24-hour sum (the sunset hour angle ω_s is
    clipped to [0, π]).
    """
    phi = np.deg2rad(lat_deg)
    j = np.asarray(day_of_year, dtype=float) if not hasattr(day_of_year, "dims") \
        else day_of_year.astype(float)
    dr = 1.0 + 0.033 * np.cos(2.0 * np.pi * j / 365.0)  # eq. 23
    delta = 0.409 * np.sin(2.0 * np.pi * j / 365.0 - 1.39)  # eq. 24
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1.0, 1.0))  # eq. 25
    ra = (24.0 * 60.0 / np.pi) * SOLAR_CONSTANT * dr * (
        ws * np.sin(phi) * np.sin(delta) + np.cos(phi) * np.cos(delta) * np.sin(ws))  # eq. 21
    return np.maximum(ra, 0.0)


def oudin_pet(tair_c, lat_deg, day_of_year):
    """Potential evapotranspiration, mm day⁻¹ (Oudin et al. 2005, eq. 3).

    Args:
        tair_c: daily mean air temperature, °C.
        lat_deg: latitude, degrees north.
        day_of_year: day of the year (1 … 366).

    Zero where Ta ≤ −5 °C; never negative.
    """
    re = extraterrestrial_radiation(lat_deg, day_of_year)
    # Re / (λ ρ) is m day⁻¹ of water; × 1000 mm m⁻¹ cancels ρ = 1000 kg m⁻³
    return np.maximum(re / LATENT_HEAT_VAPORISATION * (tair_c + 5.0) / 100.0, 0.0)
