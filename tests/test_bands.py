"""Elevation bands: offsets by hand, the bucket once per band, storages per band."""

import math

import pytest
import torch
from helpers.small_hybrid import site_inputs, small_hybrid

from h2mv_hybrid.model.networks import HybridSettings
from h2mv_hybrid.model.state_cache import StateCache
from process_layers import FLUX_NAMES, bands, h2mv

D = torch.float64


def inputs(cells=6, days=80, seed=6):
    return site_inputs(cells, days, seed)


def model(scale=3.0, **kw):
    return small_hybrid(scale=scale, basin_temperature_offset=True, **kw)


def test_band_offsets_by_hand():
    assert bands.band_offsets(1).tolist() == [0.0]
    # two halves of a normal: their means ±√(2/π), scaled to unit spread: ±1
    torch.testing.assert_close(bands.band_offsets(2), torch.tensor([1.0, -1.0], dtype=D))
    # three thirds: the outer means ±3 φ(Φ⁻¹(2/3)) and 0; scaled: ±√(3/2) and exactly 0
    z3 = bands.band_offsets(3)
    torch.testing.assert_close(z3, torch.tensor([math.sqrt(1.5), 0.0, -math.sqrt(1.5)],
                                                dtype=D))
    assert z3[1].item() == 0.0
    for k in (4, 5, 10):
        z = bands.band_offsets(k)
        assert bool((z[:-1] > z[1:]).all())  # the lowest (warmest) band first
        assert abs(z.sum().item()) < 1e-12 and abs((z**2).mean().item() - 1) < 1e-12
    # five fifths: the top one's mean is 5 φ(Φ⁻¹(0.8)), the next 5 (φ(Φ⁻¹(0.6)) − φ(Φ⁻¹(0.8)))
    phi = lambda x: math.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)  # noqa: E731
    q6, q8 = 0.2533471031357997, 0.8416212335729143
    z5 = bands.band_offsets(5)
    assert z5[0].item() / z5[1].item() == pytest.approx(phi(q8) / (phi(q6) - phi(q8)),
                                                         rel=1e-12)
    with pytest.raises(ValueError, match="k ≥ 1"):
        bands.band_offsets(0)


def test_band_temperatures_and_means_by_hand():
    tair = torch.tensor([[270.0, 275.0], [280.0, 281.0]], dtype=D)
    t = bands.band_temperatures(tair, torch.tensor([2.0, 0.5], dtype=D), 2)
    want = torch.tensor([[272.0, 277.0], [268.0, 273.0], [280.5, 281.5], [279.5, 280.5]],
                        dtype=D)
    torch.testing.assert_close(t, want)
    torch.testing.assert_close(bands.band_mean(t, 2), tair)
    torch.testing.assert_close(bands.to_bands(tair, 2)[[0, 2]], tair)
    assert bands.to_bands(tair, 1) is tair and bands.band_mean(tair, 1) is tair
    s = torch.tensor([1.5, 0.7], dtype=D, requires_grad=True)
    tr = tair.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: bands.band_temperatures(a, b, 3), (tr, s))


