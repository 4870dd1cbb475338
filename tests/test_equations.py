"""Each equation of Appendix A against values computed by hand."""

import math

import pytest
import torch

from process_layers import evapotranspiration as ev
from process_layers import h2mv, recharge, runoff, snow, storage
from process_layers.units import kelvin_to_celsius, net_radiation_mm_per_day

T = lambda *x: torch.tensor(x, dtype=torch.float64)  # noqa: E731


def close(a, b):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_radiation_conversion_and_floor():
    # 100 W m-2 × 0.0864 MJ m-2 day-1 per W m-2 / 2.45 MJ kg-1 = 3.526530612... mm day-1
    close(net_radiation_mm_per_day(T(100.0, 0.0, -50.0)), [8.64 / 2.45, 0.0, 0.0])
    close(kelvin_to_celsius(T(273.15, 300.0)), [0.0, 26.85])


def test_snow_a1_to_a3():
    # A1: snow only at or below 0 °C, scaled by beta_snow
    close(snow.snow_accumulation(T(10.0, 10.0, 10.0), T(-1.0, 0.0, 0.5), T(0.8)), [8.0, 8.0, 0.0])
    # A2: degree-day melt 5 °C × 2 mm/°C/day = 10, limited by SWE
    close(snow.snow_melt(T(5.0, 5.0, -3.0), T(2.0, 2.0, 2.0), T(20.0, 4.0, 20.0)), [10.0, 4.0, 0.0])
    # A3
    close(snow.snow_water_equivalent(T(20.0, 4.0), T(0.0, 0.0), T(10.0, 4.0)), [10.0, 0.0])


def test_evapotranspiration_a4_to_a12():
    close(ev.rainfall(T(5.0, 5.0), T(0.0, 0.1)), [0.0, 5.0])  # A4: 0 °C is snow
    # A5: min(min(rain, fAPAR·αEi), Rn): capacity 0.5·2 = 1
    close(ev.interception_evaporation(T(5.0, 5.0, 0.3), T(0.5, 0.5, 0.5), T(2.0, 2.0, 2.0),
                                      T(3.0, 0.4, 3.0)), [1.0, 0.4, 0.3])
    close(ev.remaining_energy(T(3.0), T(1.0)), [2.0])  # A6
    close(ev.potential_evapotranspiration(T(3.0, 3.0), T(10.0, 1.5)), [3.0, 1.5])  # A7
    close(ev.soil_evaporation(T(0.4), T(3.0), T(0.5)), [0.6 * 3.0 * 0.5])  # A8: 0.9
    close(ev.deplete_soil_moisture(T(50.0), T(0.9)), [49.1])  # A9 / A11
    close(ev.transpiration(T(0.4), T(2.1), T(0.8)), [0.4 * 2.1 * 0.8])  # A10
    close(ev.evapotranspiration(T(1.0), T(0.9), T(0.672)), [2.572])  # A12
    close(ev.evaporative_fraction(T(2.0, 1.0), T(4.0, 0.0)), [0.5, 0.0])


def test_recharge_a13_to_a18():
    close(recharge.water_input(T(5.0), T(2.0), T(1.0)), [6.0])  # A13
    # A14: deficit 10 over input 20 → 0.5, × α 0.5 = 0.25; no input → α; full soil → 0
    close(recharge.soil_recharge_fraction(T(100.0, 100.0, 100.0), T(90.0, 90.0, 100.0),
                                          T(20.0, 0.0, 5.0), T(0.5, 0.5, 0.5)),
          [0.25, 0.5, 0.0])
    # deficit larger than the input: min(1, ·) caps at 1
    close(recharge.soil_recharge_fraction(T(100.0), T(0.0), T(20.0), T(0.7)), [0.7])
    close(recharge.soil_recharge(T(0.25), T(20.0)), [5.0])  # A15
    close(recharge.recharge_soil_moisture(T(90.0), T(5.0)), [95.0])  # A16
    close(recharge.groundwater_recharge_fraction(T(0.25), T(0.4)), [0.3])  # A17
    close(recharge.groundwater_recharge(T(0.3), T(20.0)), [6.0])  # A18


def test_runoff_and_storage_a19_to_a24():
    close(runoff.surface_runoff_fraction(T(0.25), T(0.4)), [0.45])  # A19
    close(runoff.surface_runoff(T(0.45), T(20.0)), [9.0])  # A20
    close(runoff.baseflow(T(200.0), T(0.05)), [10.0])  # A21
    close(runoff.total_runoff(T(9.0), T(10.0)), [19.0])  # A22
    close(storage.groundwater_storage(T(200.0), T(6.0), T(10.0)), [196.0])  # A23
    close(storage.terrestrial_water_storage(T(1.0), T(2.0), T(3.0)), [6.0])  # A24
    # the three fractions of the water input sum to one
    rsf, a = T(0.25), T(0.4)
    close(rsf + recharge.groundwater_recharge_fraction(rsf, a)
          + runoff.surface_runoff_fraction(rsf, a), [1.0])


