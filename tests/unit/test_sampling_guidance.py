"""Classifier-free guidance: the mixing formula, NFE costs, and the research-code option."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from proseco.sampling import Corrector, Guidance, sample
from proseco.sampling.guidance import ModelCaller
from proseco.sampling.testing import Spy, ToyDenoiser

V, MASK = 12, 11


class LabelModel(torch.nn.Module):
    """Probabilities [0.6, 0.3, 0.1] for label 0, [0.2, 0.4, 0.4] for the null label 1 (id 3 = mask)."""

    config = SimpleNamespace(vocab_size=4, time_conditioning=False, null_label=1)

    def forward(self, input_ids, class_labels=None):
        table = torch.tensor([[0.6, 0.3, 0.1, 1.0], [0.2, 0.4, 0.4, 1.0]]).log()
        return table[class_labels][:, None, :].expand(-1, input_ids.shape[1], -1).clone()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def caller(gamma: float, **kwargs) -> ModelCaller:
    return ModelCaller(
        LabelModel(), mask_id=3, batch_size=2, device=torch.device("cpu"),
        guidance=Guidance(gamma=gamma, condition=0, **kwargs),
    )  # fmt: skip


def test_guided_distribution_matches_the_hand_computed_mixture():
    # gamma = 2: p ~ pc^2 / pu = [1.8, 0.225, 0.025] / 2.05
    c = caller(2.0)
    probs = c.denoise(torch.zeros(2, 5, dtype=torch.long), 1.0).exp()
    expected = torch.tensor([0.878049, 0.109756, 0.012195, 0.0])
    assert torch.allclose(probs, expected.expand(2, 5, 4), atol=1e-5)
    assert c.denoiser_nfe == 2


@pytest.mark.parametrize(
    "gamma, expected, nfe",
    [(1.0, [0.6, 0.3, 0.1, 0.0], 1), (0.0, [0.2, 0.4, 0.4, 0.0], 1), (0.5, None, 2)],
)
def test_gamma_zero_and_one_cost_one_call(gamma, expected, nfe):
    c = caller(gamma)
    logits = c.denoise(torch.zeros(2, 3, dtype=torch.long), 1.0)
    if expected is not None:
        assert torch.allclose(torch.softmax(logits, -1)[0, 0], torch.tensor(expected), atol=1e-6)
    assert c.denoiser_nfe == nfe


@pytest.mark.parametrize("in_corrector", [True, False])
def test_nfes_count_two_per_guided_call(in_corrector):
    spy = Spy(ToyDenoiser(vocab_size=V, num_classes=2).eval())
    out = sample(
        spy, mask_id=MASK, batch_size=2, length=8, steps=4, generator=gen(),
        corrector=Corrector(steps=2, early_exit=False),
        guidance=Guidance(gamma=3.0, condition=1, in_corrector=in_corrector),
    )  # fmt: skip
    assert out.model_calls == len(spy.calls)
    assert out.corrector_nfe == 4 * 2 * (2 if in_corrector else 1)
    assert ((out.nfe_per_row - out.corrector_nfe_per_row) % 2 == 0).all()


def test_research_option_runs_the_corrector_on_the_conditional_model_only():
    spy = Spy(ToyDenoiser(vocab_size=V, num_classes=2).eval())
    sample(
        spy, mask_id=MASK, batch_size=2, length=8, steps=4, generator=gen(),
        corrector=Corrector(steps=1),
        guidance=Guidance(gamma=3.0, condition=1, in_corrector=False),
    )  # fmt: skip
    corrector_labels = [kw["class_labels"] for x, kw in spy.calls if not (x == MASK).any()]
    assert corrector_labels and all((labels == 1).all() for labels in corrector_labels)
    denoiser_labels = [kw["class_labels"] for x, kw in spy.calls if (x == MASK).any()]
    assert any((labels == 2).all() for labels in denoiser_labels)  # the null label, 2


def test_gamma_one_is_plain_conditional_sampling():
    model = ToyDenoiser(vocab_size=V, num_classes=2).eval()
    kwargs = dict(mask_id=MASK, batch_size=3, length=8, steps=5, corrector=Corrector(1))
    guided = sample(model, guidance=Guidance(gamma=1.0, condition=1), generator=gen(), **kwargs)
    plain = sample(
        model, conditioning={"class_labels": torch.ones(3, dtype=torch.long)}, generator=gen(),
        **kwargs,
    )  # fmt: skip
    assert torch.equal(guided.tokens, plain.tokens) and guided.nfe == plain.nfe


def test_per_row_conditions_are_accepted():
    model = ToyDenoiser(vocab_size=V, num_classes=2).eval()
    out = sample(
        model, mask_id=MASK, batch_size=2, length=6, steps=3, generator=gen(),
        guidance=Guidance(gamma=2.0, condition=torch.tensor([0, 1])),
    )  # fmt: skip
    assert not (out.tokens == MASK).any()
    with pytest.raises(ValueError, match="guidance labels"):
        sample(
            model, mask_id=MASK, batch_size=2, length=6, steps=3,
            guidance=Guidance(gamma=2.0, condition=torch.tensor([0, 1, 1])),
        )  # fmt: skip


def test_guidance_without_a_null_label_raises():
    model = ToyDenoiser(vocab_size=V).eval()  # unconditional: config.null_label is None
    with pytest.raises(ValueError, match="null label"):
        sample(model, mask_id=MASK, length=4, steps=2, guidance=Guidance(gamma=2.0, condition=0))
