"""The AR baseline: causal DiT, next-token loss, left-to-right sampling, training and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import proseco
from proseco.errors import ConfigError
from proseco.losses import ar_loss
from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig
from proseco.sampling.autoregressive import check_autoregressive_args, sample_autoregressive

BOS, EOS, PAD, MASK = 0, 1, 2, 11
V = 12


def tiny_dit(causal: bool = True, num_classes: int = 0, seed: int = 0) -> ProsecoDiT:
    torch.manual_seed(seed)
    config = ProsecoDiTConfig(
        vocab_size=V, hidden_size=16, num_layers=2, num_heads=2, cond_dim=8, max_length=16,
        dropout=0.0, causal=causal, num_classes=num_classes, mask_token_id=MASK,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
    )  # fmt: skip
    model = ProsecoDiT(config).eval()
    with torch.no_grad():  # larger weights than the init, so that logits differ clearly
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    return model


class Bigram(nn.Module):
    """``logits[b, l] = table[input_ids[b, l]]``: a causal model whose next-token distribution
    depends on the current token only. Accepts (and ignores) an attention mask."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone().float())
        self.vocab_size = table.shape[1]
        self.calls: list[int] = []

    def forward(self, input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
        self.calls.append(input_ids.shape[1])
        return self.table[input_ids]


def chain_table(next_of: dict[int, int], vocab: int = 8) -> torch.Tensor:
    """A bigram table that (almost) surely moves ``a -> next_of[a]``."""
    table = torch.zeros(vocab, vocab)
    for a, b in next_of.items():
        table[a, b] = 50.0
    return table


# -- the causal DiT --------------------------------------------------------------------------------


def test_future_tokens_cannot_change_past_logits_of_a_causal_dit():
    model = tiny_dit(causal=True)
    x = torch.randint(3, 11, (2, 10), generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[:, 6:] = torch.randint(3, 11, (2, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        lx, ly = model(x).logits, model(y).logits
    assert torch.allclose(lx[:, :6], ly[:, :6], atol=1e-5)
    assert not torch.allclose(lx[:, 6:], ly[:, 6:], atol=1e-3)
    # the same check catches a bidirectional model
    bidir = tiny_dit(causal=False)
    with torch.no_grad():
        assert not torch.allclose(bidir(x).logits[:, :6], bidir(y).logits[:, :6], atol=1e-3)


def test_padding_in_front_does_not_change_a_causal_dits_real_logits():
    model = tiny_dit(causal=True)
    x = torch.tensor([[BOS, 4, 5, 6]])
    padded = torch.tensor([[PAD, PAD, BOS, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        plain = model(x).logits
        left = model(padded, attention_mask=mask).logits[:, 2:]
    # rotary positions are relative, so shifting every real token by 2 keeps the logits
    assert torch.allclose(plain, left, atol=1e-5)


# -- the loss --------------------------------------------------------------------------------------


def test_ar_loss_matches_a_hand_computed_value():
    # vocabulary {0, 1, 2, mask=3}; row 0 -> probs (1/5, 3/5, 1/5), row 1 -> (2/5, 1/5, 2/5)
    table = torch.tensor(
        [
            [0.0, math.log(3.0), 0.0, 5.0],
            [math.log(2.0), 0.0, math.log(2.0), 9.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    model = Bigram(table)
    x0 = torch.tensor([[0, 1, 2]])  # targets: 1 after 0 (3/5), 2 after 1 (2/5)
    out = ar_loss(model, x0, mask_id=3)
    expected = (-math.log(3 / 5) - math.log(2 / 5)) / 2  # 0.713558...
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.7135581778, abs=1e-6)
    assert out.num_tokens.item() == 2
    assert out.mdm_terms[0, 0] == 0
    assert out.mdm_terms[0, 1].item() == pytest.approx(-math.log(3 / 5), abs=1e-6)
    assert out.corrector_terms is None and out.proposal_error_rate is None
    # without excluding the mask column its logit (5 and 9) takes mass: a larger loss
    assert ar_loss(model, x0).loss.item() > expected + 1.0
    # loss_mask drops the second target
    masked = ar_loss(model, x0, mask_id=3, loss_mask=torch.tensor([[True, True, False]]))
    assert masked.loss.item() == pytest.approx(-math.log(3 / 5), abs=1e-6)
    assert masked.num_tokens.item() == 1


def test_ar_loss_gradient_reaches_only_the_rows_that_predict():
    model = Bigram(torch.zeros(4, 4))
    ar_loss(model, torch.tensor([[0, 1, 2]]), mask_id=3).loss.backward()
    grad = model.table.grad
    assert grad[2].abs().sum() == 0  # token 2 is last: it predicts nothing
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0


def test_ar_loss_refuses_a_single_position():
    with pytest.raises(ValueError, match="L >= 2"):
        ar_loss(Bigram(torch.zeros(4, 4)), torch.tensor([[0]]))


# -- sampling --------------------------------------------------------------------------------------


def greedy_by_hand(model, length: int, batch: int = 2) -> torch.Tensor:
    x = torch.full((batch, 1), BOS)
    for _ in range(length):
        logits = model(x).logits[:, -1].clone()
        logits[:, MASK] = float("-inf")
        x = torch.cat([x, logits.argmax(-1, keepdim=True)], dim=1)
    return x


def test_temperature_zero_equals_a_greedy_loop():
    model = tiny_dit()
    with torch.no_grad():
        expected = greedy_by_hand(model, 9)
    out = sample_autoregressive(model, batch_size=2, length=9, temperature=0, stop_at_eos=False)
    assert torch.equal(out.tokens, expected)
    assert out.prompt_length == 1 and out.generated.shape == (2, 9)
    assert out.nfe == out.denoiser_nfe == out.num_steps == 9 and out.corrector_nfe == 0
    assert out.wall_time > 0 and out.num_corrected.tolist() == [0, 0]
    # top_k = 1 is greedy too, whatever the temperature
    top1 = sample_autoregressive(
        model, batch_size=2, length=9, top_k=1, temperature=2.0, stop_at_eos=False,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    assert torch.equal(top1.tokens, expected)


def test_draws_are_reproducible_and_never_the_mask():
    model = tiny_dit()
    kw = dict(batch_size=4, length=12, stop_at_eos=False, top_p=0.9)
    a = sample_autoregressive(model, generator=torch.Generator().manual_seed(0), **kw)
    b = sample_autoregressive(model, generator=torch.Generator().manual_seed(0), **kw)
    c = sample_autoregressive(model, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    assert not bool((a.tokens == MASK).any())


def test_rows_stop_at_eos_and_are_padded_while_others_continue():
    # 0 -> 4 -> 1 (EOS); 5 -> 5 -> 5 ... never ends
    model = Bigram(chain_table({0: 4, 4: 1, 5: 5, 1: 6, 6: 6}))
    out = sample_autoregressive(
        model, prompt=torch.tensor([[0], [5]]), length=5, eos_id=1, pad_id=2,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert out.tokens.tolist() == [[0, 4, 1, 2, 2, 2], [5, 5, 5, 5, 5, 5]]
    # Row 0 stops after 2 tokens and leaves the batch; row 1 takes all 5 calls.
    assert out.nfe_per_row.tolist() == [2, 5]
    assert out.nfe == 3.5 and out.model_calls == 5
    # without stopping the first row continues past EOS
    free = sample_autoregressive(
        model, prompt=torch.tensor([[0], [5]]), length=5, eos_id=1, pad_id=2, stop_at_eos=False,
    )  # fmt: skip
    assert free.tokens[0].tolist() == [0, 4, 1, 6, 6, 6]


def test_the_loop_ends_when_every_row_has_stopped():
    model = Bigram(chain_table({0: 4, 4: 1, 3: 1}))
    out = sample_autoregressive(
        model, prompt=torch.tensor([[0], [3]]), length=6, eos_id=1, pad_id=2
    )
    assert out.tokens.tolist() == [[0, 4, 1, 2, 2, 2, 2], [3, 1, 2, 2, 2, 2, 2]]
    assert out.model_calls == out.num_steps == 2
    assert out.nfe_per_row.tolist() == [2, 1] and out.nfe == 1.5  # row 1 left after one
    assert model.calls == [1, 2]  # no KV cache: each call reads the whole prefix


def test_list_prompts_are_left_padded_with_an_attention_mask():
    model = tiny_dit()
    out = sample_autoregressive(
        model, prompt=[[BOS, 4, 5], [BOS]], length=4, temperature=0, stop_at_eos=False
    )
    assert out.prompt_length == 3
    assert out.tokens[:, :3].tolist() == [[BOS, 4, 5], [PAD, PAD, BOS]]
    alone = sample_autoregressive(model, prompt=[[BOS]], length=4, temperature=0, stop_at_eos=False)
    assert torch.equal(out.tokens[1, 3:], alone.tokens[0, 1:])  # padding changes nothing


def test_guidance_costs_two_evaluations_per_position_and_gamma_one_is_conditional():
    model = tiny_dit(num_classes=2)
    guided = sample_autoregressive(
        model, batch_size=2, length=5, stop_at_eos=False, temperature=0,
        guidance=proseco.Guidance(gamma=2.0, condition=1),
    )  # fmt: skip
    assert guided.nfe == 10
    one = sample_autoregressive(
        model, batch_size=2, length=5, stop_at_eos=False, temperature=0,
        guidance=proseco.Guidance(gamma=1.0, condition=1),
    )  # fmt: skip
    plain = sample_autoregressive(
        model, batch_size=2, length=5, stop_at_eos=False, temperature=0,
        conditioning={"class_labels": 1},
    )  # fmt: skip
    assert one.nfe == 5 and torch.equal(one.tokens, plain.tokens)


def test_bad_arguments_are_refused_before_any_model_call():
    causal, bidir = tiny_dit(), tiny_dit(causal=False)
    with pytest.raises(ConfigError, match="bidirectional"):
        sample_autoregressive(bidir, length=4)
    with pytest.raises(ConfigError, match="corrector"):
        check_autoregressive_args(causal, length=4, corrector=proseco.Corrector(steps=1))
    with pytest.raises(ConfigError, match="maximum length 16"):
        check_autoregressive_args(causal, length=16)
    with pytest.raises(ConfigError, match="first token"):
        check_autoregressive_args(Bigram(torch.zeros(4, 4)), length=3)
    out = sample_autoregressive(causal, batch_size=1, stop_at_eos=False)
    assert out.tokens.shape == (1, 16)  # default length: the model's maximum minus [BOS]


# -- training and the command line -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from proseco.training import train

    out = tmp_path_factory.mktemp("ar") / "run"
    result = train(
        "text-cpu-tiny",
        out,
        overrides={
            "loss.objective": "ar", "train.max_steps": 6, "train.global_batch_size": 8,
            "train.eval_every": 0, "train.save_every": 0, "train.progress_bar": False,
            "train.eval_batches": 1, "train.log_every": 3, "model.num_layers": 1,
        },
    )  # fmt: skip
    return result


def test_train_then_sample_end_to_end(trained, tmp_path):
    records = [json.loads(line) for line in (trained.output_dir / "metrics.jsonl").open()]
    val = [r for r in records if r["split"] == "validation"][-1]
    assert set(val) >= {"nll", "ppl", "bpd"} and val["ppl"] == pytest.approx(math.exp(val["nll"]))
    train_rows = [r for r in records if r["split"] == "train"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    model, tokenizer, config = proseco.load_pretrained(trained.final_dir)
    assert model.config.causal is True
    out = sample_autoregressive(
        model, config, batch_size=3, length=10, generator=torch.Generator().manual_seed(0)
    )
    assert out.tokens.shape == (3, 11) and out.tokens[:, 0].tolist() == [tokenizer.bos_token_id] * 3
    assert 1 <= out.nfe <= 10

    from proseco.commands import main

    path = tmp_path / "s.jsonl"
    code = main([
        "sample", str(trained.final_dir), "-o", str(path), "--num-samples", "3",
        "--batch-size", "2", "--length", "8", "--top-p", "0.9", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in path.open()]
    assert len(rows) == 3 and all(len(r["tokens"]) == 8 for r in rows)
    assert all(1 <= r["nfe"] <= 8 and r["corrector_nfe"] == 0 for r in rows)
    code = main(["sample", str(trained.final_dir), "-o", str(path), "--corrector-steps", "1"])
    assert code == 2


def test_a_diffusion_objective_refuses_a_causal_checkpoint(trained):
    import dataclasses

    from proseco.training.build import build_model, build_tokenizer
    from proseco.training.config import ModelSection
    from proseco.training.config_io import load_config

    config = load_config("text-cpu-tiny")
    config = dataclasses.replace(config, model=ModelSection(pretrained=str(trained.final_dir)))
    with pytest.raises(ValueError, match="loss.objective: ar"):
        build_model(config, build_tokenizer("char"))
    ar = dataclasses.replace(config, loss=dataclasses.replace(config.loss, objective="ar"))
    assert build_model(ar, build_tokenizer("char")).config.causal


def test_two_backward_is_off_for_the_ar_objective():
    from proseco.training.config import LossSection

    assert LossSection(objective="ar", two_backward=True).two_backward is False
    assert LossSection().two_backward is True
    with pytest.raises(ConfigError, match="objective"):
        LossSection(objective="causal")


def test_the_training_step_passes_dropped_labels_and_the_padding_mask_to_the_ar_loss():
    from proseco.schedules import get_schedule
    from proseco.training.step import batch_loss

    seen = {}

    def model(input_ids, **kwargs):
        seen.update(kwargs)
        return torch.zeros(*input_ids.shape, V)

    batch = {
        "input_ids": torch.tensor([[BOS, 4, 5, EOS], [BOS, 6, EOS, PAD]]),
        "loss_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool(),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool(),
        "labels": torch.tensor([0, 1]),
    }
    out = batch_loss(
        model, batch, mask_id=MASK, schedule=get_schedule(), loss_config=proseco.LossConfig(),
        step=0, generator=torch.Generator().manual_seed(0), num_classes=2, cond_dropout=1.0,
        objective="ar",
    )  # fmt: skip
    assert seen["class_labels"].tolist() == [2, 2]  # every label dropped to the null label 2
    assert torch.equal(seen["attention_mask"], batch["attention_mask"])
    assert out.num_tokens.item() == 5  # 3 + 2 targets; the padded one is not a target
    assert out.loss.item() == pytest.approx(math.log(V - 1), abs=1e-6)  # uniform over 11 tokens


def test_the_ar_text_recipe_matches_the_mdlm_recipe_but_for_the_objective():
    from proseco.training.config_io import list_recipes, load_config

    if "text-mdlm-cpu" not in list_recipes():
        pytest.skip("text-mdlm-cpu is not shipped")
    ar, mdlm = load_config("text-ar-cpu"), load_config("text-mdlm-cpu")
    assert ar.model == mdlm.model and ar.data == mdlm.data and ar.optim == mdlm.optim
    assert ar.loss.objective == "ar" and mdlm.loss.objective == "diffusion"
    assert ar.train == mdlm.train  # the same budget
