"""The layered Richards equation: pedotransfer, closures and residual by hand, gradients."""

import math

import mpmath
import pytest
import torch

from process_layers import richards as r

F64 = torch.float64
T = lambda *values: torch.tensor(values, dtype=F64)  # noqa: E731


def bc(theta_r, theta_s, psi_s, b, k_s):
    """Brooks–Corey soils, one cell per list entry."""
    return r.SoilHydraulics(theta_r=T(*theta_r), theta_s=T(*theta_s), k_s=T(*k_s),
                            closure="brooks_corey", psi_s=T(*psi_s), b=T(*b))


def vg(theta_r, theta_s, alpha, n, k_s):
    """Van Genuchten soils, one cell per list entry."""
    return r.SoilHydraulics(theta_r=T(*theta_r), theta_s=T(*theta_s), k_s=T(*k_s),
                            closure="van_genuchten", alpha=T(*alpha), n=T(*n))


#: One Brooks–Corey soil with round numbers: S_e = θ / 0.5, h = −100 / S_e, K = 100 S_e⁵.
ROUND_BC = bc([0.0], [0.5], psi_s=[100.0], b=[1.0], k_s=[100.0])


# --- pedotransfer ----------------------------------------------------------------------

def test_cosby_1984_by_hand():
    p = r.cosby_1984(T(0.4), T(0.2))  # S = 40, Si = 40, C = 20 %
    assert p.closure == "brooks_corey"
    assert p.b.item() == pytest.approx(3.10 + 3.14 - 0.12)  # 6.12
    assert p.psi_s.item() == pytest.approx(10 * 10 ** (1.54 - 0.38 + 0.252))  # 258.2 mm
    assert p.psi_s.item() == pytest.approx(258.2, abs=0.1)
    assert p.theta_s.item() == pytest.approx((50.5 - 5.68 - 0.74) / 100)  # 0.4408
    assert p.k_s.item() == pytest.approx(25.4 * 24 * 10 ** (-0.60 + 0.504 - 0.128))
    assert p.k_s.item() == pytest.approx(363.9, abs=0.1)  # mm day⁻¹
    assert p.theta_r.item() == 0.0
    assert r.pedotransfer("cosby_1984", T(0.4), T(0.2)).b.item() == p.b.item()


def test_cosby_is_differentiable_in_texture():
    sand, clay = T(0.3, 0.6).requires_grad_(), T(0.3, 0.1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s, c: torch.stack([getattr(r.cosby_1984(s, c), k)
                                  for k in ("b", "psi_s", "theta_s", "k_s")]), (sand, clay))


USDA_POINTS = [  # (sand, clay) fractions safely inside each class
    (1.00, 0.00, "sand"),
    (0.85, 0.05, "loamy sand"),
    (0.65, 0.10, "sandy loam"),
    (0.40, 0.20, "loam"),
    (0.05, 0.05, "silt"),
    (0.20, 0.15, "silt loam"),
    (0.60, 0.25, "sandy clay loam"),
    (0.30, 0.33, "clay loam"),
    (0.10, 0.33, "silty clay loam"),
    (0.55, 0.40, "sandy clay"),
    (0.05, 0.45, "silty clay"),
    (0.20, 0.60, "clay"),
]


def test_usda_classes_at_textbook_points():
    sand = T(*[p[0] for p in USDA_POINTS])
    clay = T(*[p[1] for p in USDA_POINTS])
    names = [r.USDA_CLASSES[c] for c in r.usda_texture_class(sand, clay).tolist()]
    assert names == [p[2] for p in USDA_POINTS]


def test_usda_classes_cover_the_triangle():
    g = torch.arange(201, dtype=F64) / 200
    sand, clay = torch.meshgrid(g, g, indexing="ij")
    inside = sand + clay <= 1
    codes = r.usda_texture_class(sand[inside], clay[inside])
    assert (codes >= 0).all()
    assert set(codes.tolist()) == set(range(12))


def test_carsel_parrish_loam_with_unit_conversions():
    p = r.pedotransfer("carsel_parrish_1988", T(0.4, 1.0), T(0.2, 0.0))  # loam, sand
    assert p.closure == "van_genuchten"
    assert p.theta_r.tolist() == pytest.approx([0.078, 0.045])
    assert p.theta_s.tolist() == pytest.approx([0.43, 0.43])
    assert p.alpha.tolist() == pytest.approx([0.0036, 0.0145])  # mm⁻¹ (0.036, 0.145 cm⁻¹)
    assert p.n.tolist() == pytest.approx([1.56, 2.68])
    assert p.k_s.tolist() == pytest.approx([249.6, 7128.0])  # mm day⁻¹ (24.96, 712.8 cm)
    assert p.validate() is p


