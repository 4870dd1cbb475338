"""A layered soil column that splits the H2MV soil store into depth layers (the twin's SM profile).

H2MV (Appendix A) has one soil store SM (mm, capacity SM_max). The PHY-LSTM / PHYs-LSTM
heads (Li et al., phy-lstm-monotonic-water-balance-loss) and the multi-layer heads need
volumetric soil moisture by depth, as ERA5-Land gives it (layers 0–7, 7–28, 28–100 cm).
This module distributes the bucket's own daily fluxes over such layers, so the layers
always sum to the bucket's SM (the water balance is the bucket's, to float precision):

1. soil evaporation E_s (A8) is drawn from layer 1;
2. transpiration T (A10) is drawn from the layers by root fractions;
3. soil recharge r_soil (A15) enters layer 1, what exceeds a layer's capacity passes down;
4. water diffuses between neighbouring layers towards equal relative saturation.

Each layer k of thickness d_k (mm) holds S_k ≤ C_k = SM_max · d_k / 1000 mm (the bucket's
capacity spread over a 1 m column), and its volumetric content is
θ_k = θ_r + S_k / d_k (m³ m⁻³), so that Δθ_k · d_k is the layer's storage change in mm.
This is not an equation of the papers: it is the twin's observation model of a
layered soil, written down in docs/process_layers.md ("Soil layers"). All functions
take [cells, layers] tensors (mm) and are pure.
"""

from __future__ import annotations

import torch
from torch import Tensor

from process_layers._ops import minimum

#: Layer bounds (top, bottom) in metres: ERA5-Land soil layers 1–3.
LAYER_BOUNDS_M: tuple[tuple[float, float], ...] = ((0.0, 0.07), (0.07, 0.28), (0.28, 1.0))
#: Depth of the column that holds SM_max, mm.
COLUMN_MM: float = 1000.0
#: Share of transpiration drawn from each layer (rooting profile), –; sums to 1.
ROOT_FRACTIONS: tuple[float, ...] = (0.25, 0.45, 0.30)
#: Exchange rates between layers 1–2 and 2–3, day⁻¹ (their sum ≤ 1 keeps every layer
#: within [0, capacity]: the update is then a convex combination of saturations).
EXCHANGE_RATES: tuple[float, ...] = (0.3, 0.05)
_TINY = 1e-12


def thickness_mm(bounds: tuple[tuple[float, float], ...] = LAYER_BOUNDS_M) -> tuple[float, ...]:
    """Thickness of each layer, mm."""
    return tuple(1000.0 * (bottom - top) for top, bottom in bounds)


def capacities(sm_max: Tensor, thickness: Tensor) -> Tensor:
    """C_k = SM_max · d_k / 1000 mm: the bucket's capacity over a 1 m column.

    Args:
        sm_max: mm [cells].
        thickness: layer thicknesses d_k, mm [layers] (summing to 1000 mm).

    Returns:
        Layer capacities, mm [cells, layers].
    """
    return sm_max[:, None] * thickness[None, :] / COLUMN_MM


def extract(storage: Tensor, demand: Tensor, weights: Tensor) -> Tensor:
    """Water taken from each layer to meet ``demand`` (mm day⁻¹) [cells].

    Each layer first gives its share w_k · demand, at most what it holds; the rest of the
    demand is taken from what the layers still hold, in proportion to it. When the demand
    does not exceed the column's content (the bucket guarantees it), the takes sum to the
    demand and no layer goes negative.

    Args:
        storage: S_k, mm [cells, layers].
        demand: mm [cells].
        weights: w_k, – [layers], summing to 1.

    Returns:
        Takes, mm [cells, layers].
    """
    first = minimum(weights[None, :] * demand[:, None], storage)
    rest = (demand - first.sum(1)).clamp(min=0.0)
    left = storage - first
    total = left.sum(1, keepdim=True)
    share = torch.where(total > _TINY, left / total.clamp(min=_TINY), 0.0)
    return first + share * rest[:, None]


def fill(storage: Tensor, capacity: Tensor, inflow: Tensor) -> Tensor:
    """Water added to each layer by ``inflow`` (mm day⁻¹) [cells] entering the top.

    Each layer fills to its capacity and passes the excess down; whatever the bottom
    layer cannot hold stays in it (it only happens through rounding, since the bucket
    keeps SM ≤ SM_max).

    Returns:
        Additions, mm [cells, layers].
    """
    adds = []
    remaining = inflow
    n = storage.shape[1]
    for k in range(n):
        room = (capacity[:, k] - storage[:, k]).clamp(min=0.0)
        add = remaining if k == n - 1 else minimum(remaining, room)
        adds.append(add)
        remaining = remaining - add
    return torch.stack(adds, 1)


