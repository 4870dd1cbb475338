"""The multi-constraint loss: hand-computed values, NaN-awareness, aggregation, weighting."""

import math

import pytest
import torch

from h2mv_hybrid.constraints import PAPER_CONSTRAINTS, Constraint, aggregate
from h2mv_hybrid.model.losses import MultiConstraintLoss, constraint_loss

nan = float("nan")


def test_monthly_and_8day_aggregation_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]])
    month_of_day = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    torch.testing.assert_close(aggregate(pred, "monthly", month_of_day),
                               torch.tensor([[2.0, 5.5, 9.0]]))
    torch.testing.assert_close(aggregate(pred, "8day", month_of_day), torch.tensor([[4.5, 9.5]]))
    assert aggregate(pred, "daily", month_of_day) is pred
    with pytest.raises(ValueError, match="aggregation: expected daily, monthly or 8day"):
        aggregate(pred, "weekly", month_of_day)


def test_nan_aware_mse_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    obs = torch.tensor([[2.0, nan, 5.0], [nan, nan, nan]])
    loss, count = constraint_loss(pred, obs, std=2.0)
    # ((1-2)/2)^2 + ((3-5)/2)^2 over 2 observed entries = (0.25 + 1) / 2
    assert float(loss) == pytest.approx(0.625) and int(count) == 2


def test_no_observation_contributes_zero_with_finite_gradient():
    pred = torch.ones(3, 4, requires_grad=True)
    loss, count = constraint_loss(pred, torch.full((3, 4), nan), std=1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and int(count) == 0
    assert torch.isfinite(pred.grad).all() and float(pred.grad.abs().sum()) == 0.0


def test_anomalies_ignore_offsets_over_observed_entries():
    pred = torch.tensor([[10.0, 12.0, 14.0, 99.0]])
    obs = torch.tensor([[0.0, 2.0, 4.0, nan]])  # same anomalies, offset by 10 (and 99 unseen)
    loss, _ = constraint_loss(pred, obs, std=1.0, anomaly=True)
    assert float(loss) == pytest.approx(0.0, abs=1e-12)
    loss, _ = constraint_loss(pred, obs, std=1.0, anomaly=False)
    assert float(loss) == pytest.approx(100.0)


def test_saturation_counts_both_above_as_match():
    pred = torch.tensor([[150.0, 150.0, 50.0]])
    obs = torch.tensor([[300.0, 90.0, 60.0]])
    loss, _ = constraint_loss(pred, obs, std=10.0, saturation=100.0)
    # first: both above 100 → 0; second: (150-90)/10 = 6 → 36; third: 1 → 1
    assert float(loss) == pytest.approx((0 + 36 + 1) / 3)


def test_multi_constraint_fixed_and_uncertainty_weighting():
    days = 6
    month_of_day = torch.tensor([0, 0, 0, 1, 1, 1])
    outputs = {"ET": torch.arange(days, dtype=torch.float32)[None].repeat(2, 1),
               "q_total": torch.zeros(2, days)}
    batch = {"month_of_day": month_of_day, "et": torch.tensor([[1.0, 4.0], [nan, 4.0]]),
             "q": torch.tensor([[1.0, nan], [nan, nan]])}
    std = {"et": 1.0, "q": 2.0}
    fixed = MultiConstraintLoss([Constraint("et", "ET", weight=2.0), Constraint("q", "q_total")])
    total, parts = fixed(outputs, batch, std)
    assert float(parts["et"]) == pytest.approx(0.0) and float(parts["q"]) == pytest.approx(0.25)
    assert float(total) == pytest.approx(0.25)
    learned = MultiConstraintLoss([Constraint("et", "ET"), Constraint("q", "q_total")],
                                  weighting="uncertainty")
    with torch.no_grad():
        learned.log_var.copy_(torch.tensor([0.0, math.log(4.0)]))
    total, _ = learned(outputs, batch, std)
    assert float(total) == pytest.approx(0.5 * 0.25 / 4.0 + 0.5 * math.log(4.0) + 0.0)
    total.backward()
    assert learned.log_var.grad is not None


def test_declared_constraints_are_checked():
    loss = MultiConstraintLoss([Constraint("sm_product", "sm", aggregation="daily")])
    with pytest.raises(KeyError, match="the batch has no target 'sm_product'"):
        loss({"sm": torch.zeros(1, 3)}, {"month_of_day": torch.zeros(3, dtype=torch.long)},
             {"sm_product": 1.0})
    with pytest.raises(KeyError, match="the model has no output 'soil'"):
        MultiConstraintLoss([Constraint("et", "soil")])({"ET": torch.zeros(1, 3)},
                                                       {"et": torch.zeros(1, 1)}, {"et": 1.0})
    with pytest.raises(ValueError, match="weighting: expected fixed or uncertainty"):
        MultiConstraintLoss(PAPER_CONSTRAINTS, weighting="learned")
    assert [c.target for c in PAPER_CONSTRAINTS] == ["tws", "et", "q", "fapar", "swe"]
