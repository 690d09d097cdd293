"""The corrector loop (Algorithm 3) on hand-built inputs: what it reads, what it may rewrite."""

from __future__ import annotations

import pytest
import torch

from proseco.sampling import Corrector, LogitsProcessor, TopKPositions, run_corrector, sample

M = 9  # mask id; vocabulary 10


def one_hot_logits(tokens: torch.Tensor, vocab: int = 10, margin: float = 10.0) -> torch.Tensor:
    logits = torch.zeros(*tokens.shape, vocab)
    logits.scatter_(-1, tokens[..., None], margin)
    logits[..., M] = float("-inf")
    return logits


class Calls:
    """``call(y)`` that returns fixed predictions and records its inputs."""

    def __init__(self, predict):
        self.predict = predict
        self.inputs = []

    def __call__(self, y):
        self.inputs.append(y.clone())
        return one_hot_logits(self.predict(y))


XT = torch.tensor([[1, 2, M, 3, M, 4]])
DENOISER = one_hot_logits(torch.tensor([[0, 0, 5, 0, 6, 0]]))
ALL = torch.ones(1, 6, dtype=torch.bool)
PROC = LogitsProcessor()


def test_draft_keeps_unmasked_tokens_and_fills_masks_with_the_denoiser_argmax():
    call = Calls(lambda y: y)
    run_corrector(Corrector(1), call, XT, DENOISER, ALL, mask_id=M, processor=PROC)
    assert call.inputs[0].tolist() == [[1, 2, 5, 3, 6, 4]]


def test_only_unmasked_positions_are_overwritten_and_masks_stay_masks():
    target = torch.tensor([[7, 7, 7, 7, 7, 7]])
    result = run_corrector(
        Corrector(3), Calls(lambda y: target), XT, DENOISER, ALL, mask_id=M, processor=PROC
    )
    assert result.xt.tolist() == [[7, 7, M, 7, M, 7]]
    assert result.changed.tolist() == [[True, True, False, True, False, True]]
    assert torch.equal(result.logits, one_hot_logits(target))


def test_positions_outside_the_region_never_change_but_serve_as_context():
    region = torch.tensor([[False, False, True, True, True, True]])  # e.g. a 2-token prompt
    call = Calls(lambda y: torch.full_like(y, 7))
    result = run_corrector(Corrector(2), call, XT, DENOISER, region, mask_id=M, processor=PROC)
    assert result.xt.tolist() == [[1, 2, M, 7, M, 7]]
    assert call.inputs[1][0, :2].tolist() == [1, 2]  # the prompt stays in y as context


def test_argmax_updates_stop_at_a_fixed_point():
    call = Calls(lambda y: torch.full_like(y, 7))
    result = run_corrector(Corrector(10), call, XT, DENOISER, ALL, mask_id=M, processor=PROC)
    assert result.calls == 2 == len(call.inputs)  # the second call confirms the fixed point
    no_exit = run_corrector(
        Corrector(10, early_exit=False), Calls(lambda y: torch.full_like(y, 7)), XT, DENOISER,
        ALL, mask_id=M, processor=PROC,
    )  # fmt: skip
    assert no_exit.calls == 10 and torch.equal(no_exit.xt, result.xt)


def test_each_call_sees_the_previous_update():
    call = Calls(lambda y: (y + 1) % M)  # never a fixed point
    result = run_corrector(Corrector(3), call, XT, DENOISER, ALL, mask_id=M, processor=PROC)
    assert [c.tolist() for c in call.inputs] == [
        [[1, 2, 5, 3, 6, 4]],
        [[2, 3, 6, 4, 7, 5]],
        [[3, 4, 7, 5, 8, 6]],
    ]
    assert result.xt.tolist() == [[4, 5, M, 6, M, 7]]
    assert torch.equal(result.logits, one_hot_logits(torch.tensor([[4, 5, 8, 6, 0, 7]])))


def test_top_k_update_changes_only_the_most_confident_disagreements():
    # positions 0, 1, 3 prefer token 8 (disagreeing with y) with logits 9, 5, 7; the others
    # agree with y even more confidently. k = 2 -> only positions 0 and 3 change.
    def call(y):
        logits = one_hot_logits(y, margin=20.0)
        for pos, value in ((0, 9.0), (1, 5.0), (3, 7.0)):
            logits[0, pos] = 0.0
            logits[0, pos, 8] = value
            logits[0, pos, M] = float("-inf")
        return logits

    result = run_corrector(
        Corrector(1, update=TopKPositions(2)), call, XT, DENOISER, ALL, mask_id=M, processor=PROC
    )
    assert result.xt.tolist() == [[8, 2, M, 8, M, 4]]


def test_sample_update_draws_from_the_processed_distribution():
    g = torch.Generator().manual_seed(0)
    call = Calls(lambda y: torch.full_like(y, 7))
    greedy = LogitsProcessor(temperature=0.0)
    result = run_corrector(
        Corrector(2, update="sample"), call, XT, DENOISER, ALL, mask_id=M, processor=greedy,
        generator=g,
    )  # fmt: skip
    assert result.calls == 2  # no early exit for sampled updates
    assert result.xt.tolist() == [[7, 7, M, 7, M, 7]]


class WantsTheMask(torch.nn.Module):
    """A model whose mask logit beats every token everywhere (plus random token logits)."""

    def __init__(self, vocab_size: int, mask_id: int) -> None:
        super().__init__()
        self.vocab_size, self.mask_id = vocab_size, mask_id
        self.g = torch.Generator().manual_seed(0)

    def forward(self, input_ids):
        logits = torch.randn(*input_ids.shape, self.vocab_size, generator=self.g)
        logits[..., self.mask_id] = 100.0
        return logits


