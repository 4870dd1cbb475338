"""Emergent patterns of a fitted model (paper §3.2), from its predicted fluxes and storages.

Ratios are of sums over ``dim`` (long-term totals), not means of daily ratios, so dry or
dark days do not dominate; a zero denominator gives NaN. Inputs are the variables of a
prediction store (``h2mv predict``): ET, T, rn (mm day⁻¹ of available energy),
rainfall + snow_acc or prec, q_total, q_base, swe, sm, gw.
"""

from __future__ import annotations

import xarray as xr


def _ratio(num: xr.DataArray, den: xr.DataArray, dim: str, name: str, desc: str) -> xr.DataArray:
    n, d = num.sum(dim), den.sum(dim)
    out = (n / d.where(d != 0)).rename(name)
    out.attrs = {"units": "1", "long_name": desc}
    return out


def evaporative_fraction(et: xr.DataArray, rn: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """ET / Rn: total evapotranspiration over total available energy (both mm day⁻¹)."""
    return _ratio(et, rn, dim, "evaporative_fraction", "evaporative fraction ET/Rn")


def runoff_coefficient(q: xr.DataArray, prec: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Q / P: total runoff over total precipitation."""
    return _ratio(q, prec, dim, "runoff_coefficient", "runoff coefficient Q/P")


def transpiration_fraction(t: xr.DataArray, et: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """T / ET: the transpired share of evapotranspiration."""
    return _ratio(t, et, dim, "transpiration_fraction", "transpiration fraction T/ET")


def baseflow_index(q_base: xr.DataArray, q_total: xr.DataArray,
                   dim: str = "time") -> xr.DataArray:
    """Q_base / Q_total: the share of runoff that left through groundwater."""
    return _ratio(q_base, q_total, dim, "baseflow_index", "baseflow index Q_base/Q_total")


def tws_decomposition(storages: dict[str, xr.DataArray], dim: str = "time") -> xr.Dataset:
    """Share of each storage in TWS variability (Getirana et al. 2017; paper eqs 13–14).

    C_abs(S) = Σ_t |S_t − mean(S)| (eq. 13) and C_rel(S_i) = C_abs(S_i) / Σ_j C_abs(S_j)
    (eq. 14), for storages such as ``{"swe": …, "sm": …, "gw": …}`` (mm). The relative
    contributions lie in [0, 1] and sum to 1 wherever any storage varies.
    """
    c_abs = {k: abs(s - s.mean(dim)).sum(dim) for k, s in storages.items()}
    total = sum(c_abs.values())
    out = xr.Dataset({k: (v / total.where(total != 0)).rename(k) for k, v in c_abs.items()})
    for k in out:
        out[k].attrs = {"units": "1", "long_name": f"relative contribution of {k} to TWS "
                                                   f"variability (Getirana et al. 2017)"}
    return out
