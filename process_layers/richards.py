"""Richards equation over soil layers: the physics loss of a CNN-LSTM soil-moisture head.

Zhang et al. (2025, J. Hydrol., doi:10.1016/j.jhydrol.2025.133086) integrate "the
Richardson–Richards equation" into the loss of a CNN-LSTM that predicts soil moisture by
depth, and bound its output between the residual and the saturated water content.
Source: shared/papers/pgdl-cnn-lstm-richards-zhang-2025-summary.txt, a summary without
the paper's equations; what follows is the standard form of the equation and its
closures, written down in docs/process_layers.md ("Richards equation"):

- the 1-D Richards equation in mixed form (Celia et al. 1990, Water Resour. Res. 26,
  1483–1496), ∂θ/∂t = −∂q/∂z − S, with the Darcy flux q = K(θ) (1 − ∂h/∂z), z depth
  (positive downward), h pressure head, S a sink (root water uptake);
- finite volumes over the layers, backward Euler in time (fluxes of day t);
- two closures h(θ), K(θ): Brooks & Corey (1964, Hydrology Paper 3, Colorado State Univ.)
  in the Campbell (1974, Soil Sci. 117, 311–314) form with the exponent b of Clapp &
  Hornberger (1978, Water Resour. Res. 14, 601–604), and van Genuchten (1980, Soil Sci.
  Soc. Am. J. 44, 892–898) with the conductivity model of Mualem (1976, Water Resour.
  Res. 12, 513–522);
- two pedotransfer functions from sand and clay: Cosby et al. (1984, Water Resour. Res.
  20, 682–690, Table 4) for Brooks–Corey/Campbell and the texture-class means of Carsel &
  Parrish (1988, Water Resour. Res. 24, 755–769) for van Genuchten.

Conventions: parameters are [cells] tensors; θ has cells first, [cells, ...] (the
residual takes [cells, days, layers]), and each parameter is broadcast as
[cells, 1, …, 1] (:func:`_per_cell`). Units are mm for lengths and heads, mm day⁻¹ for
conductivities and fluxes, m³ m⁻³ for water contents. All functions are pure and work in
float32 and float64; values and gradients stay finite at and beyond θ_r and θ_s and for
very dry soils (see ``S_MIN``, ``S_MAX`` and ``SUCTION_MAX_MM``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

import torch
from torch import Tensor

#: Bounds of the effective saturation S_e inside the closures, –. h and K have infinite
#: derivatives at the ends of [0, 1] (h → −∞ as S_e → 0; dh/dS_e and, for van Genuchten–
#: Mualem, dK/dS_e → ∞ as S_e → 1), so S_e is clamped into [S_MIN, S_MAX]: beyond these
#: the closures are constant and their gradient is zero, never inf or NaN. 1e-4 below
#: saturation is still resolved in float32 (machine epsilon 1.2e-7).
S_MIN: float = 1e-3
S_MAX: float = 1.0 - 1e-4

#: Largest suction |h| the closures return, mm (pF 7, 10⁷ cm ≈ 1 GPa; oven-dry soil is
#: near pF 7). Brooks–Corey with b ≈ 19 (Cosby clay) gives |h| ≈ ψ_s · 10⁵⁶ at S_MIN, beyond
#: float32 (3.4e38); capped, the flux K · Δh / Δz stays finite in float32.
SUCTION_MAX_MM: float = 1e8

#: Closures of :class:`SoilHydraulics`.
CLOSURES: tuple[str, ...] = ("brooks_corey", "van_genuchten")
Bottom = Literal["free_drainage", "zero_flux"]
#: Boundary conditions at the bottom of the last layer.
BOTTOM_CONDITIONS: tuple[str, ...] = get_args(Bottom)

#: Unit conversions, exact: 1 cm = 10 mm; 1 inch = 25.4 mm; 1 day = 24 h.
_CM_TO_MM: float = 10.0
_INCH_PER_HOUR_TO_MM_PER_DAY: float = 25.4 * 24.0
_LOG_SUCTION_MAX: float = math.log(SUCTION_MAX_MM)
#: Below this log(S_e^{1/m}) the Mualem term uses its first-order expansion (relative error
#: ~ S_e^{1/m} / 2 < 1e-16); above it the exact form is accurate in float32 too.
_LOG_U_SMALL: float = -37.0


@dataclass(frozen=True, eq=False)
class SoilHydraulics:
    """Hydraulic parameters of each cell's soil, tensors [cells].

    Attributes:
        theta_r: residual water content θ_r, m³ m⁻³.
        theta_s: saturated water content θ_s, m³ m⁻³ (> θ_r).
        k_s: saturated hydraulic conductivity K_s, mm day⁻¹.
        closure: ``brooks_corey`` (Campbell form) or ``van_genuchten`` (with Mualem).
        psi_s: air-entry suction ψ_s, mm (positive); Brooks–Corey only.
        b: Clapp–Hornberger exponent b = 1/λ, –; Brooks–Corey only.
        alpha: van Genuchten α, mm⁻¹; van Genuchten only.
        n: van Genuchten n, – (> 1; m = 1 − 1/n); van Genuchten only.

    The fields a closure does not use may be None. Construction checks the closure name,
    the fields it needs and their shapes (no values: :meth:`validate` does that).
    """

    theta_r: Tensor
    theta_s: Tensor
    k_s: Tensor
    closure: str
    psi_s: Tensor | None = None
    b: Tensor | None = None
    alpha: Tensor | None = None
    n: Tensor | None = None

    def __post_init__(self) -> None:
        if self.closure not in CLOSURES:
            raise ValueError(f"closure: expected one of {CLOSURES}, found {self.closure!r}")
        needed = ("psi_s", "b") if self.closure == "brooks_corey" else ("alpha", "n")
        shape = self.theta_r.shape
        if len(shape) != 1:
            raise ValueError(f"theta_r: expected a tensor [cells], found shape {tuple(shape)}")
        for name in ("theta_s", "k_s", *needed):
            value = getattr(self, name)
            if value is None:
                raise ValueError(f"{name}: expected a tensor [cells] for closure "
                                 f"{self.closure!r}, found None")
            if value.shape != shape:
                raise ValueError(f"{name}: expected shape {tuple(shape)} (as theta_r), "
                                 f"found {tuple(value.shape)}")

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return self.theta_r.shape[0]

    def to(self, *args, **kwargs) -> SoilHydraulics:
        """A copy with every tensor moved by ``Tensor.to(*args, **kwargs)`` (device, dtype)."""
        moved = {f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)
                 if isinstance(getattr(self, f.name), Tensor)}
        return replace(self, **moved)

    def validate(self) -> SoilHydraulics:
        """Check the parameter ranges; return ``self`` or raise ValueError with the values.

        0 ≤ θ_r < θ_s ≤ 1, K_s > 0, and ψ_s, b > 0 (Brooks–Corey) or α > 0, n > 1 (van
        Genuchten). Reads the values (a device sync): call it once, not in a training step.
        """
        checks = [("theta_r", self.theta_r >= 0, "≥ 0"),
                  ("theta_s", self.theta_s <= 1, "≤ 1"),
                  ("theta_s", self.theta_s > self.theta_r, "> theta_r"),
                  ("k_s", self.k_s > 0, "> 0 mm day⁻¹")]
        if self.closure == "brooks_corey":
            checks += [("psi_s", self.psi_s > 0, "> 0 mm"), ("b", self.b > 0, "> 0")]
        else:
            checks += [("alpha", self.alpha > 0, "> 0 mm⁻¹"), ("n", self.n > 1, "> 1")]
        for name, ok, expected in checks:
            if not bool(ok.all()):
                bad = getattr(self, name)[~ok]
                raise ValueError(f"{name}: expected {expected}, found {bad[:5].tolist()} "
                                 f"in {int((~ok).sum())} cell(s)")
        return self


# ---------------------------------------------------------------------------------------
# Pedotransfer functions
# ---------------------------------------------------------------------------------------

#: USDA texture classes, in the order of their integer codes (and of Carsel & Parrish's
#: table).
USDA_CLASSES: tuple[str, ...] = (
    "sand", "loamy sand", "sandy loam", "loam", "silt", "silt loam", "sandy clay loam",
    "clay loam", "silty clay loam", "sandy clay", "silty clay", "clay",
)

#: Carsel & Parrish (1988), class means per USDA texture class (order of USDA_CLASSES):
#: θ_r (m³ m⁻³), θ_s (m³ m⁻³), α (cm⁻¹), n (–), K_s (cm day⁻¹).
CARSEL_PARRISH_1988: tuple[tuple[float, float, float, float, float], ...] = (
    (0.045, 0.43, 0.145, 2.68, 712.8),   # sand
    (0.057, 0.41, 0.124, 2.28, 350.2),   # loamy sand
    (0.065, 0.41, 0.075, 1.89, 106.1),   # sandy loam
    (0.078, 0.43, 0.036, 1.56, 24.96),   # loam
    (0.034, 0.46, 0.016, 1.37, 6.0),     # silt
    (0.067, 0.45, 0.020, 1.41, 10.8),    # silt loam
    (0.100, 0.39, 0.059, 1.48, 31.44),   # sandy clay loam
    (0.095, 0.41, 0.019, 1.31, 6.24),    # clay loam
    (0.089, 0.43, 0.010, 1.23, 1.68),    # silty clay loam
    (0.100, 0.38, 0.027, 1.23, 2.88),    # sandy clay
    (0.070, 0.36, 0.005, 1.09, 0.48),    # silty clay
    (0.068, 0.38, 0.008, 1.09, 4.8),     # clay
)

Pedotransfer = Literal["cosby_1984", "carsel_parrish_1988"]
#: Names accepted by :func:`pedotransfer`.
PEDOTRANSFERS: tuple[str, ...] = get_args(Pedotransfer)


def check_pedotransfer(name: str, what: str = "name") -> None:
    """A ValueError naming ``what`` unless ``name`` is one of :data:`PEDOTRANSFERS`."""
    if name not in PEDOTRANSFERS:
        raise ValueError(f"{what}: expected one of {PEDOTRANSFERS}, found {name!r}")

#: Tolerance on sand + clay ≤ 1 (fractions from rounded data sets), –.
_TEXTURE_TOLERANCE: float = 1e-6


def _texture_percent(sand: Tensor, clay: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Check sand and clay fractions [cells]; return sand, silt, clay in percent."""
    for name, x in (("sand", sand), ("clay", clay)):
        if not isinstance(x, Tensor) or x.dim() != 1 or not x.is_floating_point():
            found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a floating tensor [cells], found {found}")
        bad = ~((x >= 0) & (x <= 1))
        if bool(bad.any()):
            raise ValueError(f"{name}: expected fractions in [0, 1], found "
                             f"{x[bad][:5].tolist()} in {int(bad.sum())} cell(s)")
    if sand.shape != clay.shape:
        raise ValueError(f"clay: expected shape {tuple(sand.shape)} (as sand), "
                         f"found {tuple(clay.shape)}")
    total = sand + clay
    bad = total > 1 + _TEXTURE_TOLERANCE
    if bool(bad.any()):
        raise ValueError(f"sand + clay: expected ≤ 1 (silt = 1 − sand − clay ≥ 0), found "
                         f"{total[bad][:5].tolist()} in {int(bad.sum())} cell(s)")
    silt = (1.0 - total).clamp(min=0.0)
    return 100.0 * sand, 100.0 * silt, 100.0 * clay


