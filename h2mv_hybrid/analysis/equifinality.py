"""Equifinality across ensemble members (paper §2.4.1, eqs 10–12, after Gupta et al. 2009).

For every pair p of members, the mean squared difference of their two estimates of the
same variable splits into a phase (covariance) term 2·σ₁·σ₂·(1 − r), a bias term
(μ₁ − μ₂)² and a variance term (σ₁ − σ₂)²; each is divided by the pair's mean variance
v_p = (σ₁² + σ₂²) / 2 and averaged over the pairs. Identical members give 0; larger values
mean that the constraints leave the variable less determined.

The printed eqs 11–12 read (μ_{p,1} − μ_{p,1})² and (σ_{p,1} − σ_{p,1})², which are zero
by construction; the text defines μ_{p,1}, μ_{p,2} as the means of the first and second
estimate of the pair, so the terms are taken between the two members, as in Gupta et al.
(2009). The three terms then sum to MSE_p / v_p. Standard deviations are population ones.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import xarray as xr


def equifinality(x: xr.DataArray, dim: str = "time", member: str = "member") -> xr.Dataset:
    """Phase, bias and variance terms of eqs 10–12 over all pairs of members.

    Args:
        x: estimates of one variable with a ``member`` dimension and the dimension ``dim``
            the statistics run over (usually time on the test cells; stack cells and time
            into one dimension to compare whole space-time fields).
        dim: dimension of each estimate's series.
        member: ensemble dimension.

    Returns:
        Dataset with ``phase``, ``bias``, ``variance`` and their sum ``total``, averaged
        over the pairs, keeping every other dimension. NaN entries are ignored pairwise;
        a pair of two constant estimates (v_p = 0) gives NaN terms, left out of the mean.
    """
    for name in (member, dim):
        if name not in x.dims:
            raise ValueError(f"x: expected a {name!r} dimension, found dims {x.dims}")
    n = x.sizes[member]
    if n < 2:
        raise ValueError(f"{member}: expected at least 2 members to compare, found {n}")
    terms: dict[str, list[xr.DataArray]] = {"phase": [], "bias": [], "variance": []}
    for i, j in combinations(range(n), 2):
        a, b = x.isel({member: i}, drop=True), x.isel({member: j}, drop=True)
        both = np.isfinite(a) & np.isfinite(b)
        a, b = a.where(both), b.where(both)
        sa, sb = a.std(dim), b.std(dim)
        # |r| ≤ 1 exactly: rounding can push identical series to 1 + 1e-16, a negative phase
        r = (((a - a.mean(dim)) * (b - b.mean(dim))).mean(dim) / (sa * sb)).clip(-1, 1)
        v = (sa**2 + sb**2) / 2
        v = v.where(v > 0)  # two constant estimates: the index is undefined, not infinite
        terms["phase"].append(2 * sa * sb * (1 - r) / v)
        terms["bias"].append((a.mean(dim) - b.mean(dim)) ** 2 / v)
        terms["variance"].append((sa - sb) ** 2 / v)
    out = xr.Dataset({k: xr.concat(v, dim="pair").mean("pair") for k, v in terms.items()})
    out["total"] = out["phase"] + out["bias"] + out["variance"]
    out.attrs["pairs"] = n * (n - 1) // 2
    out.attrs["definition"] = "Baghirov et al. (2024) eqs 10-12, terms between the pair's members"
    return out
