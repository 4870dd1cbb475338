"""Potential evapotranspiration (Oudin et al. 2005) and net radiation (FAO-56).

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

Where a data set has incoming shortwave radiation, temperature extremes and vapour pressure
(Daymet), :func:`fao56_net_radiation` gives the net radiation the H2MV bucket is written
for (Allen et al. 1998, FAO-56, eqs. 37–40).
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


#: Stefan–Boltzmann constant as FAO-56 writes it, MJ K⁻⁴ m⁻² day⁻¹.
STEFAN_BOLTZMANN_DAY: float = 4.903e-9
#: FAO-56's albedo of the grass reference surface (eq. 38).
REFERENCE_ALBEDO: float = 0.23


def fao56_net_radiation(rs, tmax_c, tmin_c, ea_kpa, lat_deg, day_of_year, elevation_m=0.0,
                        albedo=REFERENCE_ALBEDO):
    """Daily net radiation Rn, MJ m⁻² day⁻¹ (FAO-56, Allen et al. 1998, eqs. 37–40).

    Rso = (0.75 + 2·10⁻⁵ z) Ra (eq. 37), Rns = (1 − a) Rs (eq. 38),
    Rnl = σ (T_max,K⁴ + T_min,K⁴) / 2 · (0.34 − 0.14 √e_a) · (1.35 Rs / Rso − 0.35) (eq. 39),
    Rn = Rns − Rnl (eq. 40), with Ra from :func:`extraterrestrial_radiation`.

    Args:
        rs: incoming shortwave radiation, MJ m⁻² day⁻¹ (a daily sum).
        tmax_c: daily maximum air temperature, °C.
        tmin_c: daily minimum air temperature, °C.
        ea_kpa: actual vapour pressure, kPa.
        lat_deg: latitude, degrees north.
        day_of_year: day of the year (1 … 366).
        elevation_m: station or basin elevation z, m.
        albedo: a, the surface's shortwave albedo (FAO-56's grass reference: 0.23).

    Rs / Rso is capped at 1 (eq. 39's bound: no sky is clearer than clear); where Rso = 0
    (polar night) it is taken as 1. Rn may be negative (a clear winter night's longwave
    loss exceeding the day's shortwave gain).
    """
    ra = extraterrestrial_radiation(lat_deg, day_of_year)
    rso = (0.75 + 2e-5 * np.asarray(elevation_m, dtype=float)) * ra
    ratio = np.minimum(np.divide(rs, rso, out=np.ones(np.broadcast(rs, rso).shape),
                                 where=rso > 0), 1.0)
    t4 = ((np.asarray(tmax_c) + 273.16) ** 4 + (np.asarray(tmin_c) + 273.16) ** 4) / 2.0
    rnl = STEFAN_BOLTZMANN_DAY * t4 * (0.34 - 0.14 * np.sqrt(ea_kpa)) * (1.35 * ratio - 0.35)
    return (1.0 - albedo) * rs - rnl