def cosby_1984(sand: Tensor, clay: Tensor) -> SoilHydraulics:
    """Brooks–Corey/Campbell parameters from texture, Cosby et al. (1984), Table 4.

    Multiple regressions on percent sand S, silt Si and clay C (silt = 1 − sand − clay):

    - b = 3.10 + 0.157 C − 0.003 S (–);
    - log10(ψ_s / cm) = 1.54 − 0.0095 S + 0.0063 Si, ψ_s in mm = 10 · 10^(…);
    - θ_s = (50.5 − 0.142 S − 0.037 C) / 100 (m³ m⁻³);
    - log10(K_s / inch h⁻¹) = −0.60 + 0.0126 S − 0.0064 C, K_s in mm day⁻¹ = 25.4 · 24 · 10^(…);
    - θ_r = 0 (Campbell form).

    Differentiable in sand and clay.

    Args:
        sand: sand fraction, – [cells], in [0, 1].
        clay: clay fraction, – [cells], in [0, 1], sand + clay ≤ 1.

    Returns:
        SoilHydraulics with closure ``brooks_corey``.
    """
    s, si, c = _texture_percent(sand, clay)
    b = 3.10 + 0.157 * c - 0.003 * s
    psi_s = _CM_TO_MM * 10.0 ** (1.54 - 0.0095 * s + 0.0063 * si)
    theta_s = (50.5 - 0.142 * s - 0.037 * c) / 100.0
    k_s = _INCH_PER_HOUR_TO_MM_PER_DAY * 10.0 ** (-0.60 + 0.0126 * s - 0.0064 * c)
    return SoilHydraulics(theta_r=torch.zeros_like(theta_s), theta_s=theta_s, k_s=k_s,
                          closure="brooks_corey", psi_s=psi_s, b=b)