def exchange(storage: Tensor, capacity: Tensor, rates: Tensor) -> Tensor:
    """Downward flow between neighbouring layers towards equal relative saturation.

    F_k = κ_k · (s_k − s_{k+1}) · min(C_k, C_{k+1}), with s = S / C; positive is
    downward (drainage), negative upward (capillary rise).

    Args:
        storage: mm [cells, layers].
        capacity: mm [cells, layers].
        rates: κ_k, day⁻¹ [layers − 1].

    Returns:
        Flows between layers k and k + 1, mm day⁻¹ [cells, layers − 1].
    """
    sat = torch.where(capacity > _TINY, storage / capacity.clamp(min=_TINY), 0.0)
    smaller = torch.minimum(capacity[:, :-1], capacity[:, 1:])
    return rates[None, :] * (sat[:, :-1] - sat[:, 1:]) * smaller


def layer_day(storage: Tensor, capacity: Tensor, es: Tensor, tr: Tensor, r_soil: Tensor,
              roots: Tensor, rates: Tensor) -> Tensor:
    """One day of the layered column, in the bucket's order (A8 E_s, A10 T, A15 r_soil).

    Args:
        storage: S_k at the end of the previous day, mm [cells, layers].
        capacity: C_k, mm [cells, layers].
        es: the bucket's soil evaporation E_s, mm day⁻¹ [cells].
        tr: the bucket's transpiration T, mm day⁻¹ [cells].
        r_soil: the bucket's soil recharge, mm day⁻¹ [cells].
        roots: transpiration shares by layer, – [layers].
        rates: exchange rates, day⁻¹ [layers − 1].

    Returns:
        S_k at the end of the day, mm [cells, layers]; Σ_k S_k changes by r_soil − E_s − T.
    """
    top = torch.zeros_like(roots)
    top[0] = 1.0
    s = storage - extract(storage, es, top)
    s = s - extract(s, tr, roots)
    s = s + fill(s, capacity, r_soil)
    flow = exchange(s, capacity, rates)
    zero = torch.zeros_like(flow[:, :1])
    return s - torch.cat([flow, zero], 1) + torch.cat([zero, flow], 1)


def simulate_layers(es: Tensor, tr: Tensor, r_soil: Tensor, sm_max: Tensor,
                    initial: Tensor | None = None,
                    bounds: tuple[tuple[float, float], ...] = LAYER_BOUNDS_M,
                    roots: tuple[float, ...] = ROOT_FRACTIONS,
                    rates: tuple[float, ...] = EXCHANGE_RATES) -> Tensor:
    """Run the layered column over a series of the bucket's fluxes.

    Args:
        es: soil evaporation, mm day⁻¹ [cells, time].
        tr: transpiration, mm day⁻¹ [cells, time].
        r_soil: soil recharge, mm day⁻¹ [cells, time].
        sm_max: mm [cells].
        initial: S_k before the first day, mm [cells, layers]; empty layers if None.
        bounds: layer (top, bottom) depths, m.
        roots: transpiration shares by layer, –.
        rates: exchange rates between neighbouring layers, day⁻¹.

    Returns:
        End-of-day layer storages S_k, mm [cells, time, layers].
    """
    opts = {"dtype": es.dtype, "device": es.device}
    d = torch.tensor(thickness_mm(bounds), **opts)
    cap = capacities(sm_max.to(es.dtype), d)
    w = torch.tensor(roots, **opts)
    kappa = torch.tensor(rates, **opts)
    s = torch.zeros_like(cap) if initial is None else initial.to(es.dtype)
    out = []
    for t in range(es.shape[1]):
        s = layer_day(s, cap, es[:, t], tr[:, t], r_soil[:, t], w, kappa)
        out.append(s)
    return torch.stack(out, 1)


def uniform_layers(sm: Tensor, sm_max: Tensor,
                   bounds: tuple[tuple[float, float], ...] = LAYER_BOUNDS_M) -> Tensor:
    """Layer storages with the bucket's SM spread at one relative saturation, mm [cells, layers]."""
    d = torch.tensor(thickness_mm(bounds), dtype=sm.dtype, device=sm.device)
    return sm[:, None] * d[None, :] / COLUMN_MM


def volumetric(storage: Tensor, theta_r: Tensor,
               bounds: tuple[tuple[float, float], ...] = LAYER_BOUNDS_M) -> Tensor:
    """θ_k = θ_r + S_k / d_k, m³ m⁻³.

    Args:
        storage: S_k, mm [cells, ..., layers].
        theta_r: residual water content, m³ m⁻³ [cells].
        bounds: layer (top, bottom) depths, m.
    """
    d = torch.tensor(thickness_mm(bounds), dtype=storage.dtype, device=storage.device)
    shape = (-1,) + (1,) * (storage.dim() - 1)
    return theta_r.reshape(shape).to(storage.dtype) + storage / d
