"""Bad input raises ValueError naming the variable, the expected and the found."""

import pytest
import torch
from conftest import kinky_case

from process_layers import h2mv, validation


def _case():
    forcing, alpha, static, beta, states = kinky_case()
    return dict(forcing=forcing, alpha=alpha, static=static, beta=beta, states=states)


def _run(case):
    return h2mv.simulate(case["forcing"], case["alpha"], case["static"], case["beta"],
                         case["states"])


def _expect(case, *fragments):
    with pytest.raises(ValueError) as err:
        _run(case)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    return message


def test_missing_key():
    case = _case()
    del case["alpha"]["Es"]
    _expect(case, "alpha", "missing 'Es'", "expected exactly the keys snow_melt, Ei, Es")


def test_unknown_key():
    case = _case()
    case["forcing"]["wind"] = case["forcing"]["rn"]
    _expect(case, "forcing", "unknown 'wind'", "rn, prec, tair")


def test_not_a_tensor():
    case = _case()
    case["alpha"]["T"] = [[0.5]]
    _expect(case, "alpha['T']", "expected a torch.Tensor", "found list")


def test_wrong_shape_alpha():
    case = _case()
    case["alpha"]["fapar"] = case["alpha"]["fapar"][:, :-1]
    _expect(case, "alpha['fapar']", "expected shape [cells, time] = (4, 16)", "found (4, 15)")


def test_wrong_dims_forcing():
    case = _case()
    case["forcing"] = {k: v[:, 0] for k, v in case["forcing"].items()}
    _expect(case, "forcing['rn']", "expected shape [cells, time]", "found (4,)")


def test_wrong_shape_static_and_states():
    case = _case()
    case["static"]["sm_max"] = case["static"]["sm_max"][:3]
    _expect(case, "static['sm_max']", "[cells] = (4,)", "found (3,)")
    case = _case()
    case["states"]["gw"] = torch.zeros(5, dtype=torch.float64)
    _expect(case, "states['gw']", "[cells] = (4,)", "found (5,)")


def test_beta_neither_scalar_nor_one_per_cell():
    case = _case()
    n = case["static"]["sm_max"].shape[0]
    case["beta"]["baseflow"] = torch.full((n + 1,), 0.1, dtype=torch.float64)
    _expect(case, "beta['baseflow']", f"expected a scalar (global constant) or one per cell "
            f"[{n}]", f"found shape ({n + 1},)")
    case["beta"]["baseflow"] = torch.full((n,), 0.1, dtype=torch.float64)  # one per cell
    assert torch.isfinite(_run(case).q_base).all()


def test_negative_precipitation():
    case = _case()
    case["forcing"]["prec"][2, 5] = -1.0
    _expect(case, "forcing['prec']", "expected values in [0, 2000] mm day⁻¹", "min -1",
            "cell 2, day 5", "cannot be negative")


def test_temperature_in_celsius():
    case = _case()
    case["forcing"]["tair"] = case["forcing"]["tair"] - 273.15
    _expect(case, "forcing['tair']", "expected values in [170, 340] K", "found min",
            "looks like °C", "add 273.15")


def test_radiation_in_joules():
    case = _case()
    case["forcing"]["rn"] = case["forcing"]["rn"] * 86400
    _expect(case, "forcing['rn']", "W m⁻²", "found min", "J m⁻²", "divide by 86400")


def test_nan_forcing():
    case = _case()
    case["forcing"]["prec"][1, 3] = float("nan")
    _expect(case, "forcing['prec']", "expected finite values", "1 NaN/inf", "cell 1, day 3")


@pytest.mark.parametrize("name,value,bounds", [
    ("Es", 1.2, "[0, 1]"), ("fapar", -0.1, "[0, 1]"), ("r_gw", 1.5, "[0, 1]"),
    ("Ei", -0.5, "[0, inf]"), ("snow_melt", -1.0, "[0, inf]"),
])
def test_alpha_out_of_bounds(name, value, bounds):
    case = _case()
    case["alpha"][name][3, 7] = value
    _expect(case, f"alpha['{name}']", f"expected values in {bounds}", "cell 3, day 7")


def test_sm_max_not_positive():
    case = _case()
    case["static"]["sm_max"][1] = 0.0
    _expect(case, "static['sm_max']", "expected values > 0 mm", "found min 0", "cell 1")


def test_beta_out_of_bounds():
    case = _case()
    case["beta"]["snow"] = torch.tensor(1.3, dtype=torch.float64)
    _expect(case, "beta['snow']", "expected values in [0, 1]", "1.3")


def test_negative_state_and_overfull_soil():
    case = _case()
    case["states"]["swe"] = torch.tensor([0.0, -2.0, 0.0, 0.0], dtype=torch.float64)
    _expect(case, "states['swe']", "expected storages ≥ 0 mm", "found min -2", "cell 1")
    case = _case()
    case["states"]["sm"] = case["static"]["sm_max"] + 1.0
    _expect(case, "states['sm']", "≤ static['sm_max']", "found 61 mm > 60 mm", "cell 0")


def test_mixed_devices_are_rejected():
    case = _case()
    case["static"]["sm_max"] = case["static"]["sm_max"].to("meta")
    _expect(case, "static['sm_max']", "expected a tensor on cpu", "found meta")


def test_step_validates_shapes():
    case = _case()
    with pytest.raises(ValueError, match=r"forcing\['rn'\]: expected shape \[cells\]"):
        h2mv.step(case["forcing"], {k: v[:, 0] for k, v in case["alpha"].items()},
                  case["static"], case["beta"], case["states"])


def test_validation_runs_once_per_simulate_not_per_day(monkeypatch):
    calls = []
    original = validation.validate
    monkeypatch.setattr(h2mv, "validate", lambda *a, **k: calls.append(1) or original(*a, **k))
    case = _case()
    h2mv.simulate(case["forcing"], case["alpha"], case["static"], case["beta"], case["states"],
                  backend="loop")
    assert calls == [1]