def usda_texture_class(sand: Tensor, clay: Tensor) -> Tensor:
    """USDA texture class of each cell, by the rules of the texture triangle.

    On percent sand S, silt Si, clay C (Soil Survey Manual; the NRCS triangle rules):

    - sand: Si + 1.5 C < 15;
    - loamy sand: Si + 1.5 C ≥ 15 and Si + 2 C < 30;
    - sandy loam: (7 ≤ C < 20, S > 52, Si + 2 C ≥ 30) or (C < 7, Si < 50, Si + 2 C ≥ 30);
    - loam: 7 ≤ C < 27, 28 ≤ Si < 50, S ≤ 52;
    - silt: Si ≥ 80, C < 12;
    - silt loam: (Si ≥ 50, 12 ≤ C < 27) or (50 ≤ Si < 80, C < 12);
    - sandy clay loam: 20 ≤ C < 35, Si < 28, S > 45;
    - clay loam: 27 ≤ C < 40, 20 < S ≤ 45;
    - silty clay loam: 27 ≤ C < 40, S ≤ 20;
    - sandy clay: C ≥ 35, S > 45;
    - silty clay: C ≥ 40, Si ≥ 40;
    - clay: C ≥ 40, S ≤ 45, Si < 40.

    Written out in full the rules exclude each other; they are applied in this order and
    the first that holds wins, so floating-point points on a boundary get one class too.

    Args:
        sand: sand fraction, – [cells], in [0, 1].
        clay: clay fraction, – [cells], in [0, 1], sand + clay ≤ 1.

    Returns:
        Integer codes [cells] (torch.long), indices into ``USDA_CLASSES``.
    """
    s, si, c = _texture_percent(sand, clay)
    rules = (
        si + 1.5 * c < 15,
        si + 2 * c < 30,
        ((c >= 7) & (c < 20) & (s > 52)) | ((c < 7) & (si < 50)),
        (c >= 7) & (c < 27) & (si >= 28) & (si < 50) & (s <= 52),
        (si >= 80) & (c < 12),
        ((si >= 50) & (c >= 12) & (c < 27)) | ((si >= 50) & (si < 80) & (c < 12)),
        (c >= 20) & (c < 35) & (si < 28) & (s > 45),
        (c >= 27) & (c < 40) & (s > 20) & (s <= 45),
        (c >= 27) & (c < 40) & (s <= 20),
        (c >= 35) & (s > 45),
        (c >= 40) & (si >= 40),
        (c >= 40) & (s <= 45) & (si < 40),
    )
    # Rules 2 and 3 take their lower bounds (Si + 1.5 C ≥ 15, Si + 2 C ≥ 30) from the
    # earlier rules failing. Every point of the triangle satisfies at least one rule
    # (tests/test_richards.py checks a 0.5 % grid); -1 would mark a gap.
    codes = torch.full(s.shape, -1, dtype=torch.long, device=s.device)
    for code in reversed(range(len(rules))):
        codes = torch.where(rules[code], code, codes)
    return codes


