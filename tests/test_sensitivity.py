"""Forcing sensitivities by autodiff: by hand on an analytic model, and against central
finite differences through a real hybrid (networks included) in float64."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from h2mv_hybrid.analysis.sensitivity import FORCINGS, OUTPUTS, SEASONS, batch_sensitivity


class Analytic(torch.nn.Module):
    """q = P², ET = Rn / 2 (W m-2 as given), tws = T (K): elasticities known by hand."""

    def forward(self, batch, stage):
        f = batch["forcing"][:, int(batch["spinup_days"]):]
        rn, prec, tair = f[..., 0], f[..., 1], f[..., 2]
        return SimpleNamespace(daily={"q_total": prec ** 2, "ET": rn / 2, "tws": tair})


def test_elasticities_of_an_analytic_model_by_hand():
    days = pd.date_range("2001-01-01", periods=365)
    n = len(days)
    g = torch.Generator().manual_seed(0)
    forcing = torch.stack([torch.rand(2, n + 10, generator=g) * 100 + 10,
                           torch.rand(2, n + 10, generator=g) * 5 + 0.1,
                           torch.rand(2, n + 10, generator=g) * 20 + 270], -1).double()
    batch = {"forcing": forcing, "spinup_days": torch.tensor(10)}
    sens, mean = batch_sensitivity(Analytic(), batch, days)
    assert sens.shape == (2, len(OUTPUTS), len(SEASONS), len(FORCINGS))
    col = {x: k for k, x in enumerate(FORCINGS)}
    q, et, tws = (OUTPUTS.index(o) for o in ("q", "ET", "tws"))
    # ε_P(P²) = 2, ε_Rn(Rn/2) = 1, s_T(T) = 1 / mean(T) per kelvin, zero elsewhere
    torch.testing.assert_close(sens[:, q, :, col["prec"]], torch.full((2, 5), 2.0,
                                                                      dtype=torch.float64))
    torch.testing.assert_close(sens[:, et, :, col["rn"]], torch.ones(2, 5, dtype=torch.float64))
    torch.testing.assert_close(sens[:, tws, :, col["tair"]], 1 / mean[:, tws])
    assert float(sens[:, q, :, col["rn"]].abs().max()) == 0.0
    # seasons: the DJF mean of T is over December, January and February days only
    djf = np.isin(days.month, (12, 1, 2))
    t = forcing[:, 10:, 2].numpy()
    np.testing.assert_allclose(mean[:, tws, SEASONS.index("DJF")].numpy(),
                               t[:, djf].mean(1), rtol=1e-12)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "forcing corrections"])
def hybrid_and_batch(tmp_path_factory, request):
    """A float64 hybrid and a batch; with per-basin forcing corrections too, whose
    corrected forcing must not hide the given forcing's gradient (rn's above all)."""
    from h2mv_hybrid.constraints import Constraint
    from h2mv_hybrid.data.datamodule import H2MVDataModule
    from h2mv_hybrid.data.store import write_store
    from h2mv_hybrid.data.synth import TwinConfig, synthesize
    from h2mv_hybrid.model.module import H2MVHybrid
    from h2mv_hybrid.model.networks import HybridSettings

    path = tmp_path_factory.mktemp("sens") / "twin.zarr"
    write_store(*synthesize(TwinConfig(res=10.0, years="2001-2002", seed=3)), path)
    dm = H2MVDataModule(str(path), batch_size=20, n_folds=4, block_deg=30.0,
                        train_start="2002-01-01", train_end="2002-12-31",
                        test_start="2002-01-01", test_end="2002-12-31")
    dm.setup("fit")
    torch.manual_seed(0)
    model = H2MVHybrid(stats=dm.stats, constraints=[Constraint("q", "q_total", "monthly")],
                       network=HybridSettings(lstm_hidden=8, static_hidden=8, code_size=4,
                                              state_feedback=False, routing_days=5,
                                              basin_precip_factor=request.param,
                                              basin_temperature_offset=request.param))
    model = model.double().eval()
    data = dm.batches("train")
    pick = np.random.default_rng(7).choice(len(data), 20, replace=False)  # 20 random cells
    batch = data[np.sort(pick)]
    batch["forcing"] = batch["forcing"].double()
    batch["static"] = batch["static"].double()
    w = dm.window("train")
    days = pd.DatetimeIndex(dm.dataset.indexes["time"][w.start_day:w.end_day])
    return model, batch, days


def test_autodiff_sensitivities_match_finite_differences_through_the_hybrid(hybrid_and_batch):
    model, batch, days = hybrid_and_batch
    sens, mean = batch_sensitivity(model, batch, days)
    assert torch.isfinite(sens).all() and (mean[:, :, 0] > 0).all()
    h = 1e-5
    for k, x in enumerate(FORCINGS):
        kind = FORCINGS[x][0]
        idx = {"rn": 0, "prec": 1, "tair": 2}[x]

        def run(step, idx=idx, kind=kind):
            f = batch["forcing"].clone()
            f[..., idx] = f[..., idx] + step if kind == "shift" else f[..., idx] * (1 + step)
            with torch.no_grad():
                d = model({**batch, "forcing": f}, "predict").daily
            q = d["q_routed"]
            return torch.stack([q.mean(1), d["ET"].mean(1), d["tws"].mean(1)], 1)

        fd = (run(h) - run(-h)) / (2 * h) / run(0.0)
        torch.testing.assert_close(sens[:, :, 0, k], fd, rtol=1e-4, atol=1e-7,
                                   msg=lambda m, x=x: f"{x}: {m}")
