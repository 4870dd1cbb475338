"""The hybrid model: bounds, water balance, chunking, precision, guards, spin-up cache."""

from types import SimpleNamespace

import pytest
import torch

from h2mv_hybrid.constraints import Constraint
from h2mv_hybrid.data.datamodule import Normalization
from h2mv_hybrid.model.module import H2MVHybrid
from h2mv_hybrid.model.networks import OUTPUT_NAMES, HybridH2MV, HybridSettings, activate_alpha
from h2mv_hybrid.sites import site_forcing
from process_layers.parameters import ALPHA_NAMES, BY_NAME

F = 5


def stats():
    return Normalization([100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * F, [1.0] * F,
                         [f"f{i}" for i in range(F)], {"et": 1.0, "q": 1.0, "tws": 0.0},
                         {"et": 1.0, "q": 2.0, "tws": 50.0})


def inputs(cells=6, days=120, seed=0):
    f = site_forcing(cells, days, seed=seed)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    return forcing, torch.randn(cells, F, generator=torch.Generator().manual_seed(seed))


def model(**kw):
    torch.manual_seed(0)
    s = stats()
    return HybridH2MV(F, s.forcing_mean, s.forcing_std, s.static_mean, s.static_std,
                      HybridSettings(lstm_hidden=16, **kw))


def test_activations_stay_inside_the_table_bounds():
    raw = torch.tensor([[-100.0] * 7, [0.0] * 7, [100.0] * 7])
    alpha = activate_alpha(raw)
    for name in ALPHA_NAMES:
        coef = BY_NAME[("alpha", name)]
        assert float(alpha[name].min()) >= coef.lower and float(alpha[name].max()) <= coef.upper


@pytest.mark.parametrize("feedback", [True, False])
def test_outputs_and_water_balance(feedback):
    m = model(state_feedback=feedback)
    forcing, static = inputs()
    carry = m.spinup(forcing[:, :40], static)
    out = m(forcing[:, 40:], static, carry)
    assert set(out.daily) == set(OUTPUT_NAMES) and out.daily["ET"].shape == (6, 80)
    d = out.daily
    inflow = (d["rainfall"] + d["snow_acc"] - d["ET"] - d["q_total"]).sum(1)
    change = d["tws"][:, -1] - (carry.swe + carry.sm + carry.gw)
    torch.testing.assert_close(inflow, change, rtol=1e-4, atol=1e-3)
    assert not carry.sm.requires_grad  # spin-up is gradient-free
    assert 10.0 <= float(out.sm_max.min())  # the SM_max floor
    loss = d["ET"].mean() + d["tws"].mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize("feedback", [True, False])
def test_checkpointed_chunks_give_the_same_gradients(feedback):
    forcing, static = inputs(days=90)
    grads, values = [], []
    for chunk in (None, 25):
        m = model(time_chunk=chunk, state_feedback=feedback)
        out = m(forcing, static)
        (out.daily["q_total"].mean() + out.daily["tws"].mean()).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
        values.append(out)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(values[0].daily["q_total"], values[1].daily["q_total"])
    torch.testing.assert_close(values[0].carry.h, values[1].carry.h)
    # truncation: finite gradients, and the LSTM's reach a chunk back is cut
    m = model(time_chunk=25, chunk_mode="truncate", state_feedback=feedback)
    out = m(forcing, static)
    out.daily["tws"].mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    x = forcing.clone().requires_grad_(True)
    m = model(time_chunk=25, chunk_mode="truncate", state_feedback=feedback)
    m(x, static).daily["fapar"][:, 60].sum().backward()  # fAPAR: the LSTM's own output
    assert float(x.grad[:, :50].abs().max()) == 0.0 and float(x.grad[:, 50:61].abs().max()) > 0


def test_time_chunk_auto_chunks_long_spans_only():
    from h2mv_hybrid.model.networks import AUTO_CHUNK_AFTER, AUTO_CHUNK_DAYS

    auto = HybridSettings()
    assert auto.time_chunk == "auto"
    assert auto.chunk_days(AUTO_CHUNK_AFTER) is None  # a training window and its warm-up
    assert auto.chunk_days(AUTO_CHUNK_AFTER + 1) == AUTO_CHUNK_DAYS == 365
    assert HybridSettings(time_chunk=30).chunk_days(10) == 30
    assert HybridSettings(time_chunk=None).chunk_days(10_000) is None
    assert HybridSettings(time_chunk="None").time_chunk is None  # a CLI null (jsonargparse)
    for bad in (0, "year"):
        with pytest.raises(ValueError, match="time_chunk: expected ≥ 1 days, 'auto' or None"):
            HybridSettings(time_chunk=bad)
    # the rule chunks a long span: the same outputs as one piece, in both configurations
    forcing, static = inputs(cells=3, days=AUTO_CHUNK_AFTER + 40)
    for feedback in (True, False):
        outs = [model(time_chunk=c, state_feedback=feedback)(forcing, static)
                for c in ("auto", None)]
        torch.testing.assert_close(outs[0].daily["tws"], outs[1].daily["tws"])


def test_mixed_precision_keeps_the_physics_in_float32():
    for feedback in (True, False):
        m = model(state_feedback=feedback)
        forcing, static = inputs(days=30)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(forcing, static)
        assert out.daily["tws"].dtype == torch.float32 and out.daily["ET"].dtype == torch.float32


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="chunk_mode: expected checkpoint or truncate"):
        model(chunk_mode="tbptt")
    with pytest.raises(ValueError, match=r"beta_init\['snow'\]: expected a value in \(0, 1\)"):
        model(beta_init={"snow": 1.0})
    with pytest.raises(ValueError, match="stats: expected the DataModule's normalization"):
        H2MVHybrid(stats=None)
    with pytest.raises(ValueError, match="constraints: expected targets served by the DataModule"):
        H2MVHybrid(stats=stats(), constraints=[Constraint("swe", "swe", "daily")])