def carsel_parrish_1988(sand: Tensor, clay: Tensor) -> SoilHydraulics:
    """Van Genuchten parameters from texture: Carsel & Parrish (1988) class means.

    Each cell takes the means of its USDA texture class (:func:`usda_texture_class`,
    table ``CARSEL_PARRISH_1988``), with α converted from cm⁻¹ to mm⁻¹ (÷ 10) and K_s from
    cm day⁻¹ to mm day⁻¹ (× 10). Piecewise constant in texture: no gradient flows to sand
    and clay.

    Args:
        sand: sand fraction, – [cells], in [0, 1].
        clay: clay fraction, – [cells], in [0, 1], sand + clay ≤ 1.

    Returns:
        SoilHydraulics with closure ``van_genuchten``, in the dtype of ``sand``.
    """
    codes = usda_texture_class(sand, clay)
    table = torch.tensor(CARSEL_PARRISH_1988, dtype=sand.dtype, device=sand.device)
    theta_r, theta_s, alpha_cm, n, k_s_cm = table[codes].unbind(-1)
    return SoilHydraulics(theta_r=theta_r, theta_s=theta_s, k_s=k_s_cm * _CM_TO_MM,
                          closure="van_genuchten", alpha=alpha_cm / _CM_TO_MM, n=n)


