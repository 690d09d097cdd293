"""The sampling loop: MDLM exactness, ProSeCo self-correction, NFE accounting, invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proseco.sampling import Confidence, Corrector, Guidance, ReMDM, Threshold, sample
from proseco.sampling.testing import OracleModel, ToyDenoiser
from proseco.schedules import LogLinearSchedule

V, MASK = 12, 11


class Counting(torch.nn.Module):
    """Counts forward calls and keeps their inputs."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.calls = 0
        self.inputs: list[torch.Tensor] = []
        self.kwargs: list[dict] = []

    def forward(self, input_ids, **kwargs):
        self.calls += 1
        self.inputs.append(input_ids.clone())
        self.kwargs.append(kwargs)
        return self.inner(input_ids, **kwargs)


def toy(**kwargs) -> Counting:
    return Counting(ToyDenoiser(vocab_size=V, **kwargs).eval())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_mdlm(model, batch, length, steps, eps=1e-5, seed=0) -> torch.Tensor:
    """MDLM written plainly: reveal w.p. (a_s - a_t)/(1 - a_t), token by Gumbel-max, reuse logits."""
    g = gen(seed)
    schedule = LogLinearSchedule()
    times = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64)
    alphas = schedule.alpha(times).tolist()
    x = torch.full((batch, length), MASK)
    logits = None
    for k in range(steps):
        if logits is None:
            logits = model(x).clone()
            logits[..., MASK] = float("-inf")
        p = (alphas[k + 1] - alphas[k]) / (1.0 - alphas[k])
        u = torch.rand(x.shape, generator=g)
        rows, cols = ((x == MASK) & (u < p)).nonzero(as_tuple=True)
        if rows.numel():
            lp = torch.log_softmax(logits[rows, cols], -1)
            noise = -torch.log(-torch.log(torch.rand(lp.shape, generator=g)))
            x[rows, cols] = (lp + noise).argmax(-1)
            logits = None
    if (x == MASK).any():
        logits = model(x).clone()
        logits[..., MASK] = float("-inf")
        rows, cols = (x == MASK).nonzero(as_tuple=True)
        lp = torch.log_softmax(logits[rows, cols], -1)
        noise = -torch.log(-torch.log(torch.rand(lp.shape, generator=g)))
        x[rows, cols] = (lp + noise).argmax(-1)
    return x


@pytest.mark.parametrize("steps", [1, 5, 40])
def test_zero_corrector_steps_is_exactly_mdlm(steps):
    model = toy()
    expected = reference_mdlm(model, 3, 10, steps)
    plain = sample(model, mask_id=MASK, batch_size=3, length=10, steps=steps, generator=gen())
    zero = sample(
        model, mask_id=MASK, batch_size=3, length=10, steps=steps, generator=gen(),
        corrector=Corrector(steps=0),
    )  # fmt: skip
    assert torch.equal(plain.tokens, expected)
    assert torch.equal(zero.tokens, expected)
    assert zero.corrector_nfe == 0 and zero.nfe == plain.nfe


def test_logits_are_reused_only_while_nothing_changes():
    model = toy()
    out = sample(model, mask_id=MASK, batch_size=1, length=4, steps=64, generator=gen())
    assert out.nfe == model.calls < 64
    # every call sees a different input: no call was wasted on an unchanged sequence
    assert all(not torch.equal(a, b) for a, b in zip(model.inputs, model.inputs[1:]))


def test_time_conditioned_models_get_timesteps_and_no_reuse():
    model = toy(time_conditioning=True)
    out = sample(
        model, mask_id=MASK, batch_size=2, length=4, steps=20, generator=gen(), shrink_batch=False
    )
    assert model.calls == out.denoiser_nfe >= 20
    first = model.kwargs[0]["timesteps"]
    assert first.shape == (2,) and torch.allclose(first, torch.ones(2))


def test_final_fill_leaves_no_mask_when_the_grid_stops_early():
    # eps = 0.5: the last step ends at alpha ~ 0.5, so about half the tokens are still masked
    model = toy()
    out = sample(model, mask_id=MASK, batch_size=4, length=16, steps=2, eps=0.5, generator=gen())
    assert not (out.tokens == MASK).any()
    assert out.denoiser_nfe == model.calls == 3