def batch(cells=4, days=120, spin=30):
    forcing, static = inputs(cells, days)
    month_of_day = torch.arange(days - spin) // 30
    n_months = int(month_of_day.max()) + 1
    return {"forcing": forcing, "static": static, "spinup_days": torch.tensor(spin),
            "month_of_day": month_of_day, "cell_index": torch.arange(10, 10 + cells),
            "et": torch.rand(cells, n_months), "q": torch.rand(cells, n_months),
            "tws": torch.randn(cells, n_months) * 20}


def module(**kw):
    torch.manual_seed(0)
    return H2MVHybrid(stats=stats(), constraints=[
        Constraint("et", "ET"), Constraint("q", "q_total"), Constraint("tws", "tws", anomaly=True)],
        network=HybridSettings(lstm_hidden=16), **kw)


def test_non_finite_loss_is_located_and_skipped(monkeypatch):
    m = module()
    original = m.model.forward

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        poisoned_q = out.daily["q_total"].clone()
        poisoned_q[2, 17] = float("nan")
        out.daily["q_total"] = poisoned_q
        return out

    monkeypatch.setattr(m.model, "forward", poisoned)
    with pytest.warns(UserWarning, match=r"process output 'q_total', day 17 of the period, cell 12"):
        loss = m.training_step(batch(), 0)
    # a zero loss on every parameter (DDP stays in step), and the update is skipped
    assert float(loss) == 0.0 and m.skipped_batches == 1
    loss.backward()
    m.on_before_optimizer_step(None)
    assert all(p.grad is None for p in m.parameters())


def test_non_finite_gradient_is_named_and_the_update_skipped():
    m = module()
    loss = m.training_step(batch(), 0)
    loss.backward()
    m.model.head.weight.grad[0, 0] = float("inf")
    with pytest.warns(UserWarning, match=r"non-finite gradient in model.head.weight"):
        m.on_before_optimizer_step(None)
    assert all(p.grad is None for p in m.parameters()) and m.skipped_batches == 1