@pytest.mark.parametrize("update", ["argmax", "sample", TopKPositions(3)])
@pytest.mark.parametrize("unmasking", ["ancestral", "confidence"])
def test_the_corrector_never_writes_a_mask_even_when_the_model_prefers_it(update, unmasking):
    model = WantsTheMask(vocab_size=10, mask_id=M)
    out = sample(
        model, mask_id=M, batch_size=4, length=12, steps=6, unmasking=unmasking,
        corrector=Corrector(3, update=update), return_history=True,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert not (out.tokens == M).any()
    assert out.corrector_nfe > 0
    for record in out.history:  # corrector rewrites never touch a position that is masked
        before_masked = record.tokens == M
        assert not (record.corrected & before_masked).any()


def test_fires_counts_one_based_steps():
    corrector = Corrector(steps=2, every=2, start=3)
    assert [n for n in range(1, 11) if corrector.fires(n)] == [4, 6, 8, 10]
    assert not any(Corrector(steps=0).fires(n) for n in range(1, 5))
    assert all(Corrector(steps=1).fires(n) for n in range(1, 5))


class Flipper(torch.nn.Module):
    """Predicts 1 while a row has masks; on full drafts (the corrector's input) swaps 1 and 2."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("C", (), {"vocab_size": 10, "time_conditioning": False})()

    def forward(self, input_ids, **_):
        masked = (input_ids == M).any(dim=1, keepdim=True)
        swapped = torch.where(input_ids == 1, 2, 1)
        return one_hot_logits(torch.where(masked, torch.ones_like(input_ids), swapped))


def test_corrector_changes_record_every_write_and_count_fixes():
    out = sample(
        Flipper(), mask_id=M, batch_size=3, length=8, steps=8, unmasking="confidence",
        corrector=Corrector(1, every=1), return_history=True, shrink_batch=False,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    changes = out.corrector_changes
    assert len(changes) == int(out.num_corrected.sum()) > 0
    assert bool((changes.old != changes.new).all()) and not bool((changes.new == M).any())
    # the history's corrected flags are the same positions, step by step
    flagged = sorted((r, p) for rec in out.history for r, p in rec.corrected.nonzero().tolist())
    assert flagged == sorted(zip(changes.rows.tolist(), changes.positions.tolist()))
    # replaying the writes in order reproduces each corrected step's tokens at those positions
    reference = torch.full_like(out.tokens, 2)
    counts = changes.counts(reference)
    fixed = int(((changes.new == 2) & (changes.old != 2)).sum())
    broken = int(((changes.old == 2) & (changes.new != 2)).sum())
    assert counts == {"changed": len(changes), "fixed": fixed, "broken": broken}
    assert counts["fixed"] + counts["broken"] > 0
    assert changes.counts() == {"changed": len(changes), "fixed": 0, "broken": 0}
    unknown = torch.full_like(out.tokens, -1)
    assert changes.counts(unknown)["fixed"] == changes.counts(unknown)["broken"] == 0
    judged = changes.counts(is_right=lambda row, pos, tok: tok == 2)
    assert judged == counts


def test_corrector_changes_by_hand_and_concat():
    from proseco.sampling import CorrectorChanges

    c = CorrectorChanges(torch.tensor([0, 0, 1]), torch.tensor([2, 3, 2]), torch.tensor([5, 6, 7]),
                         torch.tensor([6, 5, 5]))  # fmt: skip
    ref = torch.tensor([[0, 0, 6, 6], [0, 0, 5, 9]])
    # (0,2): 5->6 fixes; (0,3): 6->5 breaks; (1,2): 7->5 fixes
    assert c.counts(ref) == {"changed": 3, "fixed": 2, "broken": 1}
    both = CorrectorChanges.concat([(c, 2), (c, 2)])
    assert both.rows.tolist() == [0, 0, 1, 2, 2, 3] and len(CorrectorChanges.concat([])) == 0
    no_corrector = sample(Flipper(), mask_id=M, batch_size=2, length=4, steps=4)
    assert len(no_corrector.corrector_changes) == 0


def test_final_steps_polish_each_finished_block():
    base = dict(mask_id=M, batch_size=3, length=8, steps=4, block_length=4, unmasking="confidence",
                return_history=True, shrink_batch=False)  # fmt: skip
    plain = sample(Flipper(), corrector=Corrector(1, every=1), **base)
    polished = sample(Flipper(), corrector=Corrector(1, every=1, final_steps=2), **base)
    kinds = [r.kind for r in polished.history]
    assert kinds.count("polish") == 2 and "polish" not in [r.kind for r in plain.history]
    # each polish is one corrector loop on a mask-free block: the Flipper swaps 1 <-> 2 each call
    assert polished.corrector_nfe == plain.corrector_nfe + 2 * 2
    polish = [r for r in polished.history if r.kind == "polish"]
    assert all(not (r.tokens[:, 4 * i + 4 :] != M).any() for i, r in enumerate(polish[:1]))
    assert len(polished.corrector_changes) == int(polished.num_corrected.sum())
    assert Corrector(1, final_steps=2).to_dict()["final_steps"] == 2
    assert "final_steps" not in Corrector(1).to_dict()
    assert Corrector.from_dict(Corrector(1, final_steps=2).to_dict()).final_steps == 2
    with pytest.raises(Exception, match="final_steps"):
        Corrector(1, final_steps=-1)


def test_sample_command_flag_for_final_steps():
    import argparse

    from proseco.commands.sample import _corrector

    args = argparse.Namespace(corrector_steps=2, corrector_every=None, corrector_start=None,
                              corrector_update=None, corrector_early_exit=None, corrector_final=1)  # fmt: skip
    assert _corrector(args, None).final_steps == 1
    args.corrector_steps = None
    assert _corrector(args, Corrector(3)).final_steps == 1