def test_same_seed_same_tokens_and_different_seed_different_tokens():
    kwargs = dict(
        mask_id=MASK, batch_size=4, length=12, steps=6, corrector=Corrector(2, update="sample")
    )
    a = sample(toy(), generator=gen(7), **kwargs).tokens
    b = sample(toy(), generator=gen(7), **kwargs).tokens
    c = sample(toy(), generator=gen(8), **kwargs).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mdlm_returns_wrong_tokens_and_proseco_corrects_them():
    target = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    model = OracleModel(target, V, MASK)
    mdlm = sample(model, mask_id=MASK, batch_size=2, length=12, steps=6, generator=gen())
    assert not (mdlm.tokens == target).any()
    for every in (1, 2, 3):  # every=1: right from the start; 2, 3: wrong tokens get rewritten
        proseco = sample(
            model, mask_id=MASK, batch_size=2, length=12, steps=6, generator=gen(),
            corrector=Corrector(steps=2, every=every),
        )  # fmt: skip
        assert torch.equal(proseco.tokens, target.expand(2, -1))
        assert (proseco.num_corrected.sum() > 0) == (every > 1)


@pytest.mark.parametrize("unmasking", ["confidence", "threshold"])
def test_proseco_corrects_with_confidence_unmasking(unmasking):
    target = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    model = OracleModel(target, V, MASK)
    kwargs = dict(mask_id=MASK, batch_size=1, length=8, steps=4, unmasking=unmasking)
    assert not (sample(model, **kwargs).tokens == target).any()
    fixed = sample(model, corrector=Corrector(steps=1), **kwargs)
    assert torch.equal(fixed.tokens[0], target)


def test_early_exit_changes_no_output_and_saves_calls():
    target = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    outs = {}
    for early in (True, False):
        model = Counting(OracleModel(target, V, MASK))
        out = sample(
            model, mask_id=MASK, batch_size=2, length=8, steps=4, generator=gen(),
            corrector=Corrector(steps=5, early_exit=early),
        )  # fmt: skip
        assert out.model_calls == model.calls
        outs[early] = out
    assert torch.equal(outs[True].tokens, outs[False].tokens)
    assert outs[True].corrector_nfe < outs[False].corrector_nfe == 4 * 5


def test_corrector_fires_on_the_documented_steps():
    out = sample(
        toy(), mask_id=MASK, batch_size=2, length=8, steps=10, generator=gen(),
        corrector=Corrector(steps=1, every=3, start=4), return_history=True,
    )  # fmt: skip
    fired = [r.step for r in out.history if r.kind == "step" and r.corrector_fired]
    assert fired == [6, 9]
    every_step = sample(
        toy(), mask_id=MASK, length=8, steps=5, corrector=Corrector(steps=1, every=1),
        return_history=True, generator=gen(),
    )  # fmt: skip
    assert all(r.corrector_fired for r in every_step.history if r.kind == "step")


def test_history_renders_unmasked_and_corrected_tokens():
    target = torch.tensor([3, 1, 4, 1])
    out = sample(
        OracleModel(target, V, MASK), mask_id=MASK, length=4, steps=4, generator=gen(),
        corrector=Corrector(steps=1, every=2), return_history=True,
    )  # fmt: skip
    text = out.history.render()
    assert "[" in text and "{" in text and text.count("\n") == len(out.history) - 1
    assert out.history.corrections().sum() == out.num_corrected.sum()
    colored = out.history.render(lambda ids: "abcdefghijkl"[ids[0]], color=True)
    assert "\033[" in colored