def test_pedotransfer_rejects_bad_input():
    with pytest.raises(ValueError, match="name: expected one of"):
        r.pedotransfer("rawls", T(0.4), T(0.2))
    with pytest.raises(ValueError, match=r"sand: expected fractions in \[0, 1\], found \[40.0\]"):
        r.cosby_1984(T(40.0), T(0.2))
    with pytest.raises(ValueError, match="clay: expected fractions"):
        r.carsel_parrish_1988(T(0.4), T(-0.1))
    with pytest.raises(ValueError, match=r"sand \+ clay: expected ≤ 1"):
        r.cosby_1984(T(0.7), T(0.5))
    with pytest.raises(ValueError, match="clay: expected shape"):
        r.cosby_1984(T(0.4, 0.3), T(0.2))


def test_soil_hydraulics_checks_and_to():
    with pytest.raises(ValueError, match="closure: expected one of"):
        r.SoilHydraulics(theta_r=T(0.0), theta_s=T(0.4), k_s=T(1.0), closure="gardner")
    with pytest.raises(ValueError, match="b: expected a tensor"):
        r.SoilHydraulics(theta_r=T(0.0), theta_s=T(0.4), k_s=T(1.0), closure="brooks_corey",
                         psi_s=T(10.0))
    with pytest.raises(ValueError, match=r"n: expected > 1, found \[0.9"):
        vg([0.05], [0.4], alpha=[0.01], n=[0.9], k_s=[10.0]).validate()
    p = r.cosby_1984(T(0.4), T(0.2)).to(torch.float32)
    assert p.b.dtype == p.k_s.dtype == torch.float32 and p.alpha is None


# --- closures --------------------------------------------------------------------------

def test_closures_by_hand_brooks_corey():
    p = bc([0.0, 0.1], [0.5, 0.4], psi_s=[100.0, 50.0], b=[1.0, 2.0], k_s=[100.0, 10.0])
    theta = T([0.25, 0.40], [0.25, 0.34])  # S_e = 0.5, 0.8 in both cells
    assert r.effective_saturation(theta, p).flatten().tolist() == pytest.approx([0.5, 0.8] * 2)
    h = r.pressure_head(theta, p)
    assert h.tolist() == [pytest.approx([-200.0, -125.0]), pytest.approx([-200.0, -78.125])]
    k = r.conductivity(theta, p)
    assert k.tolist() == [pytest.approx([100 / 32, 32.768]),
                          pytest.approx([10 / 128, 10 * 0.8 ** 7])]


def test_closures_by_hand_van_genuchten():
    p = vg([0.05], [0.45], alpha=[0.01], n=[2.0], k_s=[100.0])  # m = 1/2
    theta = T([0.25, 0.37])  # S_e = 0.5, 0.8
    h = r.pressure_head(theta, p)[0]
    assert h.tolist() == pytest.approx([-100 * math.sqrt(0.5 ** -2 - 1),
                                        -100 * math.sqrt(0.8 ** -2 - 1)])
    k = r.conductivity(theta, p)[0]
    expected = [100 * math.sqrt(s) * (1 - math.sqrt(1 - s ** 2)) ** 2 for s in (0.5, 0.8)]
    assert k.tolist() == pytest.approx(expected)


def test_van_genuchten_conductivity_matches_high_precision_when_dry():
    # n = 1.05: S_e^(1/m) spans 1e-63 … 1, across the switch to the small-u expansion
    n = 1.05
    p = vg([0.0], [0.5], alpha=[0.001], n=[n], k_s=[1.0])
    se = [1e-3, 1e-2, 0.02, 0.05, 0.1, 0.2, 0.5, 0.9, 0.999]
    k = r.conductivity(0.5 * T(*se)[None], p)[0]
    mpmath.mp.dps = 100  # 1 − S_e^(1/m) needs 63 digits at S_e = 1e-3
    m = 1 - 1 / mpmath.mpf(n)
    for value, s in zip(k.tolist(), se):
        s = mpmath.mpf(s)
        exact = mpmath.sqrt(s) * (1 - (1 - s ** (1 / m)) ** m) ** 2
        assert value == pytest.approx(float(exact), rel=1e-9, abs=0)


