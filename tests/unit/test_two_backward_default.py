"""The training step backpropagates the MDLM term before the corrector pass unless told not to."""

from __future__ import annotations

import pytest

from proseco.training import load_config
from proseco.training.config import LossSection


def test_two_backward_is_the_default_for_the_diffusion_loss_only():
    assert LossSection().two_backward is True
    assert LossSection(sc_weight=0.0).two_backward is True  # MDLM: one pass, same cost
    assert LossSection(objective="ar").two_backward is False  # one pass, nothing to split
    assert LossSection(two_backward=False).two_backward is False  # the one-backward option


@pytest.mark.parametrize("recipe", ["qm9-proseco-cpu", "qm9-mdlm-cpu", "text-cpu-tiny"])
def test_shipped_recipes_train_with_two_backwards(recipe):
    assert load_config(recipe).loss.two_backward is True
