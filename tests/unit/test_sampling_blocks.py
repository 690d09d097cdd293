"""Block (semi-autoregressive, LLaDA-style) decoding with prompts, padding and EOS stops."""

from __future__ import annotations

import pytest
import torch

from proseco.sampling import Confidence, Corrector, sample
from proseco.sampling.testing import OracleModel, Spy, ToyDenoiser
from proseco.schedules import PolynomialSchedule

V, MASK, EOS, PAD = 12, 11, 10, 0


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def llada_split(masks: int, steps: int) -> list[int]:
    """LLaDA's get_num_transfer_tokens: masks // steps each, the remainder on the first steps."""
    base, rem = divmod(masks, steps)
    return [base + 1 if i < rem else base for i in range(steps)]


@pytest.mark.parametrize("block_length, steps", [(8, 3), (4, 4), (16, 5), (8, 16)])
def test_confidence_reveals_llada_counts_block_by_block(block_length, steps):
    model = ToyDenoiser(vocab_size=V).eval()
    out = sample(
        model, mask_id=MASK, batch_size=2, length=16, steps=steps * (16 // block_length),
        block_length=block_length, unmasking="confidence", return_history=True, generator=gen(),
        prompt=torch.tensor([1, 2]),
    )  # fmt: skip
    steps_records = [r for r in out.history if r.kind == "step"]
    counts = [int(r.unmasked[0].sum()) for r in steps_records]
    expected = [c for c in llada_split(block_length, steps) if c > 0] * (16 // block_length)
    assert counts == expected  # blocks end as soon as they are full
    for r in steps_records:  # only the current block is ever revealed
        start = 2 + r.block * block_length
        cols = r.unmasked.any(0).nonzero().flatten()
        assert ((cols >= start) & (cols < start + block_length)).all()


def test_a_block_length_that_does_not_divide_the_length_makes_the_last_block_shorter():
    """D8: 10 tokens in blocks of 4 are blocks of 4, 4 and 2, each with its share of the steps."""
    out = sample(
        ToyDenoiser(vocab_size=V).eval(), mask_id=MASK, batch_size=2, length=10, steps=6,
        block_length=4, unmasking="confidence", return_history=True, generator=gen(),
        prompt=torch.tensor([1, 2]),
    )  # fmt: skip
    records = [r for r in out.history if r.kind == "step"]
    per_block = [sum(int(r.unmasked[0].sum()) for r in records if r.block == b) for b in range(3)]
    assert per_block == [4, 4, 2]
    assert [int(r.unmasked[0].sum()) for r in records] == [2, 2, 2, 2, 1, 1]
    for r in records:  # only the current block is ever revealed
        cols = r.unmasked.any(0).nonzero().flatten()
        assert ((cols >= 2 + 4 * r.block) & (cols < min(2 + 4 * r.block + 4, 12))).all()
    assert not (out.tokens == MASK).any() and out.generated.shape == (2, 10)


@pytest.mark.parametrize(
    "schedule, expected",
    [
        (None, [3, 3, 2, 2]),  # log-linear: masks left ~ 10 t, i.e. LLaDA's even split
        (PolynomialSchedule(power=2.0), [5, 3, 2]),  # left ~ 10 t^2: floor 5.6, 2.2, 0.5
    ],
)
def test_schedule_counts_follow_the_fraction_of_masks_left(schedule, expected):
    out = sample(
        ToyDenoiser(vocab_size=V).eval(), mask_id=MASK, length=10, steps=4, schedule=schedule,
        unmasking=Confidence(counts="schedule"), return_history=True, generator=gen(),
    )  # fmt: skip
    counts = [int(r.unmasked.sum()) for r in out.history if r.kind == "step"]
    assert counts == expected


def test_ragged_prompts_are_left_padded_with_an_attention_mask_and_never_change():
    spy = Spy(ToyDenoiser(vocab_size=V).eval())
    out = sample(
        spy, mask_id=MASK, length=8, steps=4, block_length=4, prompt=[[1, 2, 3], [4]],
        pad_id=PAD, corrector=Corrector(2), unmasking="confidence", generator=gen(),
    )  # fmt: skip
    assert out.prompt_length == 3
    assert out.tokens[:, :3].tolist() == [[1, 2, 3], [PAD, PAD, 4]]
    expected_mask = torch.tensor([[1] * 11, [0, 0] + [1] * 9])
    assert all(torch.equal(kw["attention_mask"], expected_mask) for _, kw in spy.calls)
    assert out.generated.shape == (2, 8) and not (out.tokens == MASK).any()


def test_prompt_tensor_with_attention_mask_and_repeated_single_prompt():
    ids = torch.tensor([[PAD, 5, 6]])
    out = sample(
        ToyDenoiser(vocab_size=V).eval(), mask_id=MASK, batch_size=3, length=4, steps=2,
        prompt=ids, prompt_attention_mask=torch.tensor([[0, 1, 1]]), generator=gen(),
    )  # fmt: skip
    assert out.tokens.shape == (3, 7) and (out.tokens[:, :3] == ids).all()
    with pytest.raises(ValueError, match="left-padded"):
        sample(
            ToyDenoiser(vocab_size=V), mask_id=MASK, length=4, steps=2, prompt=ids,
            prompt_attention_mask=torch.tensor([[1, 0, 1]]),
        )  # fmt: skip


def test_corrector_rewrites_up_to_the_block_end_with_unmasked_context():
    spy = Spy(ToyDenoiser(vocab_size=V).eval())
    out = sample(
        spy, mask_id=MASK, batch_size=2, length=12, steps=6, block_length=4, prompt=[1, 2],
        corrector=Corrector(steps=2, update="sample"), return_history=True, generator=gen(),
    )  # fmt: skip
    corrector_inputs = [x for x, _ in spy.calls if not (x == MASK).any()]
    assert len(corrector_inputs) == out.corrector_nfe > 0  # corrector inputs hold no mask
    for r in out.history:
        end = 2 + 4 * (r.block + 1)
        assert not r.corrected[:, end:].any() and not r.corrected[:, :2].any()
    assert any(r.corrected[:, 2:6].any() for r in out.history if r.block > 0)  # earlier blocks


def test_proseco_fixes_a_wrong_denoiser_in_block_mode_with_ragged_prompts():
    generated = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    prompts = [[1, 2, 3], [4]]
    rows = [[1, 2, 3], [PAD, PAD, 4]]
    target = torch.cat([torch.tensor(rows), generated.expand(2, -1)], dim=1)
    model = OracleModel(target, V, MASK)
    kwargs = dict(
        mask_id=MASK, length=8, steps=4, block_length=4, prompt=prompts, pad_id=PAD,
        unmasking="confidence", generator=gen(),
    )  # fmt: skip
    mdlm = sample(model, **kwargs)
    assert not (mdlm.generated == generated).any()
    proseco = sample(model, corrector=Corrector(steps=2, every=2), **kwargs)
    assert torch.equal(proseco.tokens, target)
    ancestral = sample(model, corrector=Corrector(steps=2), **{**kwargs, "unmasking": "ancestral"})
    assert torch.equal(ancestral.tokens, target)


def test_rows_stop_at_eos_and_are_never_edited_again():
    # row 0 ends its first block with EOS, row 1 never does
    target = torch.tensor([[3, 1, 4, EOS, 5, 9, 2, 6], [3, 1, 4, 1, 5, 9, 2, 6]])
    spy = Spy(OracleModel(target, V, MASK))
    out = sample(
        spy, mask_id=MASK, length=8, steps=4, block_length=4, batch_size=2,
        unmasking="confidence", corrector=Corrector(steps=1), eos_id=EOS, stop_at_eos=True,
        return_history=True, generator=gen(),
        shrink_batch=False,  # this oracle knows each row by its place in the batch
    )  # fmt: skip
    assert out.tokens.tolist() == [[3, 1, 4, EOS, EOS, EOS, EOS, EOS], target[1].tolist()]
    eos_step = next(i for i, r in enumerate(out.history) if r.kind == "eos")
    for r in out.history.records[eos_step + 1 :]:
        assert torch.equal(r.tokens[0], out.tokens[0])
    # everything stops when every row has stopped
    both = sample(
        OracleModel(target[0], V, MASK), mask_id=MASK, length=8, steps=4, block_length=4,
        batch_size=2, unmasking="confidence", corrector=Corrector(1), eos_id=EOS,
        stop_at_eos=True,
    )  # fmt: skip
    assert both.num_steps == 2 and (both.tokens[:, 3:] == EOS).all()


def test_corrector_step_counter_runs_across_blocks():
    # every=3 with 2 steps per block: fires at global steps 3 and 6 (the research code, which
    # counts per block, would never fire)
    out = sample(
        ToyDenoiser(vocab_size=V).eval(), mask_id=MASK, length=12, steps=6, block_length=4,
        corrector=Corrector(1, every=3), return_history=True, generator=gen(),
        unmasking="confidence",
    )  # fmt: skip
    assert [r.step for r in out.history if r.corrector_fired] == [3, 6]
