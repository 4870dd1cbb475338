"""Routing of a catchment's runoff to its outlet by a gamma unit hydrograph.

The bucket's runoff leaves a cell on the day it is generated; a gauge sees it spread over
the following days. A unit hydrograph (UH) convolves the generated runoff q with a kernel
w that sums to one, so that all water arrives, late (Nash 1957, the cascade of linear
reservoirs whose response is a gamma density; in differentiable hydrology: Feng et al.
2022, WRR 58, e2022WR032404, the ``UH_gamma`` routing of δHBV):

    w_k ∝ t_k^{a−1} exp(−t_k / θ),  t_k = k + ½ (days),  k = 0 … K−1,  Σ_k w_k = 1,
    y_t = Σ_k w_k q_{t−k},

with shape a (–) and scale θ (days) per cell (mean delay ≈ a θ). The water in transit,
the routing store S_t = Σ_{j≥0} q_{t−j} (1 − Σ_{k≤j} w_k) (mm), closes the balance
exactly: S_t − S_{t−1} = q_t − y_t.

The K − 1 days of runoff before a series (its *history*) are an argument, so that a
series split in two routes exactly as the whole one.

All functions are pure and vectorized over cells: q [cells, days], history
[cells, K − 1], kernel [cells, K]; mm day⁻¹ in, mm day⁻¹ (or mm) out.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gamma_kernel(shape: Tensor, scale: Tensor, n_days: int) -> Tensor:
    """Gamma unit hydrograph [cells, n_days] that sums to one (see module doc).

    Args:
        shape: a > 0 (–) [cells].
        scale: θ > 0, days [cells].
        n_days: K, the kernel length, days (≥ 1).

    Returns:
        w [cells, K], w ≥ 0, Σ_k w_k = 1 (a softmax of the log density: no overflow for
        any a, θ, and finite gradients).
    """
    if n_days < 1:
        raise ValueError(f"n_days: expected ≥ 1, found {n_days}")
    t = torch.arange(n_days, dtype=shape.dtype, device=shape.device) + 0.5
    log_density = (shape[:, None] - 1.0) * torch.log(t) - t / scale[:, None]
    return torch.softmax(log_density, dim=1)


def _padded(q: Tensor, history: Tensor) -> Tensor:
    """History then series [cells, K − 1 + days]."""
    return torch.cat([history.to(q.dtype), q], dim=1)


def route(q: Tensor, history: Tensor, kernel: Tensor) -> Tensor:
    """Outlet runoff y_t = Σ_k w_k q_{t−k}, mm day⁻¹ [cells, days].

    Args:
        q: runoff generated on each day, mm day⁻¹ [cells, days].
        history: runoff of the K − 1 days before, oldest first [cells, K − 1].
        kernel: w [cells, K] (:func:`gamma_kernel`).
    """
    k_days, n = kernel.shape[1], q.shape[1]
    x = _padded(q, history)
    out = torch.zeros_like(q)
    for k in range(k_days):  # K shifted adds: memory of one series, not K
        out = out + kernel[:, k:k + 1] * x[:, k_days - 1 - k:k_days - 1 - k + n]
    return out


def routing_storage(q: Tensor, history: Tensor, kernel: Tensor) -> Tensor:
    """Water in transit at the end of each day, mm [cells, days].

    S_t = Σ_{j=0}^{K−2} q_{t−j} (1 − Σ_{k≤j} w_k).
    """
    k_days, n = kernel.shape[1], q.shape[1]
    x = _padded(q, history)
    remaining = 1.0 - torch.cumsum(kernel, dim=1)
    out = torch.zeros_like(q)
    for j in range(k_days - 1):
        out = out + remaining[:, j:j + 1] * x[:, k_days - 1 - j:k_days - 1 - j + n]
    return out


def initial_storage(history: Tensor, kernel: Tensor) -> Tensor:
    """Water in transit before the first day, mm [cells]: S_0 of the history alone."""
    k_days = kernel.shape[1]
    remaining = 1.0 - torch.cumsum(kernel, dim=1)
    # history[:, -1 - j] is q_{0−1−j}: the day before the series is j = 0
    out = torch.zeros_like(history[:, 0]) if k_days > 1 else kernel.new_zeros(kernel.shape[0])
    for j in range(k_days - 1):
        out = out + remaining[:, j] * history[:, k_days - 2 - j]
    return out


def next_history(q: Tensor, history: Tensor) -> Tensor:
    """The history of the series that follows ``q``: its last K − 1 days [cells, K − 1]."""
    width = history.shape[1]
    return _padded(q, history)[:, -width:] if width else history
