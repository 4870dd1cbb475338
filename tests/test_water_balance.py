"""Closure of the water balance and physical bounds of storages and fluxes."""

import pytest
import torch
from conftest import kinky_case, random_alpha, site_case

from process_layers import h2mv, water_balance
from process_layers.parameters import ALPHA_NAMES

TEN_YEARS = 3650
FLUXES = ("snow_acc", "snow_melt", "rainfall", "Ei", "Es", "T", "ET", "w_in", "r_soil", "r_gw",
          "q_surf", "q_base", "q_total")
FRACTIONS = ("r_soil_frac", "r_gw_frac", "q_surf_frac")


def test_closure_float64_ten_years(backend):
    forcing, alpha, static, beta = site_case(10, TEN_YEARS, seed=1)
    initial = h2mv.initial_states(10, dtype=torch.float64)
    f = h2mv.simulate(forcing, alpha, static, beta, initial, backend=backend)
    wb = water_balance(f, initial)
    assert float(wb.residual.abs().max()) < 1e-9
    # every cell moved water through every path: the test is not vacuous
    assert bool((wb.inputs > 100).all()) and bool((wb.et > 10).all())
    assert bool((wb.runoff > 1).all()) and float(f.swe.max()) > 50


def test_closure_per_period_and_nonzero_initial_states(backend):
    forcing, alpha, static, beta, states = kinky_case()
    f = h2mv.simulate(forcing, alpha, static, beta, states, backend=backend)
    # any sub-period [a, b): inputs − outputs = storage change over it
    a, b = 3, 11
    inputs = (f.rainfall + f.snow_acc)[:, a:b].sum(1)
    outputs = (f.ET + f.q_total)[:, a:b].sum(1)
    change = f.tws[:, b - 1] - f.tws[:, a - 1]
    torch.testing.assert_close(inputs - outputs, change, rtol=0, atol=1e-11)
    wb = water_balance(f, states)
    assert float(wb.residual.abs().max()) < 1e-11


def test_closure_float32(backend):
    forcing, alpha, static, beta = site_case(10, TEN_YEARS, seed=2, dtype=torch.float32)
    initial = h2mv.initial_states(10)
    f = h2mv.simulate(forcing, alpha, static, beta, initial, backend=backend)
    assert f.tws.dtype == torch.float32
    wb = water_balance(f, initial)
    # float32 rounding accumulates over 3650 days; relative to the ~10^4 mm moved, tiny
    assert float((wb.residual.abs() / wb.inputs).max()) < 1e-4


@pytest.mark.parametrize("alpha_kind", ["random", "zeros", "ones", "extreme-mix"])
def test_bounds_for_any_alpha_inside_bounds(backend, alpha_kind):
    forcing, _, static, beta = site_case(10, 2 * 365, seed=3)
    n_cells, n_days = forcing["rn"].shape
    if alpha_kind == "random":
        alpha = random_alpha(n_cells, n_days, seed=4)
    elif alpha_kind == "zeros":
        alpha = {k: torch.zeros(n_cells, n_days, dtype=torch.float64) for k in ALPHA_NAMES}
    elif alpha_kind == "ones":
        alpha = {k: torch.ones(n_cells, n_days, dtype=torch.float64) for k in ALPHA_NAMES}
        alpha["snow_melt"] = alpha["snow_melt"] * 50.0  # far beyond any pack
        alpha["Ei"] = alpha["Ei"] * 50.0
    else:
        g = torch.Generator().manual_seed(5)
        alpha = {k: (torch.rand(n_cells, n_days, generator=g) > 0.5).double()
                 for k in ALPHA_NAMES}
    for b in ({"snow": 1.0, "baseflow": 1.0}, {"snow": 0.0, "baseflow": 0.0}, beta):
        beta_t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in b.items()}
        # start from full soils and large stores as well as from empty ones
        for full in (False, True):
            states = None
            if full:
                states = {"swe": torch.full((n_cells,), 30.0, dtype=torch.float64),
                          "sm": static["sm_max"].clone(),
                          "gw": torch.full((n_cells,), 300.0, dtype=torch.float64)}
            f = h2mv.simulate(forcing, alpha, static, beta_t, states, backend=backend)
            sm_max = static["sm_max"][:, None]
            assert float(f.sm.min()) >= 0.0
            assert bool((f.sm <= sm_max * (1 + 1e-12)).all())
            assert float(f.swe.min()) >= 0.0 and float(f.gw.min()) >= 0.0
            for k in FLUXES:
                assert float(f[k].min()) >= -1e-12, k
            for k in FRACTIONS:
                assert float(f[k].min()) >= -1e-12 and float(f[k].max()) <= 1 + 1e-12, k
            torch.testing.assert_close(f.r_soil_frac + f.r_gw_frac + f.q_surf_frac,
                                       torch.ones_like(f.sm))
            # energy: evaporation never exceeds available energy
            rn_mm = (forcing["rn"] * 0.0864 / 2.45).clamp(min=0)
            assert bool((f.ET <= rn_mm + 1e-9).all())
            assert float(f.EF.min()) >= 0.0 and float(f.EF.max()) <= 1 + 1e-12