def pedotransfer(name: str, sand: Tensor, clay: Tensor) -> SoilHydraulics:
    """Soil hydraulic parameters [cells] by the pedotransfer function ``name``.

    Args:
        name: one of ``PEDOTRANSFERS`` (``cosby_1984``, ``carsel_parrish_1988``).
        sand: sand fraction, – [cells].
        clay: clay fraction, – [cells].
    """
    check_pedotransfer(name)
    return cosby_1984(sand, clay) if name == "cosby_1984" else carsel_parrish_1988(sand, clay)


# ---------------------------------------------------------------------------------------
# Closures h(θ), K(θ)
# ---------------------------------------------------------------------------------------

def _per_cell(x: Tensor, like: Tensor) -> Tensor:
    """A parameter [cells] as [cells, 1, …, 1] to broadcast against ``like`` [cells, ...].

    Cast to the dtype of ``like`` (the gradient still flows to ``x``).
    """
    if like.dim() == 0 or x.shape != like.shape[:1]:
        raise ValueError(f"theta: expected shape [cells, ...] with cells = {x.shape[0]} (as "
                         f"the soil parameters), found {tuple(like.shape)}")
    return x.to(like.dtype).reshape(x.shape + (1,) * (like.dim() - 1))


def effective_saturation(theta: Tensor, params: SoilHydraulics) -> Tensor:
    """S_e = (θ − θ_r) / (θ_s − θ_r), clamped to [S_MIN, S_MAX], –.

    Outside the bounds (θ at or beyond θ_r or θ_s) the value is the bound and the gradient
    zero.

    Args:
        theta: volumetric water content, m³ m⁻³ [cells, ...].
        params: soil parameters [cells].

    Returns:
        S_e, – [cells, ...].
    """
    theta_r = _per_cell(params.theta_r, theta)
    theta_s = _per_cell(params.theta_s, theta)
    return ((theta - theta_r) / (theta_s - theta_r)).clamp(S_MIN, S_MAX)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − eˣ) for x < 0, accurate at both ends (Mächler 2012, "log1mexp")."""
    near_zero = x > -math.log(2.0)
    return torch.where(near_zero, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def pressure_head(theta: Tensor, params: SoilHydraulics) -> Tensor:
    """Pressure head h(θ), mm (negative: suction).

    - Brooks–Corey/Campbell: h = −ψ_s S_e^(−b);
    - van Genuchten: h = −(1/α) (S_e^(−1/m) − 1)^(1/n), m = 1 − 1/n.

    Computed as −exp(log |h|), with |h| capped at ``SUCTION_MAX_MM`` (float32 would
    overflow for fine soils near S_MIN); beyond the cap the gradient is zero.

    Args:
        theta: volumetric water content, m³ m⁻³ [cells, ...].
        params: soil parameters [cells].

    Returns:
        h, mm [cells, ...], in [−SUCTION_MAX_MM, 0).
    """
    log_se = torch.log(effective_saturation(theta, params))
    if params.closure == "brooks_corey":
        psi_s, b = _per_cell(params.psi_s, theta), _per_cell(params.b, theta)
        log_suction = torch.log(psi_s) - b * log_se
    else:
        n = _per_cell(params.n, theta)
        m = 1.0 - 1.0 / n
        log_u = log_se / m  # log S_e^(1/m) < 0
        # log(S_e^(−1/m) − 1) = log((1 − u) / u)
        alpha = _per_cell(params.alpha, theta)
        log_suction = -torch.log(alpha) + (_log1mexp(log_u) - log_u) / n
    return -torch.exp(log_suction.clamp(max=_LOG_SUCTION_MAX))


def conductivity(theta: Tensor, params: SoilHydraulics) -> Tensor:
    """Hydraulic conductivity K(θ), mm day⁻¹.

    - Brooks–Corey/Campbell: K = K_s S_e^(2b + 3);
    - van Genuchten–Mualem: K = K_s S_e^0.5 (1 − (1 − S_e^(1/m))^m)², m = 1 − 1/n.

    Powers go through exp/log of the clamped S_e; K may underflow to 0 for very dry soils
    (value and gradient 0, not NaN). At S_MAX, K is slightly below K_s for Brooks–Corey
    (factor S_MAX^(2b+3)), and markedly below it for van Genuchten–Mualem with n near 1
    (about 0.18 K_s for n = 1.09): the Mualem curve is vertical at saturation.

    Args:
        theta: volumetric water content, m³ m⁻³ [cells, ...].
        params: soil parameters [cells].

    Returns:
        K, mm day⁻¹ [cells, ...], in [0, K_s].
    """
    k_s = _per_cell(params.k_s, theta)
    log_se = torch.log(effective_saturation(theta, params))
    if params.closure == "brooks_corey":
        return k_s * torch.exp((2.0 * _per_cell(params.b, theta) + 3.0) * log_se)
    n = _per_cell(params.n, theta)
    m = 1.0 - 1.0 / n
    log_u = log_se / m  # log S_e^(1/m) < 0
    # 1 − (1 − u)^m; for tiny u it is m u (the exact form would round to 0 in float32, and
    # its log, needed below, to −inf); the exact branch sees log u ≥ _LOG_U_SMALL only.
    small = log_u < _LOG_U_SMALL
    exact = -torch.expm1(m * _log1mexp(log_u.clamp(min=_LOG_U_SMALL)))
    log_inner = torch.where(small, torch.log(m) + log_u, torch.log(exact))
    return k_s * torch.exp(0.5 * log_se + 2.0 * log_inner)


# ---------------------------------------------------------------------------------------
# The residual
# ---------------------------------------------------------------------------------------

def _check_column(theta: Tensor, thickness_mm: Tensor | Sequence[float], bottom: str
                  ) -> Tensor:
    """Check the arguments shared by :func:`interface_fluxes` and the residual.

    Returns:
        The thicknesses as a tensor [layers] in the dtype and on the device of theta.
    """
    if not isinstance(theta, Tensor) or theta.dim() != 3 or not theta.is_floating_point():
        found = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(f"theta: expected a floating tensor [cells, days, layers], "
                         f"found {found}")
    layers = theta.shape[2]
    if layers < 2:
        raise ValueError(f"theta: expected at least 2 layers (the top layer's inflow is "
                         f"unknown), found {layers}")
    d = torch.as_tensor(thickness_mm, dtype=theta.dtype, device=theta.device)
    if d.shape != (layers,):
        raise ValueError(f"thickness_mm: expected shape ({layers},) (layers of theta), "
                         f"found {tuple(d.shape)}")
    if not bool((d > 0).all()):
        raise ValueError(f"thickness_mm: expected > 0 mm, found {d.tolist()}")
    if bottom not in BOTTOM_CONDITIONS:
        raise ValueError(f"bottom: expected one of {BOTTOM_CONDITIONS}, found {bottom!r}")
    return d


def interface_fluxes(theta: Tensor, thickness_mm: Tensor | Sequence[float],
                     params: SoilHydraulics, bottom: str = "free_drainage") -> Tensor:
    """Darcy flux through the bottom of each layer, mm day⁻¹, positive downward.

    Between layers i and i + 1: q_{i+½} = K_{i+½} (1 − (h_{i+1} − h_i) / Δz_{i+½}), with
    Δz_{i+½} = (d_i + d_{i+1}) / 2 the distance between the layer centres (mm) and
    K_{i+½} = (K_i + K_{i+1}) / 2. The arithmetic mean, not the geometric one: √(K_i K_{i+1})
    has an infinite derivative when one K → 0 (dry layer; in float32 K underflows to 0),
    the arithmetic mean stays smooth. Below the last layer: ``free_drainage`` (unit
    gradient, q = K(θ_L)) or ``zero_flux`` (q = 0).

    Args:
        theta: volumetric water content, m³ m⁻³ [cells, days, layers], layer 1 on top.
        thickness_mm: layer thicknesses d_i, mm [layers], a tensor or a sequence of floats
            (ERA5-Land: 70, 210, 720, ``soil_layers.thickness_mm()``).
        params: soil parameters [cells], the same at every depth.
        bottom: ``free_drainage`` or ``zero_flux``.

    Returns:
        q, mm day⁻¹ [cells, days, layers]: entry i is the flux out of layer i at its bottom
        (into layer i + 1, or out of the column for the last layer). A NaN θ gives NaN
        fluxes (and gradients); :func:`richards_residual` masks missing values first.
    """
    d = _check_column(theta, thickness_mm, bottom)
    h = pressure_head(theta, params)
    k = conductivity(theta, params)
    dz = 0.5 * (d[:-1] + d[1:])
    k_mid = 0.5 * (k[..., :-1] + k[..., 1:])
    inner = k_mid * (1.0 - (h[..., 1:] - h[..., :-1]) / dz)
    last = k[..., -1:] if bottom == "free_drainage" else torch.zeros_like(k[..., -1:])
    return torch.cat([inner, last], -1)


def richards_residual(theta: Tensor, thickness_mm: Tensor | Sequence[float],
                      params: SoilHydraulics, *, bottom: str = "free_drainage",
                      sink: Tensor | None = None, dt_days: float = 1.0) -> Tensor:
    """Residual of the layered Richards equation (mixed form), mm day⁻¹.

    Finite volumes over the layers, backward Euler in time; for layer i = 2 … L and
    day t = 1 … T − 1:

        R_{i,t} = d_i (θ_{i,t} − θ_{i,t−1}) / Δt − q_{i−½,t} + q_{i+½,t} + S_{i,t}

    with the fluxes of :func:`interface_fluxes` on day t. R = 0 where the predicted
    profile obeys the equation; R > 0 means the layer gained more water than the fluxes
    bring (or lost less). Layer 1 is left out: its top flux (infiltration minus
    evaporation) is unknown.

    Args:
        theta: volumetric water content, m³ m⁻³ [cells, days, layers], layer 1 on top;
            days consecutive, Δt apart.
        thickness_mm: layer thicknesses d_i, mm [layers] (tensor or sequence).
        params: soil parameters [cells].
        bottom: ``free_drainage`` or ``zero_flux`` below the last layer.
        sink: water taken from each layer (root water uptake), mm day⁻¹
            [cells, days, layers], days aligned with theta (day t's sink enters the step
            t − 1 → t); None: no sink.
        dt_days: time step Δt, days.

    Returns:
        R, mm day⁻¹ [cells, days − 1, layers − 1]; NaN where a θ it uses (θ_{i,t−1},
        θ_{i−1,t}, θ_{i,t}, θ_{i+1,t}) or its sink is NaN or infinite. Such entries pass
        no gradient, and NaN inputs send no NaN gradient to the other θ.
    """
    d = _check_column(theta, thickness_mm, bottom)
    if theta.shape[1] < 2:
        raise ValueError(f"theta: expected at least 2 days (the residual needs a change), "
                         f"found {theta.shape[1]}")
    if sink is not None and sink.shape != theta.shape:
        raise ValueError(f"sink: expected shape {tuple(theta.shape)} (as theta), "
                         f"found {tuple(sink.shape)}")
    if not dt_days > 0:
        raise ValueError(f"dt_days: expected > 0 days, found {dt_days}")
    # Missing values (NaN, e.g. an unobserved surface layer) are replaced by a finite θ
    # for the arithmetic and their residuals set to NaN afterwards: a NaN inside would
    # send NaN gradients (0 · NaN) to every θ it meets, even through a masked loss.
    missing = ~torch.isfinite(theta)
    mid = 0.5 * (_per_cell(params.theta_r, theta) + _per_cell(params.theta_s, theta))
    theta = torch.where(missing, mid, theta)
    q = interface_fluxes(theta[:, 1:], d, params, bottom)
    storage_change = d[1:] * (theta[:, 1:, 1:] - theta[:, :-1, 1:]) / dt_days
    residual = storage_change - q[..., :-1] + q[..., 1:]
    now = missing[:, 1:]
    bad = now[..., 1:] | now[..., :-1] | missing[:, :-1, 1:]
    bad = bad | torch.cat([now[..., 2:], torch.zeros_like(now[..., :1])], -1)
    if sink is not None:
        sink = sink[:, 1:, 1:].to(theta.dtype)
        bad = bad | ~torch.isfinite(sink)
        residual = residual + torch.where(bad, 0.0, sink)
    return torch.where(bad, torch.nan, residual)


def inconsistent_share(residual: Tensor, tolerance: float,
                       dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Share of residuals with |R| > tolerance: the physical inconsistency of a prediction.

    Zhang et al. (2025) report the physical inconsistency as the share of Richards
    residuals above a tolerance. Only finite residuals are counted (NaN marks a missing
    prediction or observation); where none is counted the share is NaN.

    Args:
        residual: R, mm day⁻¹ [...] (e.g. :func:`richards_residual`).
        tolerance: mm day⁻¹, ≥ 0.
        dim: dimension(s) to reduce; None: all.

    Returns:
        Share in [0, 1] (or NaN), floating [...] without ``dim``; a scalar for dim=None.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance: expected ≥ 0 mm day⁻¹, found {tolerance}")
    counted = torch.isfinite(residual)
    bad = counted & (residual.abs() > tolerance)
    dtype = residual.dtype if residual.is_floating_point() else torch.get_default_dtype()
    if dim is None:
        return bad.sum().to(dtype) / counted.sum().to(dtype)
    return bad.sum(dim).to(dtype) / counted.sum(dim).to(dtype)