def test_van_genuchten_conductivity_float32_n_near_one():
    # n = 1.03: S_e^(1/m) underflows float32 below S_e ≈ 0.07; K and its gradient stay finite
    p = vg([0.05], [0.45], alpha=[0.001], n=[1.03], k_s=[10.0]).to(torch.float32)
    theta = torch.tensor([[0.0508, 0.06, 0.1, 0.3]], requires_grad=True)
    k = r.conductivity(theta, p)
    (grad,) = torch.autograd.grad(k.sum(), theta)
    assert torch.isfinite(k).all() and torch.isfinite(grad).all() and grad[0, -1] > 0
    reference = r.conductivity(theta.detach().double(), p.to(F64))
    assert torch.allclose(k.double(), reference, rtol=1e-4, atol=1e-30)


@pytest.mark.parametrize("params", [
    r.cosby_1984(T(0.4, 0.05), T(0.2, 0.6)),
    r.carsel_parrish_1988(T(0.4, 0.05, 0.92), T(0.2, 0.45, 0.02)),
], ids=["brooks_corey", "van_genuchten"])
def test_closures_monotonic_and_bounded(params):
    frac = (torch.arange(561, dtype=F64) - 80) / 400  # S_e before the clamp: −0.2 … 1.2
    theta = params.theta_r[:, None] + frac * (params.theta_s - params.theta_r)[:, None]
    h, k = r.pressure_head(theta, params), r.conductivity(theta, params)
    assert torch.isfinite(h).all() and torch.isfinite(k).all()
    assert (h.diff(dim=1) >= 0).all() and (k.diff(dim=1) >= 0).all()
    inside = (frac[1:] > 0.05) & (frac[1:] < 0.95)
    assert (k.diff(dim=1)[:, inside] > 0).all()
    # strictly increasing unless capped (fine soils reach pF 7 at S_e ≈ 0.3–0.4)
    uncapped = inside & (h[:, :-1] > -r.SUCTION_MAX_MM)
    assert (h.diff(dim=1)[uncapped] > 0).all() and uncapped.sum() > 100
    assert (h < 0).all() and (h >= -r.SUCTION_MAX_MM * (1 + 1e-12)).all()
    assert (k >= 0).all() and (k <= params.k_s[:, None]).all()
    at_s = frac == 1.0
    # beyond θ_s and below θ_r nothing changes
    assert (h[:, frac > 1] == h[:, at_s]).all() and (k[:, frac > 1] == k[:, at_s]).all()
    assert (h[:, frac < 0] == h[:, frac == 0]).all() and (k[:, frac < 0] == k[:, frac == 0]).all()


def test_conductivity_at_saturation_is_k_s_up_to_the_clamp():
    p = bc([0.0], [0.5], psi_s=[100.0], b=[6.0], k_s=[300.0])
    k = r.conductivity(T([0.5, 0.6]), p)[0]
    assert k.tolist() == pytest.approx([300.0, 300.0], rel=(2 * 6 + 3) * (1 - r.S_MAX))
    assert k.tolist() == pytest.approx([300.0 * r.S_MAX ** 15] * 2)
    p = vg([0.05], [0.45], alpha=[0.01], n=[2.0], k_s=[100.0])
    k = r.conductivity(T([0.45]), p).item()
    s = r.S_MAX
    assert k == pytest.approx(100 * math.sqrt(s) * (1 - math.sqrt(1 - s ** 2)) ** 2)
    assert 0.95 * 100 < k < 100  # the Mualem curve is steep at saturation


def test_very_dry_soil_would_overflow_float32_without_the_log_form():
    clay = r.cosby_1984(T(0.0), T(1.0)).to(torch.float32)  # b = 18.8
    naive = clay.psi_s * torch.tensor(r.S_MIN, dtype=torch.float32) ** -clay.b
    assert torch.isinf(naive).all()
    h = r.pressure_head(clay.theta_r[:, None], clay)
    assert h.item() == pytest.approx(-r.SUCTION_MAX_MM, rel=1e-6)


# --- residual --------------------------------------------------------------------------