@pytest.mark.parametrize("state_feedback", [False, True])
def test_bands_run_one_bucket_per_band(state_feedback):
    """Each band is the bucket at its own temperature; the basin is their mean."""
    forcing, static = inputs()
    m = model(state_feedback=state_feedback, elevation_bands=3)
    out = m(forcing, static)
    corr = out.corrections
    assert set(corr) == {"temperature_offset", "temperature_spread"}
    spread = corr["temperature_spread"]
    assert spread.shape == (6,) and bool(((spread > 0) & (spread < 6)).all())
    assert out.carry.swe.shape == (6, 3) and out.daily["swe"].shape == (6, 80)
    # the storages differ between bands: the coldest holds the most snow
    assert bool((out.carry.swe[:, 2] >= out.carry.swe[:, 0]).all())
    stored = out.carry.swe + out.carry.sm + out.carry.gw
    assert bool((stored[:, 2] != stored[:, 0]).any())
    # the water balance of the band mean closes on its own input
    d = out.daily
    inflow = (d["rainfall"] + d["snow_acc"] - d["ET"] - d["q_total"]).sum(1)
    torch.testing.assert_close(inflow, d["tws"][:, -1], rtol=0, atol=1e-9)
    # the spread learns
    g = torch.autograd.grad(d["q_total"].sum() + d["swe"].sum(), m.correction_head.weight)[0]
    assert bool((g.abs().sum(1) > 0).all())
    if state_feedback:
        return  # the fused op against the day loop: next test
    # the decoupled bucket against three per-day loops at the band temperatures
    tair = forcing[..., 2] + corr["temperature_offset"][:, None]
    z = bands.band_offsets(3)
    beta = {k: v for k, v in out.beta.items()}
    runs = [h2mv.simulate({"rn": forcing[..., 0], "prec": forcing[..., 1],
                           "tair": tair + spread[:, None] * z[i]}, out.alpha,
                          {"sm_max": out.sm_max}, beta, backend="loop") for i in range(3)]
    for k in FLUX_NAMES:
        ref = sum(r[k] for r in runs) / 3
        torch.testing.assert_close(d[k], ref, rtol=0, atol=1e-10, msg=k)
    torch.testing.assert_close(out.carry.gw, torch.stack([r.gw[:, -1] for r in runs], 1),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("state_feedback", [False, True])
def test_bands_without_spread_are_the_one_band_model(state_feedback):
    """σ_T → 0: K identical bands give the model without bands (LSTM inputs included)."""
    forcing, static = inputs(days=50)
    three = model(state_feedback=state_feedback, elevation_bands=3)
    one = model(state_feedback=state_feedback, feedback_backend="loop")
    with torch.no_grad():
        three.correction_head.weight[1] = 0.0
        three.correction_head.bias[1] = -60.0  # σ_T = 6 sigmoid(−60) ≈ 5e-26 °C
        one.correction_head.weight.copy_(three.correction_head.weight[:1])
        one.correction_head.bias.copy_(three.correction_head.bias[:1])
    state = {k: v for k, v in three.state_dict().items() if not k.startswith("correction")}
    one.load_state_dict(state, strict=False)
    a, b = three(forcing, static), one(forcing, static)
    for k in (*FLUX_NAMES, "fapar"):
        torch.testing.assert_close(a.daily[k], b.daily[k], rtol=1e-12, atol=1e-12, msg=k)
    # and a later span starts from the band states as the one-band model from its own
    c = three(forcing, static, a.carry)
    e = one(forcing, static, b.carry)
    torch.testing.assert_close(c.daily["q_total"], e.daily["q_total"], rtol=1e-12, atol=1e-12)


def _run(backend, forcing, static, carry=None, **kw):
    m = model(state_feedback=True, elevation_bands=3, feedback_backend=backend, **kw)
    out = m(forcing, static, carry)
    w = torch.linspace(0.5, 1.5, forcing.shape[1], dtype=D)
    loss = sum((v * w).sum() for v in out.daily.values()) * 1e-3
    c = out.carry
    loss = loss + c.swe.sum() + c.sm[:, 0].sum() + 2 * c.gw[:, 2].sum() + c.h.sum() + c.fapar.sum()
    loss.backward()
    return out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def test_fused_feedback_with_bands_equals_the_day_loop():
    """The fused state-feedback op runs K bucket rows per cell (the LSTM reading their band
    means): the day loop's outputs, band storages and gradients (the spread's included),
    whole, in checkpointed chunks and from a carried band state."""
    forcing, static = inputs(days=60, seed=9)
    m = model(state_feedback=True, elevation_bands=3)
    assert m.fused_feedback_reason(m.drivers(forcing, static).forcing) is None
    ref = _run("loop", forcing[:, 20:], static)
    for kw in ({}, {"time_chunk": 7}):
        out, grads = _run("fused", forcing[:, 20:], static, **kw)
        for k in out.daily:
            torch.testing.assert_close(out.daily[k], ref[0].daily[k], rtol=0, atol=1e-10,
                                       msg=k)
        for x, y in zip(out.carry, ref[0].carry, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-10)
        assert set(grads) == set(ref[1])
        for n, g in grads.items():
            scale = float(ref[1][n].abs().max()) + 1.0
            torch.testing.assert_close(g / scale, ref[1][n] / scale, rtol=0, atol=1e-10,
                                       msg=n)
        assert grads["correction_head.weight"][1].abs().sum() > 0  # σ_T learns
    # from a carried state whose bands differ, with a gradient into it
    spin = model(state_feedback=True, elevation_bands=3)(forcing[:, :20], static).carry
    stored = spin.swe + spin.sm + spin.gw
    assert bool((stored[:, 0] != stored[:, 2]).any())
    grads = []
    for backend in ("loop", "fused"):
        carry = type(spin)(*(t.detach().clone().requires_grad_(True) for t in spin))
        _run(backend, forcing[:, 20:], static, carry, time_chunk=11)
        grads.append([t.grad for t in carry])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_settings_check_the_band_count():
    for bad in (0, 21, 2.5):
        with pytest.raises(ValueError, match="elevation_bands: expected an integer"):
            HybridSettings(elevation_bands=bad)


def test_fresh_spread_starts_at_one_degree():
    forcing, static = inputs(days=10)
    fresh = model(scale=1.0, elevation_bands=5, state_feedback=False)
    spread = fresh(forcing, static).corrections["temperature_spread"]
    torch.testing.assert_close(spread, torch.ones(6, dtype=D), rtol=0, atol=0.3)


def test_state_cache_keeps_the_band_storages():
    forcing, static = inputs(days=30)
    m = model(state_feedback=False, elevation_bands=4, routing_days=5)
    out = m(forcing, static)
    cache = StateCache(8, 4, bands=4)
    flat = cache.pack(out.carry, out.history)
    assert flat.shape == (6, cache.width) and cache.width == 3 * 4 + 1 + 16 + 4
    carry, history = cache.unpack(flat)
    for got, want in zip(carry, out.carry, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(history, out.history, rtol=0, atol=0)
    one = StateCache(8, 0)
    flat = one.pack(model(state_feedback=False)(forcing, static).carry, None)
    assert one.unpack(flat)[0].swe.shape == (6,)


@pytest.mark.parametrize("state_feedback", [False, True])
def test_bands_in_checkpointed_chunks_match_one_piece(state_feedback):
    forcing, static = inputs(days=70)
    res = []
    for chunk in (None, 25):
        m = model(state_feedback=state_feedback, elevation_bands=3, time_chunk=chunk)
        out = m(forcing, static)
        loss = (out.daily["q_total"] * torch.linspace(0, 1, 70, dtype=D)).sum() \
            + out.carry.swe.sum() + out.daily["tws"].sum()
        res.append((out, torch.autograd.grad(loss, list(m.parameters()))))
    (a, ga), (b, gb) = res
    for k in FLUX_NAMES:
        torch.testing.assert_close(a.daily[k], b.daily[k], rtol=1e-12, atol=1e-12, msg=k)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)
