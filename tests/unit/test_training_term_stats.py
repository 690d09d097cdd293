"""Per-term diagnostics in metrics.jsonl: split gradient norms and the corrector's copy shares."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from proseco.commands import main
from proseco.losses import LossConfig, proseco_loss
from proseco.training import term_stats, train
from proseco.training.metrics import read_metrics
from proseco.training.term_stats import TermGradients, copy_terms
from tests.conftest import MixModel

V, L, MASK = 8, 12, 7


def _micro_batches(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x0 = torch.randint(0, MASK, (3, L), generator=g)
        t = torch.tensor([0.3, 0.6, 0.9])
        xt = torch.where(torch.rand(3, L, generator=g) < t[:, None], MASK, x0)
        loss_mask = torch.ones(3, L, dtype=torch.bool)
        loss_mask[0, :3] = False  # a prompt: neither noised nor in the loss
        xt[0, :3] = x0[0, :3]
        out.append({"x0": x0, "t": t, "xt": xt, "loss_mask": loss_mask})
    return out


def _loss(model, mb, config, backward_fn):
    return proseco_loss(
        model, mb["x0"], mask_id=MASK, config=config, t=mb["t"], xt=mb["xt"],
        loss_mask=mb["loss_mask"], backward_fn=backward_fn,
    )  # fmt: skip


@pytest.mark.parametrize("accum", [1, 3])
def test_split_norms_equal_the_norms_of_each_terms_own_gradient(accum):
    """Against autograd.grad of each weighted term alone, summed over the micro-batches."""
    config = LossConfig(mdm_weight=0.7, sc_weight=2.5, corrector_input="all_positions")
    batches = _micro_batches(accum)
    model = MixModel(V, L)
    params = list(model.parameters())
    reference = [[torch.zeros_like(p) for p in params] for _ in range(2)]  # [mdm, corrector]
    for mb in batches:
        calls = []

        def separately(part, calls=calls):
            grads = torch.autograd.grad(part / accum, params, allow_unused=True)
            for acc, g in zip(reference[len(calls)], grads, strict=True):
                acc += 0 if g is None else g
            calls.append(part)

        _loss(model, mb, config, separately)
        assert len(calls) == 2  # the MDLM part, then the corrector part
    expected = [math.sqrt(sum(float(g.pow(2).sum()) for g in term)) for term in reference]

    split = TermGradients(params, lambda part: (part / accum).backward())
    for mb in batches:
        _loss(model, mb, config, split.backward_fn())
    total = [reference[0][i] + reference[1][i] for i in range(len(params))]
    for p, g in zip(params, total, strict=True):  # the gradient itself is the usual one
        torch.testing.assert_close(p.grad, g)
    mdm, corrector = split.norms(SimpleNamespace(num_processes=1, scaler=None))
    assert expected[0] > 0 and expected[1] > 0
    assert mdm == pytest.approx(expected[0], rel=1e-5)
    assert corrector == pytest.approx(expected[1], rel=1e-5)


def test_copy_terms_against_a_hand_built_batch():
    x0 = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    y = torch.tensor([[9, 2, 3, 4], [1, 2, 9, 4], [1, 2, 3, 4]])
    loss_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    terms = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [0.0, 0.0, 8.0, 9.0]])
    # row 0 copies (its only difference is off the loss), row 1 does not (position 2), row 2 copies
    rows, tokens, total = copy_terms(terms, y, x0, loss_mask).tolist()
    assert rows == 1 + 2 + 3 + 8 + 9
    assert tokens == 1 + 2 + 3 + 4 + 5 + 7 + 8 + 9  # all loss positions but row 1, position 2
    assert total == 45


def _sft(tmp_path, name, *extra):
    out = tmp_path / name
    code = main([
        "train", "sft-cpu-tiny", "--output-dir", str(out), "--train.max_steps", "4",
        "--train.log_every", "2", "--train.global_batch_size", "8", "--train.eval_every", "0",
        "--train.eval_batches", "1", "--train.save_every", "0", "--train.progress_bar", "false",
        "--model.num_layers", "1", *extra,
    ])  # fmt: skip
    assert code == 0
    return read_metrics(out, "train")


def test_proseco_train_logs_the_term_keys_and_vanilla_does_not(tmp_path):
    keys = ("grad_norm_mdm", "grad_norm_corrector", "sc_copy_share", "sc_copy_token_share")
    records = _sft(tmp_path, "proseco", "--train.micro_batch_size", "4")  # 2 micro-batches
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert all(isinstance(r[k], float) and math.isfinite(r[k]) for k in keys), r
        assert r["grad_norm_mdm"] > 0 and r["grad_norm_corrector"] > 0
        assert 0 <= r["sc_copy_share"] <= r["sc_copy_token_share"] <= 1
        # |a + b| <= |a| + |b|, with grad_norm the norm of the sum of the two parts
        assert r["grad_norm"] <= (r["grad_norm_mdm"] + r["grad_norm_corrector"]) * (1 + 1e-5)
    vanilla = _sft(tmp_path, "vanilla", "--loss.sc_weight", "0")
    assert vanilla and not any(k in r for r in vanilla for k in keys)


def test_the_logging_leaves_the_optimizer_step_bit_identical(tmp_path, monkeypatch):
    overrides = {
        "train.max_steps": 2, "train.log_every": 1, "train.global_batch_size": 8,
        "train.micro_batch_size": 4, "train.eval_every": 0, "train.eval_batches": 1,
        "train.save_every": 0, "train.progress_bar": False, "train.ema_decay": 0.0,
        "model.num_layers": 1,
    }  # fmt: skip
    measured = train("sft-cpu-tiny", tmp_path / "a", overrides=overrides)
    assert "grad_norm_mdm" in read_metrics(measured.output_dir, "train")[0]
    monkeypatch.setattr(term_stats, "grads_measurable", lambda *args: False)
    plain = train("sft-cpu-tiny", tmp_path / "b", overrides=overrides)
    assert "grad_norm_mdm" not in read_metrics(plain.output_dir, "train")[0]
    from safetensors.torch import load_file

    a = load_file(measured.final_dir / "model.safetensors")
    b = load_file(plain.final_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
