"""Physical inconsistency of estimated soil-moisture profiles: Richards residuals above a tolerance.

Zhang et al. (2025) measure how physical an estimated profile is by the share of its
Richards-equation residuals above a tolerance. The profile of a member is the store's
observed surface layer over the estimated deeper layers (``sm_layer<k>`` of the
ensemble; a layer not estimated is taken from the store), the residual that of
:func:`process_layers.richards.richards_residual` with the pedotransfer parameters of
each cell's sand and clay. The store's own profile gives the reference: on the twin it is
not zero, since the twin's layers exchange water by a diffusion towards equal relative
saturation, not by Darcy fluxes (docs/richards.md).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from h2mv_hybrid.analysis.ensemble import predicted_cells
from process_layers import richards
from process_layers.soil_layers import ROOT_FRACTIONS


def profile_inconsistency(ens: xr.Dataset, store: xr.Dataset, tolerance: float = 1.0,
                          pedotransfer: str = "cosby_1984", bottom: str = "zero_flux",
                          sink: str = "et") -> xr.Dataset:
    """Share of residuals with |R| > ``tolerance`` per member and cell, and of the store.

    Args:
        ens: ensemble store of ``sm_layer<k>`` estimates.
        store: its input store (``sm_layers``, ``static`` with sand and clay, and
            ``et_daily`` for ``sink: et``).
        tolerance: mm day⁻¹.
        pedotransfer: ``cosby_1984`` or ``carsel_parrish_1988``.
        bottom: ``free_drainage`` or ``zero_flux``.
        sink: ``et`` (ET · root fraction of each layer) or ``none``.

    Returns:
        Dataset with ``prediction`` (member, cell) and ``observed`` (cell).
    """
    ens, cells = predicted_cells(ens, store)
    s = cells.sel(time=ens["time"])
    features = [str(f) for f in s["feature"].values]
    static = torch.as_tensor(s["static"].transpose("cell", "feature").values, dtype=torch.float64)
    soil = richards.pedotransfer(pedotransfer, static[:, features.index("sand")],
                                 static[:, features.index("clay")])
    thickness = torch.as_tensor(1000.0 * (store["depth_bottom"] - store["depth_top"]).values)
    obs = torch.as_tensor(s["sm_layers"].transpose("cell", "time", "layer").values,
                          dtype=torch.float64)
    sink_t = None
    if sink == "et":
        et = torch.as_tensor(s["et_daily"].transpose("cell", "time").values, dtype=torch.float64)
        sink_t = et[..., None] * torch.tensor(ROOT_FRACTIONS[: obs.shape[-1]], dtype=torch.float64)

    def share(theta: torch.Tensor) -> np.ndarray:
        res = richards.richards_residual(theta, thickness, soil, bottom=bottom, sink=sink_t)
        return richards.inconsistent_share(res, tolerance, dim=(1, 2)).numpy()

    pred = []
    for m in range(ens.sizes["member"]):
        theta = obs.clone()
        for k in range(1, obs.shape[-1] + 1):
            if f"sm_layer{k}" in ens:
                est = ens[f"sm_layer{k}"].isel(member=m).transpose("cell", "time").values
                theta[..., k - 1] = torch.as_tensor(est, dtype=torch.float64)
        pred.append(share(theta))
    return xr.Dataset({"prediction": (("member", "cell"), np.stack(pred)),
                       "observed": ("cell", share(obs))}, coords={"member": ens["member"]})
