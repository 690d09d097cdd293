"""Learning-rate schedule and EMA: numbers pinned by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from proseco.training.ema import EMA
from proseco.training.lr import learning_rate


def test_warmup_is_linear_and_never_zero():
    lrs = [learning_rate(s, lr=1.0, max_steps=100, warmup_steps=4) for s in range(6)]
    assert lrs == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_decays_from_lr_to_min_lr_after_warmup():
    kw = {"lr": 1.0, "max_steps": 12, "warmup_steps": 2, "schedule": "cosine", "min_lr": 0.1}
    assert learning_rate(2, **kw) == pytest.approx(1.0)
    # half-way through the 10 decay steps: min + (lr - min) / 2
    assert learning_rate(7, **kw) == pytest.approx(0.55)
    assert learning_rate(4, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert learning_rate(12, **kw) == pytest.approx(0.1)
    assert learning_rate(50, **kw) == pytest.approx(0.1)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        learning_rate(5, lr=1.0, max_steps=10, schedule="step")


def _module(value: float) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_ema_warmup_decay_matches_the_formula():
    m = _module(0.0)
    ema = EMA(m.named_parameters(), decay=0.9)
    # k = 1: decay = min(0.9, 2 / 11)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update()
    s1 = 0.0 - (1 - 2 / 11) * (0.0 - 1.0)
    assert float(ema.shadow["weight"]) == pytest.approx(s1)
    # k = 2: decay = min(0.9, 3 / 12) = 0.25
    ema.update()
    assert float(ema.shadow["weight"]) == pytest.approx(s1 - 0.75 * (s1 - 1.0))
    # large k: capped at 0.9
    ema.num_updates = 1000
    assert ema.current_decay() == 0.9


def test_ema_swapped_restores_live_weights_and_state_round_trips():
    m = _module(2.0)
    ema = EMA(m.named_parameters(), decay=0.5, warmup=False)
    with torch.no_grad():
        m.weight.fill_(4.0)
    ema.update()  # shadow = 2 - 0.5 (2 - 4) = 3
    with ema.swapped():
        assert float(m.weight.detach()) == 3.0
    assert float(m.weight.detach()) == 4.0
    other = EMA(_module(0.0).named_parameters(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert float(other.shadow["weight"]) == 3.0 and other.num_updates == 1


def test_ema_refuses_state_of_another_model():
    ema = EMA(_module(0.0).named_parameters(), decay=0.5)
    with pytest.raises(ValueError, match="EMA state does not match the model"):
        ema.load_state_dict({"shadow.other": torch.zeros(1), "num_updates": torch.tensor(1)})
