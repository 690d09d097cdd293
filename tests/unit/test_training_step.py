"""The per-micro-batch loss of the trainer: SFT prompts, class-label dropout, time conditioning."""

from __future__ import annotations

import pytest
import torch

from proseco.data.char_tokenizer import char_tokenizer
from proseco.data.text import encode_sft
from proseco.losses import LossConfig
from proseco.schedules import get_schedule
from proseco.training.step import ModelView, batch_loss, conditioning

V, MASK = 102, 2


class Recorder(torch.nn.Module):
    """Random logits, a learnable bias, and a log of every call's keyword arguments."""

    def __init__(self, vocab: int = V, time_conditioning: bool = False) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        self.calls: list[dict] = []
        self.vocab_size = vocab
        self.time_conditioning = time_conditioning

    def forward(self, input_ids, **kwargs):
        self.calls.append({"input_ids": input_ids.clone(), **kwargs})
        g = torch.Generator().manual_seed(len(self.calls))
        return torch.randn(*input_ids.shape, self.vocab_size, generator=g) + self.bias


@pytest.fixture(scope="module")
def sft_batch():
    tok = char_tokenizer()
    out = encode_sft(
        ["What is 2 + 2?", "Spell 'lamp' backwards."], ["4", "pmal"], tok, max_length=40,
        train_on_padding=True,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("corrector_input", ["masked_only", "all_positions"])
def test_sft_prompt_tokens_are_never_masked_and_never_in_the_loss(sft_batch, corrector_input):
    batch = {k: v for k, v in sft_batch.items() if k != "record_index"}
    prompt = batch["prompt_mask"]
    config = LossConfig(corrector_input=corrector_input, t_min=0.9)  # t near 1: ~all masked
    for seed in range(5):
        out = batch_loss(
            Recorder(), batch, mask_id=MASK, schedule=get_schedule(), loss_config=config,
            step=0, generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        assert torch.equal(out.xt[prompt], batch["input_ids"][prompt])
        assert torch.equal(out.y[prompt], batch["input_ids"][prompt])
        assert (out.mdm_terms[prompt] == 0).all() and (out.corrector_terms[prompt] == 0).all()
        assert (out.xt[~prompt] == MASK).float().mean() > 0.5
        assert out.num_tokens == int((~prompt).sum())


def test_sft_loss_ignores_whatever_the_model_predicts_on_the_prompt(sft_batch):
    batch = {k: v for k, v in sft_batch.items() if k != "record_index"}
    prompt = batch["prompt_mask"]

    class PromptNoise(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, input_ids, **kwargs):
            logits = torch.nn.functional.one_hot(input_ids, V).float() * 3.0
            noise = torch.randn(*input_ids.shape, V, generator=torch.Generator().manual_seed(0))
            return logits + self.scale * noise * prompt[..., None]

    losses = [
        batch_loss(
            PromptNoise(scale),
            batch,
            mask_id=MASK,
            schedule=get_schedule(),
            loss_config=LossConfig(),
            step=0,
            generator=torch.Generator().manual_seed(1),
        ).loss  # fmt: skip
        for scale in (0.0, 100.0)
    ]
    assert torch.equal(losses[0], losses[1])


def test_dropped_class_labels_are_the_null_label_in_both_passes():
    x0 = torch.randint(3, V, (400, 4))
    batch = {
        "input_ids": x0,
        "loss_mask": torch.ones_like(x0, dtype=torch.bool),
        "noise_mask": torch.ones_like(x0, dtype=torch.bool),
        "labels": torch.randint(0, 2, (400,)),
    }
    model = Recorder()
    batch_loss(
        model, batch, mask_id=MASK, schedule=get_schedule(), loss_config=LossConfig(), step=0,
        generator=torch.Generator().manual_seed(0), num_classes=2, cond_dropout=0.25,
    )  # fmt: skip
    first, second = (c["class_labels"] for c in model.calls)
    assert torch.equal(first, second)
    dropped = first == 2
    assert torch.equal(first[~dropped], batch["labels"][~dropped])
    assert 0.18 < dropped.float().mean() < 0.32  # 100 expected of 400


def test_no_label_dropout_keeps_labels_and_attention_mask_is_forwarded():
    batch = {"labels": torch.tensor([0, 1]), "attention_mask": torch.ones(2, 3, dtype=torch.bool)}
    cond = conditioning(batch, num_classes=2, cond_dropout=0.0)
    assert cond["class_labels"].tolist() == [0, 1] and "attention_mask" in cond


def test_model_view_keeps_time_conditioning_visible_through_a_wrapper():
    class Wrapper(torch.nn.Module):  # stands in for DDP: no .config, no .time_conditioning
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, input_ids, **kwargs):
            return self.module(input_ids, **kwargs)

    inner = Recorder(time_conditioning=True)
    wrapped = Wrapper(inner)
    view = ModelView(wrapped, config=type("C", (), {"time_conditioning": True, "vocab_size": V})())
    x0 = torch.randint(3, V, (2, 5))
    batch_loss(
        view, {"input_ids": x0, "loss_mask": torch.ones_like(x0, dtype=torch.bool),
               "noise_mask": torch.ones_like(x0, dtype=torch.bool)},
        mask_id=MASK, schedule=get_schedule(), loss_config=LossConfig(), step=0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert all("timesteps" in c and c["timesteps"].shape == (2,) for c in inner.calls)
