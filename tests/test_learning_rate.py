"""The learning rate of every model: one rate, or a schedule {first epoch: rate}."""

import math

import pytest
import torch

from h2mv_hybrid.heads.base import ScheduleFactor, Task, learning_rates


def test_a_rate_is_a_schedule_of_one_epoch_and_a_schedule_is_sorted():
    assert learning_rates(0.003) == {0: 0.003}
    assert learning_rates({8: 1e-4, 0: 1e-3, 4: 5e-4}) == {0: 1e-3, 4: 5e-4, 8: 1e-4}
    assert list(learning_rates({8: 1e-4, 0: 1e-3, 4: 5e-4})) == [0, 4, 8]
    assert learning_rates({"0": 1e-3, "3": 1e-4}) == {0: 1e-3, 3: 1e-4}  # YAML/JSON keys


def test_each_epoch_trains_at_the_rate_of_the_last_key_at_or_before_it():
    factor = ScheduleFactor(learning_rates({0: 1e-3, 4: 5e-4, 8: 1e-4}))
    rates = [1e-3 * factor(epoch) for epoch in range(12)]
    assert rates == pytest.approx([1e-3] * 4 + [5e-4] * 4 + [1e-4] * 4, rel=1e-12)


def test_lambda_lr_with_the_factor_steps_adam_through_the_schedule():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([w], lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, ScheduleFactor({0: 0.01, 2: 0.001}))
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize("lr, message", [
    (-0.1, "expected a finite value > 0, found -0.1"),
    (0.0, "expected a finite value > 0, found 0.0"),
    (math.inf, "expected a finite value > 0, found inf"),
    ({5: 1e-3}, r"expected a schedule that starts at epoch 0, found epochs \[5\]"),
    ({0: 1e-3, -1: 1e-4}, "expected epochs as whole numbers ≥ 0, found -1"),
    ({0: 1e-3, 2.5: 1e-4}, "expected epochs as whole numbers ≥ 0, found 2.5"),
    ({0: 1e-3, 3: math.nan}, "expected a finite value > 0, found nan at epoch 3"),
    ({}, "expected a rate or {epoch: rate}, found {}"),
    ("fast", "expected a rate or {epoch: rate}, found 'fast'"),
    (True, "expected a rate or {epoch: rate}, found True"),
])
def test_bad_rates_and_schedules_are_refused_by_name(lr, message):
    with pytest.raises(ValueError, match=r"model\.init_args\.lr: " + message.replace("{", r"\{")):
        learning_rates(lr)
    with pytest.raises(ValueError, match=r"model\.init_args\.lr"):
        Task.check_options({"lr": lr})


def test_weight_decay_is_checked_with_the_rate():
    Task.check_options({"lr": {0: 1e-3}, "weight_decay": 0.0})
    with pytest.raises(ValueError, match="model.init_args.weight_decay: expected a finite "
                                         "value ≥ 0, found -1"):
        Task.check_options({"lr": 1e-3, "weight_decay": -1})
