"""Compute only where it changes something: per-row corrector exit, rows leaving the batch.

``sample(shrink_batch=True)`` (the default) must give exactly the tokens of
``shrink_batch=False`` (every row in every call) for a model whose output for a row does not
depend on the other rows; :class:`RowWise` makes the toy model so by construction.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proseco.sampling import (
    Corrector,
    Guidance,
    LogitsProcessor,
    ReMDM,
    run_corrector,
    sample,
)
from proseco.sampling.testing import ToyDenoiser

V, MASK, EOS, PAD = 12, 11, 10, 0


class RowWise(torch.nn.Module):
    """Runs ``inner`` one row at a time and records the rows of every call."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.inputs: list[torch.Tensor] = []

    def forward(self, input_ids: torch.Tensor, **kwargs):
        self.inputs.append(input_ids.clone())
        batch = input_ids.shape[0]
        rows = []
        for i in range(batch):
            kw = {
                k: v[i : i + 1]
                if isinstance(v, torch.Tensor) and v.dim() and len(v) == batch
                else v
                for k, v in kwargs.items()
            }
            rows.append(self.inner(input_ids[i : i + 1], **kw))
        return torch.cat(rows)


def toy(**kwargs) -> RowWise:
    return RowWise(ToyDenoiser(vocab_size=V, **kwargs).eval())


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def both(make_model, **kwargs):
    """``(shrunk, full)`` outputs of the same run with and without ``shrink_batch``."""
    seed = kwargs.pop("seed", 0)
    return tuple(
        sample(make_model(), generator=gen(seed), shrink_batch=shrink, **kwargs)
        for shrink in (True, False)
    )


# ----------------------------------------------------------------------------- run_corrector
M = 9  # mask id of the hand-built corrector examples (vocabulary 10)


def one_hot(tokens: torch.Tensor, margin: float = 10.0) -> torch.Tensor:
    logits = torch.zeros(*tokens.shape, 10).scatter_(-1, tokens[..., None], margin)
    logits[..., M] = float("-inf")
    return logits