def hand_example(bottom: str, dt: float):
    """Three layers of 100, 200, 300 mm, two days, the round Brooks–Corey soil."""
    theta = T([[0.25, 0.25, 0.25], [0.4, 0.3, 0.2]])  # [1, 2, 3]; day 1: S_e = 0.8, 0.6, 0.4
    sink = T([[9.0, 9.0, 9.0], [0.5, 1.0, 2.0]])  # day 0's sink must not be used
    res = r.richards_residual(theta, T(100.0, 200.0, 300.0), ROUND_BC, bottom=bottom,
                              sink=sink, dt_days=dt)
    h = [-100 / 0.8, -100 / 0.6, -100 / 0.4]
    k = [100 * 0.8 ** 5, 100 * 0.6 ** 5, 100 * 0.4 ** 5]
    q12 = (k[0] + k[1]) / 2 * (1 - (h[1] - h[0]) / 150)  # centres at 50, 200, 450 mm
    q23 = (k[1] + k[2]) / 2 * (1 - (h[2] - h[1]) / 250)
    q_bottom = k[2] if bottom == "free_drainage" else 0.0
    expected = [200 * 0.05 / dt - q12 + q23 + 1.0, 300 * -0.05 / dt - q23 + q_bottom + 2.0]
    return res, expected


@pytest.mark.parametrize("bottom", r.BOTTOM_CONDITIONS)
@pytest.mark.parametrize("dt", [1.0, 2.0])
def test_residual_by_hand(bottom, dt):
    res, expected = hand_example(bottom, dt)
    assert res.shape == (1, 1, 2)
    assert res[0, 0].tolist() == pytest.approx(expected)
    if bottom == "free_drainage" and dt == 1.0:  # the numbers, once
        assert expected == pytest.approx([10 - 25.90318 + 5.86667 + 1.0,
                                          -15 - 5.86667 + 1.024 + 2.0], abs=1e-4)


def test_uniform_profile_is_steady_under_free_drainage():
    params = r.cosby_1984(T(0.4, 0.1), T(0.2, 0.4))
    theta = torch.full((2, 4, 3), 0.3, dtype=F64)
    d = (70.0, 210.0, 720.0)
    res = r.richards_residual(theta, d, params)
    assert res.shape == (2, 3, 2)
    assert (res == 0).all()  # gravity flux K in, K out, no change
    k = r.conductivity(theta[:, 0, 0], params)
    assert (k > 0).all()
    res = r.richards_residual(theta, d, params, bottom="zero_flux")
    assert (res[..., 0] == 0).all()
    # the last layer receives K from above and loses nothing: R = 0 − K + 0
    assert torch.allclose(res[..., 1], -k[:, None].expand(2, 3))


def test_column_balance_telescopes():
    g = torch.Generator().manual_seed(0)
    params = r.carsel_parrish_1988(T(0.4, 0.1, 0.7), T(0.2, 0.4, 0.1))
    span = (params.theta_s - params.theta_r)[:, None, None]
    theta = params.theta_r[:, None, None] + span * torch.rand(3, 5, 4, generator=g, dtype=F64)
    sink = torch.rand(3, 5, 4, generator=g, dtype=F64)
    d = T(50.0, 100.0, 200.0, 400.0)
    res = r.richards_residual(theta, d, params, sink=sink, bottom="free_drainage")
    q = r.interface_fluxes(theta, d, params, "free_drainage")
    column = ((d[1:] * theta[..., 1:]).sum(-1).diff(dim=1) - q[:, 1:, 0] + q[:, 1:, -1]
              + sink[:, 1:, 1:].sum(-1))
    assert torch.allclose(res.sum(-1), column, atol=1e-9)
    assert torch.allclose(q[..., -1], r.conductivity(theta[..., -1], params))