def test_spinup_is_cached_per_cell_and_refreshed(monkeypatch):
    m = module(spinup_refresh_epochs=2)
    calls = []
    original = m.model.spinup_state
    monkeypatch.setattr(m.model, "spinup_state",
                        lambda *a: calls.append(a[2] if len(a) > 2 else None) or original(*a))
    b = batch()
    m.training_step(b, 0)
    m.training_step(b, 1)  # same refresh period: cached, no spin-up
    assert len(calls) == 1 and calls[0] is None
    monkeypatch.setattr(type(m), "current_epoch", property(lambda self: 2))
    m.training_step(b, 2)  # refresh: recomputed, warm-started from the cached state
    assert len(calls) == 2 and calls[1] is not None
    m.validation_step(b, 0)  # validation always spins up afresh
    assert len(calls) == 3


def test_spinup_cycles_repeat_the_spin_up_from_its_own_end_state():
    m = module(spinup_cycles=3)
    b = batch(spin=40)
    forcing, static = b["forcing"][:, :40], b["static"]
    state = (None, None)
    for _ in range(3):
        state = m.model.spinup_state(forcing, static, *state)
    carry, _ = m._spinup(b, "val")
    for a, ref in zip(carry, state[0], strict=True):
        torch.testing.assert_close(a, ref, rtol=0, atol=0)
    once, _ = module()._spinup(b, "val")
    assert not torch.allclose(once.gw, carry.gw)  # the slow store keeps filling
    with pytest.raises(ValueError, match="spinup_cycles: expected ≥ 1, found 0"):
        module(spinup_cycles=0)


