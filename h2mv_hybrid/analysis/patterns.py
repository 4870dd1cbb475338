"""Emergent patterns of a fitted model (paper §3.2), from its predicted fluxes and storages.

Ratios are of sums over ``dim`` (long-term totals), not means of daily ratios, so dry or
dark days do not dominate; a zero denominator gives NaN. Inputs are the variables of a
prediction store (``h2mv predict``): ET, T, rn (mm day⁻¹ of available energy),
rainfall + snow_acc or prec, q_total, q_base, swe, sm, gw.
"""

from __future__ import annotations

import os

import xarray as xr

from process_layers.constants import LATENT_HEAT_VAPORISATION, W_M2_TO_MJ_M2_DAY


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


#: How each pattern of :func:`emergent_patterns` is computed, stored as its ``definition``.
DEFINITIONS = {
    "evaporative_fraction": "ratio of totals over the period: sum(ET) / sum(Rn), Rn as mm "
                            "day-1 of available energy floored at 0 (a catchment store's PET). "
                            "The prediction store's daily EF is the mean of daily ratios, "
                            "which weighs dark and dry days as much as the rest",
    "runoff_coefficient": "ratio of totals over the period: sum(q_total) / sum(prec)",
    "transpiration_fraction": "ratio of totals over the period: sum(T) / sum(ET)",
    "baseflow_index": "ratio of totals over the period: sum(q_base) / sum(q_total), the "
                      "model's own split (no digital filter)",
    "sm_max": "the static module's soil water capacity",
    "tws_share": "C_rel of Getirana et al. (2017), paper eqs 13-14: sum over days of "
                 "|S - mean(S)| of the storage over the same sum for swe + sm + gw",
}


def _open(data: xr.Dataset | str | os.PathLike) -> xr.Dataset:
    if isinstance(data, xr.Dataset):
        return data
    from h2mv_hybrid.data.store import open_store

    return open_store(data)


def emergent_patterns(prediction: xr.Dataset | str | os.PathLike,
                      store: xr.Dataset | str | os.PathLike | None = None) -> xr.Dataset:
    """The emergent patterns of one prediction store, computed, in one call (paper §3.2).

    Args:
        prediction: a prediction store (``h2mv predict``) or an ensemble store (``h2mv cv``;
            the patterns are then per member), as a path or a Dataset.
        store: its input store, which holds the precipitation and the energy forcing (default:
            the ``input_store`` the prediction store records).

    Returns:
        An in-memory Dataset over the prediction's cells (and members) with
        ``evaporative_fraction``, ``runoff_coefficient``, ``transpiration_fraction``,
        ``baseflow_index``, ``sm_max`` and ``tws_share_swe|sm|gw``; each has ``units``,
        ``long_name`` and a ``definition`` (:data:`DEFINITIONS`). Cells the model did not
        predict are NaN. The period is the prediction's.
    """
    from h2mv_hybrid.data.schema import with_energy

    pred = _open(prediction)
    if store is None:
        store = pred.attrs.get("input_store")
        if not store:
            raise ValueError("store: expected the input store (the prediction records none); "
                             "pass store=")
    source = with_energy(_open(store))
    for dim in ("lat", "lon", "cell"):
        if dim in pred.dims and (dim not in source.dims or source.sizes[dim] != pred.sizes[dim]
                                 or (dim in pred.coords and not (source[dim].values
                                                                 == pred[dim].values).all())):
            raise ValueError(f"store: expected the {dim} axis of the prediction "
                             f"({pred.sizes[dim]} values), found "
                             f"{source.sizes.get(dim, 'none')} in {store}: not its input store")
    missing = pred.indexes["time"].difference(source.indexes["time"])
    if len(missing):
        raise ValueError(f"store: expected every predicted day, found {len(missing)} missing "
                         f"(first {str(missing[0])[:10]}) in {store}")
    forcing = source[["rn", "prec"]].sel(time=pred["time"])
    rn_mm = (forcing["rn"] * (W_M2_TO_MJ_M2_DAY / LATENT_HEAT_VAPORISATION)).clip(min=0)
    predicted = pred["q_total"].notnull().any("time")
    parts = {
        "evaporative_fraction": evaporative_fraction(pred["ET"], rn_mm),
        "runoff_coefficient": runoff_coefficient(pred["q_total"], forcing["prec"]),
        "transpiration_fraction": transpiration_fraction(pred["T"], pred["ET"]),
        "baseflow_index": baseflow_index(pred["q_base"], pred["q_total"]),
    }
    for name, x in parts.items():
        x.attrs["definition"] = DEFINITIONS[name]
    parts["sm_max"] = pred["sm_max"].assign_attrs(
        units="mm", long_name="SM_max, soil water capacity", definition=DEFINITIONS["sm_max"])
    shares = tws_decomposition({k: pred[k] for k in ("swe", "sm", "gw")})
    for k in shares:
        parts[f"tws_share_{k}"] = shares[k].assign_attrs(definition=DEFINITIONS["tws_share"])
    out = xr.Dataset({k: v.where(predicted).assign_attrs(v.attrs) for k, v in parts.items()})
    out.attrs.update(period=f"{str(pred['time'].values[0])[:10]} … "
                            f"{str(pred['time'].values[-1])[:10]}",
                     prediction=str(prediction) if not isinstance(prediction, xr.Dataset)
                     else pred.attrs.get("source", ""), input_store=str(store)
                     if not isinstance(store, xr.Dataset) else "")
    return out.compute()
