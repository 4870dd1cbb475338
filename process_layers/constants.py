"""Physical and numerical constants of the process layer, each with its unit and source."""

from __future__ import annotations

#: Seconds per day divided by 1e6: converts a daily-mean flux density in W m⁻² to
#: MJ m⁻² day⁻¹ (86 400 s day⁻¹ × 1e-6 MJ J⁻¹). Unit: MJ m⁻² day⁻¹ per W m⁻².
W_M2_TO_MJ_M2_DAY: float = 0.0864

#: Latent heat of vaporisation of water near 20 °C, used to express energy as an
#: equivalent evaporated water depth (1 kg m⁻² = 1 mm). Unit: MJ kg⁻¹.
#: Source: FAO-56 (Allen et al. 1998), eq. 20 and Annex 3 (λ = 2.45 MJ kg⁻¹).
LATENT_HEAT_VAPORISATION: float = 2.45

#: Offset between the Kelvin and Celsius scales. Unit: K.
ZERO_CELSIUS_IN_KELVIN: float = 273.15

#: Air temperature at or below which precipitation falls as snow, and above which snow
#: melts (degree-day model). Unit: °C. Source: H2MV eqs A1, A2, A4 (Baghirov et al. 2024).
SNOW_TEMPERATURE_THRESHOLD: float = 0.0

#: Floor of the water input in the soil-recharge fraction, keeping the division defined
#: and differentiable when no water arrives. Unit: mm day⁻¹. Source: H2MV eq. A14 (ε = 1e-8).
RECHARGE_EPSILON: float = 1e-8
