"""Shared builders of process-layer inputs for the tests."""

from __future__ import annotations

import os
import shutil

# Without a GPU the Triton kernels run in Triton's interpreter (tests/test_triton.py). The
# choice is read when a kernel is defined, Triton's own library functions included, which
# happens when triton is first imported (by torch, lightning or us): hence here, first.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from h2mv_hybrid.sites import site_coefficients, site_forcing
from process_layers.parameters import ALPHA_NAMES


def random_alpha(n_cells: int, n_days: int, *, seed: int, dtype=torch.float64,
                 lo: float = 0.0, hi: float = 1.0) -> dict[str, torch.Tensor]:
    """α drawn uniformly inside [lo, hi] (melt and interception factors scaled up)."""
    g = torch.Generator().manual_seed(seed)
    alpha = {k: lo + (hi - lo) * torch.rand(n_cells, n_days, generator=g, dtype=dtype)
             for k in ALPHA_NAMES}
    alpha["snow_melt"] = alpha["snow_melt"] * 5.0
    alpha["Ei"] = alpha["Ei"] * 3.0
    return alpha


def site_case(n_cells: int, n_days: int, *, seed: int = 0, dtype=torch.float64):
    """Forcing from the built-in sites (all five climates, snow included) and random α."""
    forcing = site_forcing(n_cells, n_days, seed=seed, dtype=dtype)
    _, static, beta = site_coefficients(forcing, seed=seed)
    return forcing, random_alpha(n_cells, n_days, seed=seed, dtype=dtype), static, beta


def kinky_case(dtype=torch.float64):
    """A short case that visits every regime of the bucket.

    Four cells × 16 days: rainless days, frozen days with snowfall then melt, zero and
    negative net radiation, an empty soil (initial state 0) and a full soil (initial SM =
    SM_max with a cloudburst), and a cell with a large groundwater store.
    """
    n_cells, n_days = 4, 16
    day = torch.arange(n_days, dtype=dtype)
    tair_c = torch.stack([
        -5.0 + day,                      # frozen for 5 days, then melt
        10.0 + 0 * day,                  # warm
        torch.where(day % 4 == 0, -3.0, 6.0) + 0 * day,  # alternating frost
        20.0 + 0.5 * day,                # hot
    ]) + 0.37  # keep off exactly 0 °C, where snowfall is discontinuous in the forcing
    prec = torch.stack([
        torch.where(day % 3 == 0, 8.0, 0.0) + 0 * day,
        torch.where(day < 8, 0.0, 4.0) + 0 * day,    # rainless first week
        torch.where(day % 2 == 0, 12.0, 0.0) + 0 * day,
        torch.where(day == 3, 150.0, 0.5) + 0 * day,  # cloudburst on a full soil
    ])
    rn = torch.stack([
        40.0 + 5 * day,
        torch.where(day % 5 == 0, -30.0, 120.0) + 0 * day,  # negative Rn days
        torch.where(day % 7 == 0, 0.0, 80.0) + 0 * day,     # zero Rn days
        200.0 + 0 * day,
    ])
    forcing = {"rn": rn, "prec": prec, "tair": tair_c + 273.15}
    g = torch.Generator().manual_seed(7)
    # α strictly inside their bounds, away from 0 and 1, so that finite differences of
    # gradcheck do not straddle a kink.
    alpha = {k: 0.1 + 0.8 * torch.rand(n_cells, n_days, generator=g, dtype=dtype)
             for k in ALPHA_NAMES}
    alpha["snow_melt"] = alpha["snow_melt"] * 4
    alpha["Ei"] = alpha["Ei"] * 2
    static = {"sm_max": torch.tensor([60.0, 120.0, 30.0, 80.0], dtype=dtype)}
    beta = {"snow": torch.tensor(0.85, dtype=dtype), "baseflow": torch.tensor(0.07, dtype=dtype)}
    states = {
        "swe": torch.tensor([0.0, 0.0, 3.0, 0.0], dtype=dtype),
        # empty … full (1e-3 mm below SM_max, so gradcheck may perturb SM_max downwards)
        "sm": torch.tensor([0.0, 0.0, 10.0, 79.999], dtype=dtype),
        "gw": torch.tensor([0.0, 5.0, 1.0, 200.0], dtype=dtype),
    }
    return forcing, alpha, static, beta, states


@pytest.fixture(params=["loop", "fused"])
def backend(request) -> str:
    return request.param