@pytest.mark.parametrize("params", [
    r.cosby_1984(T(0.4, 0.1), T(0.2, 0.4)),
    r.carsel_parrish_1988(T(0.4, 0.1), T(0.2, 0.4)),
], ids=["brooks_corey", "van_genuchten"])
def test_backward_euler_step_gives_zero_residual(params):
    """Profiles built backwards with day t's fluxes and sink satisfy R = 0 exactly."""
    g = torch.Generator().manual_seed(1)
    d, dt = T(70.0, 210.0, 720.0), 0.5
    span = (params.theta_s - params.theta_r)[:, None]
    lo = params.theta_r[:, None]
    sink = torch.rand(2, 3, 3, generator=g, dtype=F64)
    days = [lo + span * (0.3 + 0.4 * torch.rand(2, 3, generator=g, dtype=F64))]
    for t in (2, 1):  # θ_{t−1} = θ_t − Δt (q_in − q_out − S_t) / d on layers 2 and 3
        q = r.interface_fluxes(days[0][:, None], d, params, "zero_flux")[:, 0]
        before = days[0][:, 1:] - dt * (q[:, :-1] - q[:, 1:] - sink[:, t, 1:]) / d[1:]
        top = lo + span * torch.rand(2, 1, generator=g, dtype=F64)
        days.insert(0, torch.cat([top, before], 1))
    theta = torch.stack(days, 1)
    res = r.richards_residual(theta, d, params, bottom="zero_flux", sink=sink, dt_days=dt)
    assert res.abs().max() < 1e-9
    shifted = r.richards_residual(theta, d, params, bottom="zero_flux", dt_days=dt,
                                  sink=sink.roll(1, dims=1))
    assert shifted.abs().max() > 1e-3  # a misaligned sink would show


def test_missing_theta_gives_nan_residuals_but_no_nan_gradients():
    params = r.cosby_1984(T(0.4, 0.1), T(0.2, 0.4))
    g = torch.Generator().manual_seed(2)
    full = 0.15 + 0.2 * torch.rand(2, 4, 4, generator=g, dtype=F64)
    theta = full.clone()
    theta[0, :, 0] = float("nan")  # an unobserved surface layer
    theta[1, 2, 2] = float("nan")  # one missing value of layer 3, day 2
    sink = torch.ones(2, 4, 4, dtype=F64)
    sink[1, 3, 3] = float("nan")
    pred = theta.clone().requires_grad_()
    res = r.richards_residual(pred, (50.0, 100.0, 200.0, 400.0), params, sink=sink)
    nan = torch.zeros(2, 3, 3, dtype=torch.bool)
    nan[0, :, 0] = True  # layer 2 sees layer 1
    nan[1, 1, 0:3] = True  # day 2: layers 2, 3, 4 see layer 3 …
    nan[1, 2, 1] = True  # … and day 3's layer 3 its own day 2
    nan[1, 2, 2] = True  # the missing sink
    assert torch.equal(torch.isnan(res), nan)
    reference = r.richards_residual(full, (50.0, 100.0, 200.0, 400.0), params,
                                    sink=sink.nan_to_num())
    assert torch.allclose(res[~nan], reference[~nan])
    # the harshest masking: NaN residuals reach square() before nan_to_num()
    (grad,) = torch.autograd.grad(res.square().nan_to_num().sum(), pred)
    assert torch.isfinite(grad).all()
    assert (grad[torch.isnan(theta)] == 0).all() and (grad[0, :, 1:] != 0).any()


def test_residual_rejects_bad_arguments():
    theta = torch.full((1, 2, 3), 0.3, dtype=F64)
    d = T(100.0, 200.0, 300.0)
    cases = [
        (dict(theta=theta[0]), r"theta: expected a floating tensor \[cells, days, layers\]"),
        (dict(theta=theta[..., :1], thickness_mm=d[:1]), "theta: expected at least 2 layers"),
        (dict(theta=theta[:, :1]), "theta: expected at least 2 days"),
        (dict(thickness_mm=d[:2]), r"thickness_mm: expected shape \(3,\)"),
        (dict(thickness_mm=T(100.0, 0.0, 300.0)), "thickness_mm: expected > 0"),
        (dict(bottom="seepage"), "bottom: expected one of"),
        (dict(sink=theta[..., :2]), r"sink: expected shape \(1, 2, 3\)"),
        (dict(dt_days=0.0), "dt_days: expected > 0"),
        (dict(params=r.cosby_1984(T(0.4, 0.4), T(0.2, 0.2))), "cells = 2"),
    ]
    for change, message in cases:
        kwargs = dict(theta=theta, thickness_mm=d, params=ROUND_BC) | change
        with pytest.raises(ValueError, match=message):
            r.richards_residual(kwargs.pop("theta"), kwargs.pop("thickness_mm"),
                                kwargs.pop("params"), **kwargs)


# --- gradients -------------------------------------------------------------------------

#: S_e of each cell, day and layer: near θ_r, very dry (h capped), near and beyond θ_s,
#: below θ_r, and in between.
SE = [[[0.02, 0.5, 0.995], [0.0015, 0.3, 1.02], [-0.01, 0.7, 0.9]],
      [[0.995, 0.02, 0.4], [0.6, 0.0015, 0.2], [0.99, 0.05, -0.05]]]
