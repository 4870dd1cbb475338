"""A small hybrid and a batch of synthetic sites, for the model tests."""

import torch

from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
from h2mv_hybrid.sites import site_forcing

#: Static features of the small hybrid.
F = 5


def site_inputs(cells=6, days=60, seed=0, dtype=torch.float64):
    """Forcing [cells, days, 3] (rn, prec, tair) of synthetic sites and random statics."""
    f = site_forcing(cells, days, seed=seed, dtype=dtype)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    return forcing, torch.randn(cells, F, generator=torch.Generator().manual_seed(seed),
                                dtype=dtype)


def small_hybrid(dtype=torch.float64, scale=3.0, **settings):
    """Static 12 → code 4, LSTM 8; weights × ``scale`` (3: more varied α and days than the
    default initialization gives)."""
    torch.manual_seed(3)
    m = HybridH2MV(F, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * F, [1.0] * F,
                   HybridSettings(static_hidden=12, code_size=4, lstm_hidden=8, **settings))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m.to(dtype)