def test_the_decoupled_lstm_runs_in_slices_of_cells_past_cudnns_limit(monkeypatch):
    """Batches past cuDNN's 2³¹ gate values run in slices of cells: the same outputs."""
    from h2mv_hybrid.model import scans

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 8, batch_first=True)
    x, h0, c0 = torch.randn(10, 6, 5), torch.randn(10, 8), torch.randn(10, 8)
    whole = scans.run_lstm(lstm, x, h0, c0.t().contiguous().t())  # a non-contiguous view too
    monkeypatch.setattr(scans, "CUDNN_GATES", 3 * 6 * 4 * 8)  # 3 cells per slice
    sliced = scans.run_lstm(lstm, x, h0, c0)
    for a, b in zip((whole[0], *whole[1]), (sliced[0], *sliced[1]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert sliced[1][0].shape == (1, 10, 8)


def test_spinup_cycles_until_the_storages_stop_drifting():
    """spinup_tolerance: k cycles give exactly k fixed cycles, stop once no cell's storage
    changes by more than the tolerance, and report cells still drifting at the cap."""
    b = batch(cells=4, days=120, spin=60)
    f, s = b["forcing"][:, :60], b["static"]
    with torch.no_grad():
        loose = module(spinup_tolerance=1e3, spinup_cycles=2, spinup_max_cycles=40)
        carry, _ = loose.converged_spinup(f, s, b["cell_index"], "val")
        assert loose.spinup_report["cycles"] == 2 and loose.spinup_report["drifting_cells"] == 0
        tight = module(spinup_tolerance=1e-3, spinup_max_cycles=40)
        carry, _ = tight.converged_spinup(f, s, b["cell_index"], "val")
        report = tight.spinup_report
        assert 2 < report["cycles"] <= 40
        fixed, _ = module().cycled_spinup(f, s, report["cycles"])
        for a, c in zip(carry, fixed):  # the same cycles as a fixed count, bit for bit
            assert torch.equal(a, c)
        if report["drifting_cells"] == 0:
            assert report["max_drift_mm"] <= 1e-3
        # the next spin-up of the same cells starts from the equilibrium found, and a
        # checkpoint carries it to a resumed run or to test and predict
        tight.converged_spinup(f, s, b["cell_index"], "val")
        assert tight.spinup_report["cycles"] < report["cycles"]
        saved = {}
        tight.on_save_checkpoint(saved)
        restored = module(spinup_tolerance=1e-3, spinup_max_cycles=40)
        restored.on_load_checkpoint(saved)
        restored.converged_spinup(f, s, b["cell_index"], "val")
        assert restored.spinup_report["cycles"] == tight.spinup_report["cycles"]
        restored.converged_spinup(f, s, b["cell_index"], "test")  # another period: cold
        assert restored.spinup_report["cycles"] == report["cycles"]
        capped = module(spinup_tolerance=1e-9, spinup_max_cycles=3)
        with pytest.warns(UserWarning, match=r"spin-up \(val\): \d of 4 cells still change "
                                             r"their storage by more than spinup_tolerance = "
                                             r"1e-09 mm per cycle after 3 cycles"):
            capped.converged_spinup(f, s, b["cell_index"], "val")
        assert capped.spinup_report["cycles"] == 3
    with pytest.raises(ValueError, match="spinup_tolerance: expected a finite value > 0"):
        module(spinup_tolerance=0.0)
    with pytest.raises(ValueError, match=r"spinup_max_cycles: expected ≥ spinup_cycles \(5\)"):
        module(spinup_tolerance=1.0, spinup_cycles=5, spinup_max_cycles=3)


def _traced(alpha_nan: bool = False, gw_start: float = 10.0, prec: float = 5.0):
    """A 2-cell, 3-day output whose 'gw' is inf on day 1 of cell 1, for forensics."""
    from process_layers import FLUX_NAMES
    from process_layers.parameters import ALPHA_NAMES

    daily = {k: torch.ones(2, 3, dtype=torch.float64) for k in FLUX_NAMES}
    daily["gw"][1, 0] = gw_start  # the storage day 1 starts from
    daily["gw"][1, 1] = float("inf")
    alpha = {k: torch.full((2, 3), 0.5) for k in ALPHA_NAMES}
    alpha["r_gw"][:] = 1.0
    if alpha_nan:
        alpha["r_soil"][1, 1] = float("nan")
    out = SimpleNamespace(daily=daily, alpha=alpha, sm_max=torch.tensor([100.0, 100.0]),
                          beta={"snow": torch.tensor(0.9), "baseflow": torch.tensor(0.05)})
    forcing = torch.tensor([100.0, prec, 290.0], dtype=torch.float64).expand(2, 5, 3).clone()
    batch = {"forcing": forcing, "spinup_days": torch.tensor(2),
             "cell_index": torch.tensor([40, 41])}
    return out, batch


def test_forensics_name_the_equation_a_non_finite_value_came_from():
    from h2mv_hybrid.model.forensics import locate

    start = SimpleNamespace(swe=torch.zeros(2), sm=torch.zeros(2), gw=torch.zeros(2))
    # finite inputs whose groundwater update overflows float64: A23
    out, b = _traced(gw_start=1.7e308, prec=1e308)
    text = locate(out, b, start)
    assert text.startswith("process output 'gw', day 1 of the period, cell 41")
    assert "first non-finite in equation A23 (gw: groundwater storage" in text
    assert "forcing prec = 1e+308" in text and "gw at the start of the day = 1.7e+308" in text
    # a network output already non-finite that day: named as the input it is
    out, b = _traced(alpha_nan=True)
    assert "non-finite inputs that day: α r_soil (network) = nan" in locate(out, b, start)
    # every equation finite in float64: the storage dtype's rounding or overflow
    out, b = _traced()
    assert "re-run in float64 is finite" in locate(out, b, start)
    out.daily["gw"][1, 1] = 1.0
    assert locate(out, b, start) == "every process output is finite (the loss itself is not)"
