"""PRISM: the quality head, its fine-tuning target and loss, the remasking sampler, NFEs."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch

from proseco.losses import LossConfig, fill_positions, prism_loss
from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig, ProsecoDiTOutput

MASK = 5  # toy vocabulary 0..4 plus the mask


class ToyQuality(torch.nn.Module):
    """A "model" with a quality head whose outputs are set by hand.

    ``logits[b, i]`` puts (nearly) all mass on ``answer[b, i]``; ``quality_logits`` is ``quality``
    ``[B, L]`` for every input. Every call is counted.
    """

    def __init__(self, answer: torch.Tensor, quality: torch.Tensor, vocab: int = 6) -> None:
        super().__init__()
        self.answer, self.quality = answer, quality
        self.config = types.SimpleNamespace(
            vocab_size=vocab, quality_head=True, mask_token_id=vocab - 1, max_length=64
        )
        self.calls = 0
        self.inputs: list[torch.Tensor] = []

    def forward(self, input_ids: torch.Tensor, **_: object) -> ProsecoDiTOutput:
        self.calls += 1
        self.inputs.append(input_ids.clone())
        logits = torch.full((*input_ids.shape, self.config.vocab_size), -50.0)
        rows = self.answer[: input_ids.shape[0], : input_ids.shape[1]]
        logits.scatter_(-1, rows.unsqueeze(-1), 50.0)
        quality = self.quality[: input_ids.shape[0], : input_ids.shape[1]]
        return ProsecoDiTOutput(logits=logits, quality_logits=quality.clone())


def _bce(logit: float, target: int) -> float:
    """-log sigmoid(logit) for target 1, -log(1 - sigmoid(logit)) for target 0."""
    return math.log1p(math.exp(-logit)) if target else math.log1p(math.exp(logit))


# --- (a) the head's target and the loss ---------------------------------------------------------


def test_target_is_token_equals_clean_token_and_bce_matches_hand_value() -> None:
    x0 = torch.tensor([[0, 1, 2, 3], [1, 1, 2, 2]])
    xt = torch.tensor([[MASK, MASK, MASK, 3], [1, MASK, 2, MASK]])
    # the model's samples: right at (0, 0), (0, 2), (1, 3); wrong at (0, 1) and (1, 1)
    answer = torch.tensor([[0, 4, 2, 3], [1, 0, 2, 2]])
    quality = torch.tensor([[2.0, -1.0, 0.5, 0.3], [0.1, 0.7, -0.2, -3.0]])
    fill = torch.tensor([[True, True, False, False], [False, True, False, True]])
    model = ToyQuality(answer, quality)
    out = prism_loss(model, x0, mask_id=MASK, t=torch.tensor([0.5, 0.5]), xt=xt, fill=fill,
                     config=LossConfig(mdm_weight=0.5))  # fmt: skip
    # filled input: samples at the filled positions only; (0, 2) stays masked
    assert out.y.tolist() == [[0, 4, MASK, 3], [1, 0, 2, 2]]
    targets = (out.y == x0) & fill
    assert targets.tolist() == [[True, False, False, False], [False, False, False, True]]
    hand = [_bce(2.0, 1), _bce(-1.0, 0), _bce(0.7, 0), _bce(-3.0, 1)]
    assert out.corrector_terms[fill].tolist() == pytest.approx(hand, rel=1e-5)
    assert float(out.corrector_loss) == pytest.approx(sum(hand) / 4, rel=1e-5)
    assert float(out.corrector_loss) == pytest.approx(1.1479908, rel=1e-5)
    assert bool((out.corrector_terms[~fill] == 0).all())  # unfilled positions carry no BCE
    assert float(out.loss) == pytest.approx(float(out.corrector_loss) + 0.5 * float(out.mdm_loss))
    assert float(out.quality_accuracy) == 0.5  # (0,0), (0,1) right; (1,1), (1,3) wrong
    assert float(out.proposal_error_rate) == 0.5  # 2 of 4 samples wrong
    assert int(out.num_filled) == 4
    assert model.calls == 2  # pass 1 on xt, pass 2 on the filled input
    assert torch.equal(model.inputs[0], xt) and torch.equal(model.inputs[1], out.y)


def test_drawn_fill_positions_are_masked_loss_positions() -> None:
    masked = torch.tensor([[1, 1, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0], [0] * 6], dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    chosen = fill_positions(masked, 2, gen)
    assert chosen.sum(dim=1).tolist() == [2, 1, 0]  # min(fill, masked) per row
    assert not bool((chosen & ~masked).any())


def test_prism_loss_refuses_a_model_without_head() -> None:
    from proseco.errors import ConfigError

    cfg = ProsecoDiTConfig.from_preset("cpu-tiny", vocab_size=6, max_length=8, mask_token_id=MASK,
                                       hidden_size=32, num_heads=2, num_layers=1, cond_dim=16)  # fmt: skip
    with pytest.raises(ConfigError, match="quality head"):
        prism_loss(ProsecoDiT(cfg), torch.zeros(2, 8, dtype=torch.long), mask_id=MASK)


def _tiny_config(**kw: object) -> ProsecoDiTConfig:
    return ProsecoDiTConfig.from_preset(
        "cpu-tiny", vocab_size=6, max_length=8, mask_token_id=MASK, hidden_size=32,
        num_heads=2, num_layers=1, cond_dim=16, dropout=0.0, **kw,
    )  # fmt: skip


def test_gradients_reach_head_and_backbone_and_two_backward_matches() -> None:
    torch.manual_seed(0)
    model = ProsecoDiT(_tiny_config(quality_head=True))
    x0 = torch.randint(0, 5, (4, 8))

    def grads(two: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        gen = torch.Generator().manual_seed(1)
        out = prism_loss(model, x0, mask_id=MASK, generator=gen, prism_fill=3,
                         backward_fn=(lambda v: v.backward()) if two else None)  # fmt: skip
        if not two:
            out.loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    one, two = grads(False), grads(True)
    assert one.keys() == two.keys()
    assert any(n.startswith("quality_head.out") for n in one)
    assert any(n.startswith("embed_tokens") for n in one)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6), name


# --- (d) checkpoints -------------------------------------------------------------------------------


def test_head_output_is_one_call_with_logits_first() -> None:
    torch.manual_seed(0)
    model = ProsecoDiT(_tiny_config(quality_head=True)).eval()
    x = torch.randint(0, 6, (2, 8))
    out = model(x)
    assert out.logits.shape == (2, 8, 6) and out.quality_logits.shape == (2, 8)
    assert out[0] is out.logits  # every caller that reads [0] / .logits is unchanged
    logits, quality = model(x, return_dict=False)
    assert torch.equal(logits, out.logits) and torch.equal(quality, out.quality_logits)


def test_old_checkpoint_loads_and_mdm_checkpoint_loads_into_head_config(tmp_path, caplog) -> None:
    import logging

    from proseco.pretrained import load_model
    from proseco.sampling import sample

    torch.manual_seed(0)
    mdm = ProsecoDiT(_tiny_config()).eval()
    mdm.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    raw = json.loads(config_file.read_text())
    raw.pop("quality_head")  # a config written before the field existed
    config_file.write_text(json.dumps(raw))
    old = load_model(tmp_path)
    assert old.config.quality_head is False and old.quality_head is None
    assert sample(old, steps=4, length=8, batch_size=2).tokens.shape == (2, 8)

    with caplog.at_level(logging.WARNING):
        headed = ProsecoDiT.from_pretrained(tmp_path, quality_head=True).eval()
    assert not [r for r in caplog.records if "quality_head" in r.getMessage()]
    x = torch.randint(0, 6, (2, 8))
    out = headed(x)
    assert torch.allclose(out.logits, mdm(x).logits)  # the backbone is the MDM's
    assert out.quality_logits.shape == (2, 8)
    added = load_model(tmp_path).add_quality_head()
    assert added.config.quality_head is True and added(x).quality_logits.shape == (2, 8)


# --- (b) remasking picks the lowest-scored decoded positions -------------------------------------


def _step(active, quality, *, index, num_steps, generator=None):
    from proseco.sampling.processors import LogitsProcessor
    from proseco.sampling.unmasking import StepInfo

    return StepInfo(index=index, num_steps=num_steps, t=0.5, s=0.4, alpha_t=0.5, alpha_s=0.6,
                    active=active, mask_id=MASK, processor=LogitsProcessor(),
                    generator=generator, quality=quality)  # fmt: skip


def test_remask_picks_lowest_quality_decoded_positions_never_masks_or_prompt() -> None:
    from proseco.sampling import Prism

    # 12 positions: 2 prompt (not active), 4 decoded, 6 masked in each row
    xt = torch.tensor([[0, 1, 2, 3, 4, 0, MASK, MASK, MASK, MASK, MASK, MASK],
                       [0, 1, 2, MASK, MASK, 3, MASK, MASK, 4, MASK, MASK, 1]])  # fmt: skip
    active = torch.ones_like(xt, dtype=torch.bool)
    active[:, :2] = False
    q = torch.full(xt.shape, -10.0)  # masked positions score lowest: must never be picked
    q[:, :2] = -100.0  # so does the prompt
    q[0, 2:6] = torch.tensor([0.5, -2.0, 1.0, -1.0])  # lowest two decoded: 3 and 5
    q[1, [2, 5, 8, 11]] = torch.tensor([0.0, -1.0, -1.0, -1.0])  # tie: lower index first
    logits = torch.zeros(2, 12, 6)
    logits[..., MASK] = float("-inf")
    # N = 10 editable, T = 5, step 2: target ceil(10 * 3 / 5) = 6 decoded after the step;
    # D = 4 decoded, r = 2 (D > r, D < N - r): 2 remasked, 6 - (4 - 2) = 4 revealed
    step = _step(active, q, index=2, num_steps=5, generator=torch.Generator().manual_seed(0))
    out = Prism(eta=0.0, num_remask=2, step_on=0.0)(logits, xt, step)
    assert out.remask.nonzero().tolist() == [[0, 3], [0, 5], [1, 5], [1, 8]]
    revealed = torch.zeros_like(active)
    revealed[out.rows, out.cols] = True
    assert revealed.sum(dim=1).tolist() == [4, 4]
    assert not bool((revealed & (xt != MASK)).any())  # reveals only masked positions
    assert not bool((out.remask & ~active).any()) and not bool((out.remask & (xt == MASK)).any())


def test_remask_schedule_window_and_caps() -> None:
    from proseco.sampling import Prism

    xt = torch.tensor([[1, 2, 3, 4, MASK, MASK, MASK, MASK]])
    active = torch.ones_like(xt, dtype=torch.bool)
    q = torch.arange(8, dtype=torch.float32)[None]
    logits = torch.zeros(1, 8, 6)
    prism = Prism(eta=0.0, num_remask=1, step_on=0.5, step_off=0.75)
    # T = 4: remasking only on step 2 (0.5 * 4 <= k < 0.75 * 4)
    assert [prism.remasking_on(_step(active, q, index=k, num_steps=4)) for k in range(4)] == [
        False, False, True, False,
    ]  # fmt: skip
    assert Prism(eta=0.0, num_remask=1, step_on=0.5)(logits, xt, _step(active, q, index=1,
                 num_steps=4)).remask is None  # fmt: skip
    out = prism(logits, xt, _step(active, q, index=2, num_steps=4))
    assert out.remask.nonzero().tolist() == [[0, 0]]  # quality 0 is the lowest
    assert out.count == 3  # target 6 = (4 - 1) + 3
    # the last step never remasks (D < N - r fails) and reveals every mask: no fill call
    last = Prism(eta=0.0, num_remask=1, step_on=0.0)
    xt_last = torch.tensor([[1, 2, 3, 4, 1, 2, MASK, MASK]])
    out = last(logits, xt_last, _step(active, q, index=3, num_steps=4))
    assert out.remask is None and out.count == 2


def test_eta_draws_binomial_counts_with_the_public_cap() -> None:
    from proseco.sampling import Prism

    decoded = torch.zeros(4000, 100, dtype=torch.bool)
    decoded[:, :50] = True  # D = 50 of N = 100, T = 10: a_t = 0.5, a_s = 0.6
    total = torch.full((4000,), 100)
    active = torch.ones_like(decoded)
    step = _step(active, None, index=9, num_steps=10, generator=torch.Generator().manual_seed(0))
    r = Prism(eta=0.1, step_on=0.0).num_to_remask(decoded, total, step).double()
    assert abs(float(r.mean()) - 50 * 0.1) < 0.1  # sigma = min(0.1, 0.4 / 0.5) = 0.1
    r = Prism(eta=1.0, step_on=0.0).num_to_remask(decoded, total, step).double()
    assert abs(float(r.mean()) - 50 * 0.8) < 0.1  # capped at (1 - a_s) / a_t = 0.8


def test_sample_remasks_the_lowest_quality_token_each_step() -> None:
    from proseco.sampling import Prism, sample

    length, steps = 8, 4
    answer = torch.tensor([[1, 2, 3, 4, 1, 2, 3, 4]])
    quality = torch.tensor([[3.0, -5.0, 1.0, 2.0, 0.0, 4.0, -1.0, 5.0]])
    model = ToyQuality(answer, quality)
    out = sample(model, steps=steps, length=length, batch_size=1, return_history=True,
                 unmasking=Prism(eta=0.0, num_remask=1, step_on=0.0),
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert not bool((out.tokens == MASK).any())
    before, remasks = out.history.initial, 0
    for record in out.history.records:
        decoded = before != MASK
        if bool(record.remasked.any()):
            picked = record.remasked.nonzero()[:, 1].tolist()
            lowest = int(quality[0].masked_fill(~decoded[0], float("inf")).argmin())
            assert picked == [lowest]
            remasks += 1
        before = record.tokens
    assert remasks == 2  # steps 1 and 2 of 4 (step 0 has nothing decoded, step 3 is the last)
    assert out.model_calls == steps


# --- (c) NFEs: the head costs no model call ------------------------------------------------------


@pytest.mark.parametrize("steps", [4, 8])
def test_nfe_equals_the_same_schedule_without_remasking(steps: int) -> None:
    from proseco.sampling import Confidence, Guidance, Prism, sample
    from proseco.sampling.testing import Spy

    torch.manual_seed(0)
    cfg = _tiny_config(quality_head=True, num_classes=2)
    model = ProsecoDiT(cfg).eval()

    def run(unmasking, guidance=None):
        spy = Spy(model)
        out = sample(spy, steps=steps, length=8, batch_size=3, unmasking=unmasking,
                     guidance=guidance, generator=torch.Generator().manual_seed(1))  # fmt: skip
        return out, len(spy.calls)

    remasking, calls = run(Prism(eta=0.0, num_remask=2, step_on=0.0))
    plain, plain_calls = run(Prism(eta=0.0, num_remask=0))
    conf, conf_calls = run(Confidence(score="random"))
    assert remasking.model_calls == calls == steps  # one evaluation per step, head included
    assert remasking.nfe == plain.nfe == conf.nfe == steps
    assert plain_calls == conf_calls == steps
    guided, guided_calls = run(Prism(eta=0.0, num_remask=2, step_on=0.0), Guidance(gamma=2.0))
    assert guided.nfe == guided_calls == 2 * steps  # guidance: two evaluations per step


def test_prism_needs_a_model_with_head_and_parses_from_spec() -> None:
    from proseco.errors import ConfigError
    from proseco.sampling import Prism, SamplingConfig, sample

    with pytest.raises(ConfigError, match="quality head"):
        sample(ProsecoDiT(_tiny_config()).eval(), steps=2, length=8, unmasking="prism")
    config = SamplingConfig(steps=8, unmasking="prism:eta=0.02,num_remask=1,order=confidence")
    assert config.unmasking == Prism(eta=0.02, num_remask=1, order="confidence")
    assert SamplingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="step_on"):
        Prism(step_on=0.8, step_off=0.5)
    from proseco.sampling import Corrector

    headed = ProsecoDiT(_tiny_config(quality_head=True)).eval()
    with pytest.raises(ConfigError, match="corrector"):
        sample(headed, steps=2, length=8, unmasking="prism", corrector=Corrector(1))


def test_head_only_training_leaves_the_backbone_without_gradient() -> None:
    torch.manual_seed(0)
    model = ProsecoDiT(_tiny_config(quality_head=True))
    for name, param in model.named_parameters():  # what loss.prism_backbone: false does
        param.requires_grad_(name.startswith("quality_head."))
    out = prism_loss(model, torch.randint(0, 5, (4, 8)), mask_id=MASK, prism_fill=3,
                     generator=torch.Generator().manual_seed(0),
                     backward_fn=lambda v: v.backward())  # fmt: skip
    assert torch.isfinite(out.loss)
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("quality_head.") for n in grads)