GRAD_SOILS = {
    "brooks_corey": bc([0.0, 0.05], [0.45, 0.4], psi_s=[50.0, 200.0], b=[3.0, 5.0],
                       k_s=[300.0, 50.0]),
    "van_genuchten": vg([0.05, 0.08], [0.43, 0.41], alpha=[0.002, 0.01], n=[1.5, 2.2],
                        k_s=[250.0, 1000.0]),
}


@pytest.mark.parametrize("closure", list(GRAD_SOILS))
def test_gradcheck_residual(closure):
    params = GRAD_SOILS[closure]
    span = (params.theta_s - params.theta_r)[:, None, None]
    theta = (params.theta_r[:, None, None] + T(*SE) * span).requires_grad_()
    sink = torch.ones(2, 3, 3, dtype=F64)
    for bottom in r.BOTTOM_CONDITIONS:
        assert torch.autograd.gradcheck(
            lambda th, b=bottom: r.richards_residual(th, (70.0, 210.0, 720.0), params,
                                                     bottom=b, sink=sink), (theta,))


@pytest.mark.parametrize("closure", list(GRAD_SOILS))
def test_gradcheck_residual_wrt_parameters(closure):
    params = GRAD_SOILS[closure]
    span = (params.theta_s - params.theta_r)[:, None, None]
    # away from the cap: a flux of ~1e7 mm day⁻¹ next to a capped layer leaves finite
    # differences to round-off
    theta = params.theta_r[:, None, None] + T(*SE).clamp(0.2, 0.95) * span
    shape = ("psi_s", "b") if closure == "brooks_corey" else ("alpha", "n")
    names = ("theta_r", "theta_s", "k_s", *shape)
    values = tuple(getattr(params, k).clone().requires_grad_() for k in names)

    def residual(*x):
        p = r.SoilHydraulics(closure=closure, **dict(zip(names, x)))
        return r.richards_residual(theta, (70.0, 210.0, 720.0), p)

    assert torch.autograd.gradcheck(residual, values)


def test_float32_dry_and_saturated_layers_stay_finite():
    sand = torch.tensor([0.0, 0.05, 0.92, 0.4], dtype=torch.float32)
    clay = torch.tensor([1.0, 0.45, 0.03, 0.2], dtype=torch.float32)
    for name in r.PEDOTRANSFERS:  # Cosby clay b = 18.8; Carsel–Parrish silty clay n = 1.09
        params = r.pedotransfer(name, sand, clay)
        lo, hi = params.theta_r[:, None], params.theta_s[:, None]
        day0 = torch.cat([lo, hi, lo, (lo + hi) / 2, hi + 0.05], 1)
        day1 = torch.cat([hi, lo, lo - 0.05, lo + 1e-3 * (hi - lo), hi], 1)
        theta = torch.stack([day0, day1, day0], 1).requires_grad_()
        for bottom in r.BOTTOM_CONDITIONS:
            res = r.richards_residual(theta, (70.0, 210.0, 720.0, 500.0, 500.0), params,
                                      bottom=bottom)
            assert res.dtype == torch.float32 and torch.isfinite(res).all(), name
            (grad,) = torch.autograd.grad(res.square().sum(), theta)
            assert torch.isfinite(grad).all(), name
            assert grad.abs().sum() > 0


# --- inconsistency ---------------------------------------------------------------------

def test_inconsistent_share_by_hand():
    nan, inf = float("nan"), float("inf")
    res = T([0.5, -2.0, nan, 1.0], [3.0, -4.0, nan, inf])
    # finite: 0.5, −2, 1 | 3, −4; above 1 mm day⁻¹ (strictly): −2 | 3, −4
    assert r.inconsistent_share(res, 1.0).item() == pytest.approx(3 / 5)
    assert r.inconsistent_share(res, 1.0, dim=1).tolist() == pytest.approx([1 / 3, 1.0])
    by_col = r.inconsistent_share(res, 1.0, dim=0)
    assert by_col[[0, 1, 3]].tolist() == [0.5, 1.0, 0.0] and math.isnan(by_col[2])
    assert r.inconsistent_share(res, 5.0).item() == 0.0
    assert r.inconsistent_share(res.float(), 1.0).dtype == torch.float32
    with pytest.raises(ValueError, match="tolerance: expected ≥ 0"):
        r.inconsistent_share(res, -1.0)
