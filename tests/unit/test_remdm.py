"""ReMDM remasking: sigma schedules pinned by hand, one-step transition law, MDLM at sigma = 0."""

from __future__ import annotations

import pytest
import torch

from proseco.sampling import LogitsProcessor, ReMDM, StepInfo, sample
from proseco.sampling.testing import ToyDenoiser
from proseco.schedules import LogLinearSchedule

V, MASK = 12, 11


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def info(t, s, alpha_t, alpha_s, xt, scores=None, seed=0) -> StepInfo:
    return StepInfo(
        index=0, num_steps=1, t=t, s=s, alpha_t=alpha_t, alpha_s=alpha_s,
        active=torch.ones_like(xt, dtype=torch.bool), mask_id=3, processor=LogitsProcessor(),
        generator=gen(seed), scores=scores,
    )  # fmt: skip


@pytest.mark.parametrize(
    "remdm, expected",
    [
        (ReMDM("cap", eta=0.02), 0.02),  # min(eta, (1 - 0.6) / 0.5 = 0.8)
        (ReMDM("cap", eta=0.9), 0.8),
        (ReMDM("rescale", eta=0.5), 0.4),  # eta * min(1, 0.8)
        (ReMDM("loop", eta=0.02), 0.02),
    ],
)
def test_sigma_schedules_match_hand_computed_values(remdm, expected):
    assert remdm.sigma(0.5, 0.6, None, None) == pytest.approx(expected)


def test_conf_sigma_is_a_softmax_of_minus_decode_probability_over_decoded_positions():
    scores = torch.tensor([[-0.9, -0.5, float("-inf")]])
    decoded = torch.tensor([[True, True, False]])
    sigma = ReMDM("conf").sigma(0.5, 0.6, decoded, scores)
    # softmax([-0.9, -0.5]) = [0.401312, 0.598688], times sigma_max = 0.8
    assert torch.allclose(sigma, torch.tensor([[0.321050, 0.478950, 0.0]]), atol=1e-5)
    none_decoded = ReMDM("conf").sigma(0.5, 0.6, torch.zeros_like(decoded), scores)
    assert (none_decoded == 0).all()


def test_loop_phases_follow_the_public_code():
    remdm = ReMDM("loop", eta=0.02, t_on=0.55, t_off=0.05, alpha_on=0.9)
    xt = torch.zeros(1, 2, dtype=torch.long)
    mdlm_phase = remdm.alphas(info(0.8, 0.7, 0.0, 0.0, xt))
    assert mdlm_phase == pytest.approx((0.4, 0.6, False))  # (1 - t) * 0.9 / 0.45
    assert remdm.alphas(info(0.3, 0.2, 0.0, 0.0, xt)) == (0.9, 0.9, True)
    last = remdm.alphas(info(0.04, 0.02, 0.0, 0.0, xt))
    assert last == pytest.approx((0.92, 0.96, False))  # 1 - t * 0.1 / 0.05


def public_step_law(p, alpha_t, alpha_s, sigma):
    """The public code's q(z_s) for a decoded token and for a mask (columns: tokens..., mask)."""
    decoded = torch.cat([p * 0, torch.tensor([sigma])])  # keep prob goes to the current token
    masked = torch.cat(
        [p * (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t),
         torch.tensor([(1 - alpha_s - sigma * alpha_t) / (1 - alpha_t)])]
    )  # fmt: skip
    return decoded, masked


@pytest.mark.parametrize("strategy, eta", [("cap", 0.3), ("rescale", 0.5)])
def test_one_step_transition_frequencies_match_the_public_formula(strategy, eta):
    p = torch.tensor([0.5, 0.3, 0.2])
    logits = torch.cat([p.log(), torch.tensor([float("-inf")])])
    rows = 40_000
    xt = torch.tensor([[0, 3]]).expand(rows, 2).clone()  # position 0 decoded as token 0, 1 masked
    remdm = ReMDM(strategy, eta=eta)
    alpha_t, alpha_s = 0.5, 0.7
    out = remdm(logits.expand(rows, 2, 4), xt, info(0.5, 0.3, alpha_t, alpha_s, xt))
    new = xt.clone()
    new[out.rows, out.cols] = out.tokens
    new[out.remask] = 3
    sigma = remdm.sigma(alpha_t, alpha_s, None, None)
    decoded_law, masked_law = public_step_law(p, alpha_t, alpha_s, sigma)
    decoded_law[0] = 1 - sigma
    freq0 = torch.bincount(new[:, 0], minlength=4).float() / rows
    freq1 = torch.bincount(new[:, 1], minlength=4).float() / rows
    assert torch.allclose(freq0, decoded_law, atol=0.01)
    assert torch.allclose(freq1, masked_law, atol=0.01)