# ----------------------------------------------------------------------------- invariants
def check_history(out, mask_id: int) -> None:
    """The corrector never unmasks nor re-masks: the mask set only changes by reveal / remask."""
    previous = out.history.initial
    for record in out.history:
        before, after = previous == mask_id, record.tokens == mask_id
        if record.kind == "step":
            assert not (record.corrected & before).any()  # corrected positions were unmasked
            assert torch.equal(after, (before & ~record.unmasked) | record.remasked)
        assert torch.equal(record.unmasked, before & ~after & record.unmasked)
        previous = record.tokens


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    unmasking=st.sampled_from(["ancestral", "confidence", "threshold", "remdm"]),
    corrector_steps=st.integers(0, 3),
    every=st.integers(1, 3),
    update=st.sampled_from(["argmax", "sample", "top_k_positions:positions=2"]),
    blocks=st.booleans(),
    prompt=st.sampled_from([None, "same", "ragged"]),
    guidance=st.sampled_from([None, 2.0, 2.0j]),  # 2.0j: gamma 2 without guided corrector calls
    temperature=st.sampled_from([0.0, 1.0]),
    top_p=st.sampled_from([1.0, 0.8]),
    seed=st.integers(0, 2**16),
)
def test_invariants_hold_for_every_combination(
    unmasking, corrector_steps, every, update, blocks, prompt, guidance, temperature, top_p, seed
):
    length = 8
    corrector = Corrector(corrector_steps, every=every, update=update)
    kwargs = dict(
        mask_id=MASK, length=length, steps=4, block_length=4 if blocks else None,
        corrector=corrector, temperature=temperature, top_p=top_p, return_history=True,
        batch_size=2,
    )  # fmt: skip
    if unmasking == "remdm":
        kwargs["unmasking"] = ReMDM("rescale", eta=0.5)
    else:
        kwargs["unmasking"] = unmasking
    if guidance is not None:
        in_corrector = not isinstance(guidance, complex)
        kwargs["guidance"] = Guidance(gamma=2.0, condition=1, in_corrector=in_corrector)
    prompts = {None: None, "same": torch.tensor([[1, 2, 3], [4, 5, 6]]), "ragged": [[1, 2, 3], [4]]}
    kwargs["prompt"] = prompts[prompt]
    model = toy(num_classes=2)
    out = sample(model, generator=gen(seed), **kwargs)
    tokens = out.tokens
    assert tokens.shape == (2, out.prompt_length + length)
    assert not (tokens == MASK).any()  # no mask left
    assert out.model_calls == model.calls  # exact NFEs: per call and per row
    assert out.nfe == out.denoiser_nfe + out.corrector_nfe
    assert out.row_forwards == sum(x.shape[0] for x in model.inputs)
    if prompt == "same":  # the prompt never changes
        assert torch.equal(tokens[:, :3], prompts["same"])
    if prompt == "ragged":
        assert tokens[0, :3].tolist() == [1, 2, 3] and tokens[1, 2].item() == 4
    check_history(out, MASK)  # the corrector never unmasks nor re-masks
    again = sample(toy(num_classes=2), generator=gen(seed), **kwargs)
    assert torch.equal(tokens, again.tokens)  # same seed, same tokens
    if corrector_steps == 0:  # S = 0 is the plain sampler
        assert out.corrector_nfe == 0
        plain = sample(toy(num_classes=2), generator=gen(seed), **{**kwargs, "corrector": None})
        assert torch.equal(tokens, plain.tokens)
    elif corrector.deterministic:  # early exit changes nothing
        full = Corrector(corrector_steps, every=every, update=update, early_exit=False)
        no_exit = sample(toy(num_classes=2), generator=gen(seed), **{**kwargs, "corrector": full})
        assert torch.equal(tokens, no_exit.tokens)
        assert no_exit.corrector_nfe >= out.corrector_nfe


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(length=0), "length"),
        (dict(block_length=4, steps=3), "split evenly"),
        (dict(block_length=3, steps=4), "split evenly"),  # 3 blocks: 3 + 3 + 2
        (dict(length=60, prompt=list(range(1, 10))), "maximum length"),
        (dict(unmasking="nope"), "unknown unmasking"),
        (dict(remasking=ReMDM()), r"unmasking=proseco.ReMDM"),
        (dict(temprature=0.5), "did you mean 'temperature'"),
        (dict(temperature=float("inf")), "temperature must be a finite"),
        (dict(generator=123), "torch.Generator"),
        (dict(prompt=torch.tensor([1.0, 2.0])), "integer token ids"),
        (dict(stop_at_eos=True), "eos_id"),
        (dict(mask_id=V), "vocabulary"),
        (dict(prompt=[1, MASK]), "mask id"),
        (dict(eps=0.0), "eps"),
        (dict(corrector=3), "Corrector"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    base = dict(mask_id=MASK, length=8, steps=4)
    with pytest.raises(ValueError, match=match):
        sample(toy(max_length=64), **{**base, **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(steps=-1),
        dict(every=0),
        dict(update="beam"),
        dict(update="top_k_positions:positions=0"),
        dict(update="top_k_positions:k=2"),
    ],
)
def test_bad_corrector_settings_raise(kwargs):
    with pytest.raises(ValueError):
        Corrector(**kwargs)


def test_strategy_objects_are_accepted():
    out = sample(
        toy(), mask_id=MASK, length=8, steps=2, unmasking=Confidence(counts="schedule"),
        generator=gen(),
    )  # fmt: skip
    assert not (out.tokens == MASK).any()
    out = sample(toy(), mask_id=MASK, length=8, steps=8, unmasking=Threshold(0.0), generator=gen())
    assert out.num_steps == 1  # threshold 0 reveals everything at once
