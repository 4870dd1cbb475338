"""GR4J with a degree-day snow store: the calibrated conceptual benchmark of catchment fits.

A hydrologist's first question of a learned model on a gauged basin is whether it beats a
conceptual model calibrated on the same forcing. GR4J (Perrin et al. 2003, J. Hydrol.
279, 275–289; the daily four-parameter model of the airGR family) is the standard one,
with Oudin PET (Oudin et al. 2005, which the catchment importer writes as ``pet``) as its
evaporative demand. Snow goes through a degree-day store first (threshold temperature TT,
melt factor DDF; HBV, Bergström 1976), so that snow basins get a fair benchmark too.

Per day, with P and E in mm day⁻¹ and T in °C (equation numbers of Perrin et al. 2003,
Appendix A):

- snow: P falls as snow below TT into the pack; melt = min(pack, DDF · max(T − TT, 0));
  P' = rain + melt;
- interception: Pn = max(P' − E, 0), En = max(E − P', 0);
- production store S (capacity X1, mm): Ps = X1 (1 − (S/X1)²) tanh(Pn/X1) /
  (1 + S/X1 tanh(Pn/X1)) (A3); Es = S (2 − S/X1) tanh(En/X1) / (1 + (1 − S/X1)
  tanh(En/X1)) (A4); percolation Perc = S (1 − (1 + (4S / (9X1))⁴)^(−1/4)) (A6);
- Pr = Perc + Pn − Ps, 90 % through unit hydrograph UH1 (X4 days), 10 % through UH2
  (2 X4 days), their S-curves (t/X4)^(5/2) (A11–A15);
- groundwater exchange F = X2 (R/X3)^(7/2) (A18), mm day⁻¹, gained (X2 > 0) or lost;
- routing store R (capacity X3, mm): R = max(0, R + Q9 + F), Qr = R (1 − (1 +
  (R/X3)⁴)^(−1/4)) (A19–A20); Qd = max(0, Q1 + F) (A21); Q = Qr + Qd.

Initial stores S = 0.3 X1, R = 0.5 X3, empty pack and unit hydrographs (airGR's defaults);
the calibration (:mod:`h2mv_hybrid.conceptual.calibrate`) starts the simulation well
before its training period. The exchange F makes GR4J open: its water balance closes
only with the exchanged volume counted.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Parameters in the order :func:`simulate` takes them.
PARAMETERS = ("x1", "x2", "x3", "x4", "ddf", "tt")
#: Units of each parameter.
UNITS = {"x1": "mm", "x2": "mm day-1", "x3": "mm", "x4": "day", "ddf": "mm degC-1 day-1",
         "tt": "degC"}
#: Calibration ranges (airGR's usual GR4J ranges; DDF and TT those of HBV studies).
BOUNDS = {"x1": (10.0, 2500.0), "x2": (-5.0, 5.0), "x3": (5.0, 1000.0), "x4": (0.5, 10.0),
          "ddf": (0.5, 8.0), "tt": (-2.0, 2.0)}
#: Longest unit hydrograph, days: UH2 lasts 2 X4 ≤ 20 days.
UH_DAYS = 2 * int(np.ceil(BOUNDS["x4"][1]))


@njit(cache=True)
def _s_curve(t, x4, half):
    # Cumulative share of the unit hydrograph by time t (days): UH1 (half False), UH2.
    if t <= 0.0:
        return 0.0
    if not half:
        return 1.0 if t >= x4 else (t / x4) ** 2.5
    if t >= 2.0 * x4:
        return 1.0
    if t < x4:
        return 0.5 * (t / x4) ** 2.5
    return 1.0 - 0.5 * (2.0 - t / x4) ** 2.5


@njit(cache=True)
def unit_hydrographs(x4):
    """The ordinates of UH1 and UH2 for X4 (days), each [UH_DAYS], summing to 1."""
    uh1, uh2 = np.zeros(UH_DAYS), np.zeros(UH_DAYS)
    for i in range(UH_DAYS):
        uh1[i] = _s_curve(i + 1.0, x4, False) - _s_curve(float(i), x4, False)
        uh2[i] = _s_curve(i + 1.0, x4, True) - _s_curve(float(i), x4, True)
    return uh1, uh2


@njit(cache=True)
def _run(prec, pet, tair, x1, x2, x3, x4, ddf, tt, q, states):
    uh1, uh2 = unit_hydrographs(x4)
    s, r, pack = 0.3 * x1, 0.5 * x3, 0.0
    b1, b2 = np.zeros(UH_DAYS), np.zeros(UH_DAYS)
    for i in range(len(prec)):
        p = prec[i]
        if tair[i] < tt:
            pack += p
            p = 0.0
        melt = min(pack, ddf * max(tair[i] - tt, 0.0))
        pack -= melt
        p += melt
        e = pet[i]
        pn, en = max(p - e, 0.0), max(e - p, 0.0)
        ps = 0.0
        if pn > 0.0:
            th = np.tanh(pn / x1)
            ps = x1 * (1.0 - (s / x1) ** 2) * th / (1.0 + s / x1 * th)
        if en > 0.0:
            th = np.tanh(en / x1)
            s -= s * (2.0 - s / x1) * th / (1.0 + (1.0 - s / x1) * th)
        s += ps
        perc = s * (1.0 - (1.0 + (4.0 / 9.0 * s / x1) ** 4) ** -0.25)
        s -= perc
        pr = perc + pn - ps
        for k in range(UH_DAYS - 1):
            b1[k] = b1[k + 1] + uh1[k] * 0.9 * pr
            b2[k] = b2[k + 1] + uh2[k] * 0.1 * pr
        b1[UH_DAYS - 1] = uh1[UH_DAYS - 1] * 0.9 * pr
        b2[UH_DAYS - 1] = uh2[UH_DAYS - 1] * 0.1 * pr
        f = x2 * (r / x3) ** 3.5
        r = max(0.0, r + b1[0] + f)
        qr = r * (1.0 - (1.0 + (r / x3) ** 4) ** -0.25)
        r -= qr
        q[i] = qr + max(0.0, b2[0] + f)
        states[i, 0], states[i, 1], states[i, 2] = pack, s, r


def simulate(prec: np.ndarray, pet: np.ndarray, tair: np.ndarray, params: dict[str, float],
             with_states: bool = False):
    """Daily runoff (mm day⁻¹) of one basin.

    Args:
        prec: precipitation [T], mm day⁻¹, no gaps.
        pet: potential evaporation [T], mm day⁻¹.
        tair: air temperature [T], °C.
        params: every name of :data:`PARAMETERS`.
        with_states: also return the end-of-day stores [T, 3] (snow pack, S, R), mm.
    """
    missing = set(PARAMETERS) - set(params)
    if missing:
        raise ValueError(f"params: expected {PARAMETERS}, found no {sorted(missing)}")
    run = runner(prec, pet, tair)
    q, states = run([params[n] for n in PARAMETERS])
    return (q.copy(), states.copy()) if with_states else q.copy()


def runner(prec: np.ndarray, pet: np.ndarray, tair: np.ndarray):
    """The forcing of one basin checked once, as a function of the parameter values.

    The returned ``run(values)`` takes the values of :data:`PARAMETERS` in order and
    returns ``(q [T], states [T, 3])`` in buffers that the next call overwrites: what a
    calibration calls thousands of times. Arguments as :func:`simulate`'s.
    """
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (prec, pet, tair)]
    for name, a in zip(("prec", "pet", "tair"), arrays, strict=True):
        if a.ndim != 1 or len(a) != len(arrays[0]):
            raise ValueError(f"{name}: expected one series of {len(arrays[0])} days, found "
                             f"shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: expected no gaps, found {int((~np.isfinite(a)).sum())} "
                             f"missing days")
    q = np.empty(len(arrays[0]))
    states = np.empty((len(q), 3))

    def run(values) -> tuple[np.ndarray, np.ndarray]:
        _run(*arrays, *(float(v) for v in values), q, states)
        return q, states

    return run
