"""Köppen-like climate zones from a store's temperature and precipitation climatology.

The five main Köppen–Geiger groups with the thresholds of Peel et al. (2007, Table 1),
from the monthly climatology of air temperature (°C) and precipitation (mm):

- E polar: the warmest month below 10 °C (tested first);
- B arid: annual precipitation MAP < 10 · P_th mm, with P_th = 2 · MAT (°C) when ≥ 70 %
  of the precipitation falls in winter, 2 · MAT + 28 when ≥ 70 % falls in summer, and
  2 · MAT + 14 otherwise; summer is April–September north of the equator and
  October–March south of it;
- A tropical: the coldest month at or above 18 °C;
- C temperate: the coldest month between 0 and 18 °C;
- D continental: the coldest month at or below 0 °C.

(Peel et al. set the C/D boundary at 0 °C; Köppen's original used −3 °C.)
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from process_layers.constants import ZERO_CELSIUS_IN_KELVIN

ZONES: tuple[str, ...] = ("tropical", "arid", "temperate", "continental", "polar")


def koppen_zone(t_monthly: np.ndarray, p_monthly: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Zone index (into :data:`ZONES`) of each cell from its monthly climatology.

    Args:
        t_monthly: mean air temperature of each calendar month, °C [12, cells].
        p_monthly: mean precipitation total of each calendar month, mm [12, cells].
        lat: latitude, degrees north [cells].

    Returns:
        int [cells].
    """
    t = np.asarray(t_monthly, float)
    p = np.asarray(p_monthly, float)
    mat, t_hot, t_cold = t.mean(0), t.max(0), t.min(0)
    annual = p.sum(0)
    in_summer = np.zeros_like(p, bool)
    in_summer[3:9] = True  # April–September
    in_summer = np.where(np.asarray(lat)[None, :] >= 0, in_summer, ~in_summer)
    summer = np.where(in_summer, p, 0).sum(0)
    winter = annual - summer
    share_s = np.divide(summer, annual, out=np.full_like(annual, 0.5), where=annual > 0)
    share_w = np.divide(winter, annual, out=np.full_like(annual, 0.5), where=annual > 0)
    p_th = np.where(share_w >= 0.7, 2 * mat, np.where(share_s >= 0.7, 2 * mat + 28,
                                                        2 * mat + 14))
    zone = np.where(t_cold >= 18, 0, np.where(t_cold > 0, 2, 3))
    zone = np.where(annual < 10 * p_th, 1, zone)
    return np.where(t_hot < 10, 4, zone).astype(np.int64)


def climate_zones(store: xr.Dataset) -> xr.DataArray:
    """Köppen-like zone of every cell of a store (NaN-free on modelled cells).

    Uses the store's whole period: ``tair`` (K) and ``prec`` (mm day⁻¹) are averaged by
    calendar month (precipitation as a monthly total). Returns int codes on the store's
    spatial dims (−1 off the mask), with ``flag_values`` and ``flag_meanings``.
    """
    t = (store["tair"] - ZERO_CELSIUS_IN_KELVIN).groupby("time.month").mean("time")
    p = store["prec"].groupby("time.month").mean("time") * _days_per_month()
    spatial = store["mask"].dims
    t, p = t.load(), p.load()
    lat = store["lat"]
    if spatial == ("lat", "lon"):
        lat = lat.broadcast_like(store["mask"])
    mask = store["mask"].values.astype(bool)
    codes = np.full(mask.shape, -1, np.int64)
    codes[mask] = koppen_zone(t.values[:, mask], p.values[:, mask], lat.values[mask])
    out = xr.DataArray(codes, dims=spatial, coords={d: store[d] for d in spatial
                                                    if d in store.coords}, name="zone")
    out.attrs.update(long_name="Köppen-like climate zone", flag_values=list(range(len(ZONES))),
                     flag_meanings=" ".join(ZONES))
    return out


def _days_per_month() -> xr.DataArray:
    days = np.array([31, 28.25, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    return xr.DataArray(days, dims="month", coords={"month": np.arange(1, 13)})