class Calls:
    """Row 0 is pushed to all 7s (settles), row 1 counts up forever (never settles)."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []

    def __call__(self, y, rows=None):
        rows = torch.arange(len(y)) if rows is None else rows
        self.rows.append(rows.tolist())
        proposal = torch.where((rows == 0)[:, None], torch.full_like(y, 7), (y + 1) % M)
        return one_hot(proposal)


XT = torch.tensor([[1, 2, M, 3], [4, M, 5, 6]])
DRAFT = one_hot(torch.tensor([[0, 0, 5, 0], [0, 6, 0, 0]]))
ALL = torch.ones(2, 4, dtype=torch.bool)


def test_a_settled_row_leaves_the_corrector_loop_and_the_rest_go_on():
    call = Calls()
    result = run_corrector(
        Corrector(5), call, XT, DRAFT, ALL, mask_id=M, processor=LogitsProcessor(), per_row=True
    )
    # call 1 moves both rows; call 2 confirms row 0's fixed point; calls 3-5 run row 1 alone
    assert call.rows == [[0, 1], [0, 1], [1], [1], [1]]
    assert result.calls == 5 and result.row_calls.tolist() == [2, 5]
    batch = run_corrector(
        Corrector(5), Calls(), XT, DRAFT, ALL, mask_id=M, processor=LogitsProcessor()
    )
    assert batch.row_calls.tolist() == [5, 5]  # whole-batch exit: row 1 keeps row 0 running
    assert torch.equal(result.xt, batch.xt) and torch.equal(result.logits, batch.logits)
    # row 1: draft [4, 6, 5, 6] + 5 -> [9->0, 11->2, 10->1, 11->2] (mod 9), its mask stays
    assert result.xt.tolist() == [[7, 7, M, 7], [0, M, 1, 2]]


def test_sampled_updates_never_exit_early():
    call = Calls()
    run_corrector(
        Corrector(3, update="sample"), call, XT, DRAFT, ALL, mask_id=M,
        processor=LogitsProcessor(temperature=0.0), per_row=True,
    )  # fmt: skip
    assert call.rows == [[0, 1]] * 3


# ----------------------------------------------------------------------------- identical output
@pytest.mark.parametrize(
    "settings_",
    [
        dict(unmasking="ancestral", corrector=Corrector(8)),
        dict(unmasking="confidence", corrector=Corrector(8, every=2)),
        dict(unmasking="threshold", corrector=Corrector(4, update="top_k_positions:positions=2")),
        dict(unmasking=ReMDM("rescale", eta=0.5), corrector=Corrector(3)),
        dict(unmasking="ancestral", corrector=Corrector(3, update="sample"), top_p=0.8),
        dict(corrector=Corrector(4), block_length=4, eos_id=EOS, stop_at_eos=True),
        dict(corrector=Corrector(4), guidance=Guidance(gamma=2.0, condition=1)),
        dict(corrector=Corrector(4), guidance=Guidance(gamma=2.0, condition=1, in_corrector=False)),
        dict(corrector=Corrector(4), prompt=[[1, 2, 3], [4], [5, 6]]),
        dict(corrector=Corrector(4), time_conditioning=True),
        dict(steps=24),  # MDLM with more steps than tokens: logits of unchanged rows reused
    ],
)
def test_shrinking_the_batch_changes_no_token(settings_):
    kwargs = {**dict(mask_id=MASK, batch_size=3, length=8, steps=8), **settings_}
    model_kwargs = dict(num_classes=2)
    if kwargs.pop("time_conditioning", False):
        model_kwargs["time_conditioning"] = True
    if "prompt" in kwargs:
        kwargs.pop("batch_size")
        kwargs["pad_id"] = PAD
    shrunk, full = both(lambda: toy(**model_kwargs), **kwargs)
    assert torch.equal(shrunk.tokens, full.tokens)
    assert torch.equal(shrunk.num_corrected, full.num_corrected)
    assert shrunk.row_forwards <= full.row_forwards
    assert shrunk.model_calls <= full.model_calls
    assert full.row_forwards == 3 * full.model_calls  # every call covered the whole batch


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    unmasking=st.sampled_from(["ancestral", "confidence", "threshold", "remdm"]),
    corrector_steps=st.integers(0, 4),
    every=st.integers(1, 3),
    update=st.sampled_from(["argmax", "top_k_positions:positions=1", "sample"]),
    blocks=st.booleans(),
    ragged=st.booleans(),
    guidance=st.sampled_from([None, 2.0, 2.0j]),  # 2.0j: gamma 2 without guided corrector calls
    seed=st.integers(0, 2**16),
)
def test_shrinking_the_batch_changes_no_token_in_any_combination(
    unmasking, corrector_steps, every, update, blocks, ragged, guidance, seed
):
    kwargs = dict(
        mask_id=MASK, length=8, steps=8, block_length=4 if blocks else None, seed=seed,
        corrector=Corrector(corrector_steps, every=every, update=update),
        unmasking=ReMDM("rescale", eta=0.5) if unmasking == "remdm" else unmasking,
        eos_id=EOS, stop_at_eos=blocks,
    )  # fmt: skip
    if ragged:
        kwargs.update(prompt=[[1, 2], [3], [4, 5], [6]], pad_id=PAD)
    else:
        kwargs["batch_size"] = 4
    if guidance is not None:
        in_corrector = not isinstance(guidance, complex)
        kwargs["guidance"] = Guidance(gamma=2.0, condition=1, in_corrector=in_corrector)
    shrunk, full = both(lambda: toy(num_classes=2), **kwargs)
    assert torch.equal(shrunk.tokens, full.tokens)
    assert shrunk.row_forwards <= full.row_forwards
    assert shrunk.nfe == pytest.approx(shrunk.nfe_per_row.double().mean().item())


# ----------------------------------------------------------------------------- what is spent
def test_corrector_nfe_is_the_mean_over_rows_and_row_forwards_what_ran():
    model = toy()
    out = sample(model, mask_id=MASK, batch_size=4, length=8, steps=4, corrector=Corrector(6),
                 generator=gen(3))  # fmt: skip
    per_row = out.corrector_nfe_per_row
    assert out.corrector_nfe == per_row.double().mean().item()
    assert out.row_forwards == sum(len(x) for x in model.inputs) == int(out.nfe_per_row.sum())
    assert out.corrector_row_forwards == int(per_row.sum()) < 4 * 6 * 4  # nominal S x loops x B
    assert out.model_calls == len(model.inputs)
    assert out.nfe == out.denoiser_nfe + out.corrector_nfe


def test_rows_without_masks_get_no_denoiser_call_and_unchanged_rows_no_second_one():
    model = toy()
    out = sample(model, mask_id=MASK, prompt=[[1], [2], [3]], length=4, steps=40, generator=gen())
    seen = set()
    for x in model.inputs:
        assert (x == MASK).any(dim=1).all()  # every row sent still had a mask
        for row in x.tolist():
            assert tuple(row) not in seen  # no row state was computed twice
            seen.add(tuple(row))
    assert out.row_forwards == len(seen) < 3 * 40  # MDLM, T = 40 > L = 4: most steps reveal nothing


def test_rows_stopped_at_eos_are_not_sent_to_the_model_again():
    # the first row's prompt token is followed by EOS at the end of every block: it stops after
    # its first block; the other rows never produce EOS.
    class Scripted(torch.nn.Module):
        config = ToyDenoiser(vocab_size=V).config

        def __init__(self) -> None:
            super().__init__()
            self.inputs: list[torch.Tensor] = []

        def forward(self, input_ids, **_):
            self.inputs.append(input_ids.clone())
            target = torch.full_like(input_ids, 3)
            target[:, 4::4] = torch.where(input_ids[:, :1] == 1, EOS, 5)  # block ends
            return torch.zeros(*input_ids.shape, V).scatter_(-1, target[..., None], 9.0)

    kwargs = dict(
        mask_id=MASK, prompt=[[1], [2], [2]], length=12, steps=6, block_length=4, eos_id=EOS,
        stop_at_eos=True, corrector=Corrector(2), unmasking="confidence",
    )  # fmt: skip
    shrunk, full = (
        sample(m, generator=gen(), shrink_batch=s, **kwargs)
        for m, s in ((Scripted(), True), (Scripted(), False))
    )
    assert torch.equal(shrunk.tokens, full.tokens)
    assert shrunk.tokens[0].tolist() == [1, 3, 3, 3, EOS] + [EOS] * 8
    assert shrunk.nfe_per_row[0] < shrunk.nfe_per_row[1] == shrunk.nfe_per_row[2]
    assert full.nfe_per_row.tolist() == [full.model_calls] * 3