def test_conf_scores_record_decode_probabilities_and_forget_remasked_tokens():
    rows = 200
    logits = torch.tensor([0.5, 0.3, 0.2, 0.0]).log().expand(rows, 4, 4)
    xt = torch.tensor([[0, 1, 3, 3]]).expand(rows, 4).clone()
    scores = torch.tensor([[-0.9, -0.2, float("-inf"), float("-inf")]]).expand(rows, 4).clone()
    out = ReMDM("conf")(logits, xt, info(0.75, 0.5, 0.25, 0.5, xt, scores))  # sigma_max = 1
    assert out.count > 0 and out.remask.any() and (out.cols >= 2).all()
    assert torch.allclose(out.scores[out.rows, out.cols], -out.probs)
    assert torch.allclose(out.probs, torch.tensor([0.5, 0.3, 0.2])[out.tokens])
    assert torch.isinf(out.scores[out.remask]).all()
    untouched = torch.ones_like(out.remask)
    untouched[out.rows, out.cols] = False
    untouched &= ~out.remask
    assert torch.equal(out.scores[untouched], scores[untouched])


@pytest.mark.parametrize("strategy", ["cap", "rescale"])
def test_zero_eta_is_exactly_mdlm(strategy):
    model = ToyDenoiser(vocab_size=V).eval()
    kwargs = dict(mask_id=MASK, batch_size=3, length=10, steps=12)
    mdlm = sample(model, generator=gen(), **kwargs)
    remdm = sample(model, generator=gen(), unmasking=ReMDM(strategy, eta=0.0), **kwargs)
    assert torch.equal(mdlm.tokens, remdm.tokens) and mdlm.nfe == remdm.nfe


@pytest.mark.parametrize("strategy", ["cap", "rescale", "conf", "loop"])
def test_full_runs_remask_and_still_return_no_mask(strategy):
    model = ToyDenoiser(vocab_size=V).eval()
    eta = 0.1 if strategy == "loop" else 0.5
    out = sample(
        model, mask_id=MASK, batch_size=4, length=16, steps=40, top_p=0.9,
        unmasking=ReMDM(strategy, eta=eta), return_history=True, generator=gen(),
        schedule=LogLinearSchedule(eps=0.0),
    )  # fmt: skip
    assert not (out.tokens == MASK).any()
    assert any(r.remasked.any() for r in out.history)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mode="nope"),
        dict(eta=1.5),
        dict(mode="loop", t_on=0.05, t_off=0.5),
        dict(mode="loop", eta=0.2, alpha_on=0.9),  # eta > (1 - 0.9) / 0.9
        dict(mode="loop", alpha_on=1.0),
    ],
)
def test_bad_remdm_settings_raise(kwargs):
    with pytest.raises(ValueError):
        ReMDM(**kwargs)


def test_loop_alpha_is_continuous_at_both_phase_changes():
    remdm = ReMDM("loop", eta=0.02, t_on=0.55, t_off=0.05, alpha_on=0.9)
    for t in (0.55, 0.05):
        assert remdm.loop_alpha(t - 1e-9) == pytest.approx(remdm.loop_alpha(t + 1e-9), abs=1e-6)
    assert remdm.loop_alpha(1.0) == 0.0 and remdm.loop_alpha(0.0) == 1.0


def test_the_step_crossing_t_on_stops_at_alpha_on_instead_of_overshooting():
    remdm = ReMDM("loop", eta=0.02, t_on=0.55, t_off=0.05, alpha_on=0.9)
    xt = torch.zeros(1, 2, dtype=torch.long)
    # T = 4: the step 0.75 -> 0.5 crosses t_on; the old code gave alpha_s = 0.5 * 2 = 1.0
    assert remdm.alphas(info(0.75, 0.5, 0.0, 0.0, xt)) == pytest.approx((0.5, 0.9, False))
    # T = 2: 1.0 -> 0.5 crosses t_on; then 0.5 -> ~0 crosses t_off into the last phase
    assert remdm.alphas(info(1.0, 0.5, 0.0, 0.0, xt)) == pytest.approx((0.0, 0.9, False))
    assert remdm.alphas(info(0.5, 1e-5, 0.0, 0.0, xt)) == pytest.approx((0.9, 0.99998, False))
    # a step that jumps over the whole hold phase ends in the last phase, without remasking
    assert remdm.alphas(info(0.6, 0.02, 0.0, 0.0, xt)) == pytest.approx((0.8, 0.96, False))


@pytest.mark.parametrize("steps", [2, 4, 8, 16, 32, 128, 1024])
def test_loop_masked_fraction_at_t_on_is_one_minus_alpha_on_for_every_grid(steps):
    remdm = ReMDM("loop", eta=0.02, t_on=0.55, t_off=0.05, alpha_on=0.9)
    batch, length = 64, 64
    out = sample(
        ToyDenoiser(vocab_size=V, max_length=length), mask_id=MASK, batch_size=batch,
        length=length, steps=steps, unmasking=remdm, return_history=True, generator=gen(),
    )  # fmt: skip
    times = torch.linspace(1.0, 1e-5, steps + 1).tolist()
    crossing = next(k for k in range(steps) if times[k] > 0.55 >= times[k + 1])
    step_records = [r for r in out.history if r.kind == "step"]
    assert len(step_records) == steps
    masked = (step_records[crossing].tokens == MASK).float().sum(dim=1).mean().item()
    assert masked == pytest.approx((1 - 0.9) * length, abs=1.0)  # within one token
    # the last phase is entered on every grid: (almost) nothing is left for the greedy fill
    before_fill = (step_records[-1].tokens == MASK).float().mean().item()
    assert before_fill < 0.005
    assert not (out.tokens == MASK).any()