def test_one_day_by_hand():
    """A full step, every flux worked out by hand in Appendix A's order."""
    forcing = {"rn": T(2.45 / 0.0864 * 4.0), "prec": T(10.0), "tair": T(273.15 + 5.0)}
    alpha = {"snow_melt": T(2.0), "Ei": T(2.0), "Es": T(0.5), "T": T(0.8), "r_soil": T(0.5),
             "r_gw": T(0.4), "fapar": T(0.5)}
    static, beta = {"sm_max": T(100.0)}, {"snow": T(0.9), "baseflow": T(0.1)}
    states = {"swe": T(3.0), "sm": T(50.0), "gw": T(20.0)}
    f, s = h2mv.step(forcing, alpha, static, beta, states)
    rn = 4.0                       # mm day-1 after conversion
    melt = min(5.0 * 2.0, 3.0)     # A2: 3 (all the snow)
    ei = min(min(10.0, 0.5 * 2.0), rn)   # A5: 1
    rn1 = rn - ei                  # A6: 3
    es = 0.5 * min(rn1, 50.0) * 0.5      # A8: 0.75
    sm1 = 50.0 - es                # A9: 49.25
    rn2 = rn1 - es                 # 2.25
    tr = 0.5 * min(rn2, sm1) * 0.8       # A10: 0.9
    sm2 = sm1 - tr                 # A11: 48.35
    w = 10.0 + melt - ei           # A13: 12
    rsf = min(1.0, (100.0 - sm2) / w) * 0.5   # A14: 0.5
    rgf = (1 - rsf) * 0.4          # A17: 0.2
    qsf = (1 - rsf) * 0.6          # A19: 0.3
    qb = 20.0 * 0.1                # A21: 2
    expected = {
        "snow_acc": 0.0, "snow_melt": melt, "swe": 0.0, "rainfall": 10.0, "Ei": ei, "Es": es,
        "T": tr, "ET": ei + es + tr, "EF": (ei + es + tr) / rn, "w_in": w,
        "r_soil_frac": rsf, "r_soil": rsf * w, "r_gw_frac": rgf, "r_gw": rgf * w,
        "sm": sm2 + rsf * w, "q_surf_frac": qsf, "q_surf": qsf * w, "q_base": qb,
        "q_total": qsf * w + qb, "gw": 20.0 + rgf * w - qb,
        "tws": 0.0 + (20.0 + rgf * w - qb) + (sm2 + rsf * w),
    }
    for key, value in expected.items():
        assert math.isclose(float(f[key]), value, rel_tol=1e-12, abs_tol=1e-12), key
    assert float(s.sm) == float(f.sm) and float(s.gw) == float(f.gw)


@pytest.mark.parametrize("backend", ["loop", "fused"])
def test_groundwater_recession_closed_form(backend):
    """Without water input, GW recedes as GW0 (1 − β)^t and baseflow as β GW0 (1 − β)^(t−1)."""
    n = 400
    beta_gw = 0.04
    forcing = {"rn": torch.full((1, n), 100.0, dtype=torch.float64),
               "prec": torch.zeros(1, n, dtype=torch.float64),
               "tair": torch.full((1, n), 290.0, dtype=torch.float64)}
    alpha = {k: torch.full((1, n), 0.5, dtype=torch.float64)
             for k in ("snow_melt", "Ei", "Es", "T", "r_soil", "r_gw", "fapar")}
    states = {"swe": T(0.0), "sm": T(0.0), "gw": T(150.0)}
    f = h2mv.simulate(forcing, alpha, {"sm_max": T(100.0)}, {"snow": T(0.9), "baseflow": T(beta_gw)},
                      states, backend=backend)
    t = torch.arange(1, n + 1, dtype=torch.float64)
    torch.testing.assert_close(f.gw[0], 150.0 * (1 - beta_gw) ** t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f.q_base[0], beta_gw * 150.0 * (1 - beta_gw) ** (t - 1),
                               rtol=1e-12, atol=1e-12)
    assert float(f.q_surf.abs().max()) == 0.0


@pytest.mark.parametrize("backend", ["loop", "fused"])
def test_degree_day_melt_closed_form(backend):
    """A snow pack at constant positive temperature melts linearly at α·T until it is gone."""
    n = 30
    forcing = {"rn": torch.zeros(1, n, dtype=torch.float64),
               "prec": torch.zeros(1, n, dtype=torch.float64),
               "tair": torch.full((1, n), 273.15 + 2.5, dtype=torch.float64)}
    alpha = {k: torch.full((1, n), 0.5, dtype=torch.float64)
             for k in ("Ei", "Es", "T", "r_soil", "r_gw", "fapar")}
    alpha["snow_melt"] = torch.full((1, n), 2.0, dtype=torch.float64)   # 5 mm/day
    states = {"swe": T(42.0), "sm": T(0.0), "gw": T(0.0)}
    f = h2mv.simulate(forcing, alpha, {"sm_max": T(500.0)}, {"snow": T(0.9), "baseflow": T(0.1)},
                      states, backend=backend)
    expected = torch.clamp(42.0 - 5.0 * torch.arange(1, n + 1, dtype=torch.float64), min=0.0)
    torch.testing.assert_close(f.swe[0], expected, rtol=0, atol=1e-12)
    assert float(f.snow_melt[0, 8]) == pytest.approx(2.0)  # the last 2 mm on day 9
