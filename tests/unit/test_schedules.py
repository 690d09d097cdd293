"""Noise schedules: values, derivatives and the MDLM weight."""

import math

import pytest
import torch

from proseco.schedules import SCHEDULES, LogLinearSchedule, get_schedule

ALL = [get_schedule(name) for name in SCHEDULES]


@pytest.mark.parametrize("schedule", ALL, ids=list(SCHEDULES))
def test_alpha_starts_at_one_and_ends_near_zero(schedule):
    assert float(schedule.alpha(torch.tensor(0.0))) == pytest.approx(1.0, abs=1e-7)
    assert float(schedule.alpha(torch.tensor(1.0))) == pytest.approx(schedule.eps, rel=1e-4)


@pytest.mark.parametrize("schedule", ALL, ids=list(SCHEDULES))
def test_alpha_decreases(schedule):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert bool((schedule.alpha(t).diff() < 0).all())


@pytest.mark.parametrize("schedule", ALL, ids=list(SCHEDULES))
def test_derivative_matches_finite_differences(schedule):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(schedule.dalpha(t), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("schedule", ALL, ids=list(SCHEDULES))
def test_weight_is_minus_dalpha_over_one_minus_alpha(schedule):
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    expected = -schedule.dalpha(t) / (1 - schedule.alpha(t))
    torch.testing.assert_close(schedule.weight(t), expected)


def test_loglinear_weight_is_one_over_t_and_matches_the_general_formula():
    s = LogLinearSchedule()
    t = torch.tensor([0.001, 0.25, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(s.weight(t), 1 / t)
    general = (1 - s.eps) / ((1 - s.eps) * t)  # -alpha' / (1 - alpha)
    torch.testing.assert_close(s.weight(t), general)
    assert float(s.alpha(torch.tensor(0.5))) == pytest.approx(1 - 0.999 * 0.5)


def test_hand_values():
    t = torch.tensor(0.5, dtype=torch.float64)
    assert float(get_schedule("cosine").alpha(t)) == pytest.approx(
        1e-3 + 0.999 * math.cos(math.pi / 4)
    )
    assert float(get_schedule("polynomial", power=2.0).alpha(t)) == pytest.approx(1 - 0.999 * 0.25)
    assert float(get_schedule("linear").alpha(t)) == pytest.approx(math.sqrt(1e-3))


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="loglinear"):
        get_schedule("sqrt")
