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


def feedback_scan_params(g: torch.Generator, cells: int, hidden: int,
                         dtype=torch.float64) -> list[torch.Tensor]:
    """Random inputs of ``FeedbackScan`` after its forcing, in its order, for gradcheck.

    code_proj, w_x, w_head, b_head, SM_max, β_snow, β_gw (0-d), swe, sm, gw, fAPAR, h, c;
    each requires a gradient and sits inside its bounds.
    """
    def r(*shape, scale=1.0, offset=0.0):
        return (offset + scale * torch.rand(*shape, generator=g, dtype=dtype)).requires_grad_(True)

    return [
        r(cells, 4 * hidden, scale=2, offset=-1), r(4 * hidden, hidden + 7, scale=2, offset=-1),
        r(7, hidden, scale=2, offset=-1), r(7, scale=2, offset=-1), r(cells, scale=80, offset=20),
        r((), scale=0.5, offset=0.3), r((), scale=0.2, offset=0.01),
        r(cells, scale=20), r(cells, scale=20), r(cells, scale=20), r(cells),
        r(cells, hidden, scale=2, offset=-1), r(cells, hidden, scale=2, offset=-1),
    ]
