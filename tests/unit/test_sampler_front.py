"""The samplers' front door: the masked, AR and UDLM samplers check their arguments, lay out
prompts and count NFEs through the same code (proseco.sampling.front); ``stop_at_eos`` lives in
``SamplingConfig`` only (``None``: each sampler's natural default)."""

from __future__ import annotations

import inspect

import pytest
import torch

from proseco.errors import ConfigError
from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig
from proseco.sampling import SamplingConfig, sample, sample_autoregressive, sample_uniform
from proseco.sampling.dispatch import sampler_for

BOS, EOS, PAD, MASK, V = 0, 1, 2, 11, 12


def tiny(kind: str, seed: int = 0) -> ProsecoDiT:
    torch.manual_seed(seed)
    flags = {"masked": {}, "ar": {"causal": True},
             "udlm": {"diffusion": "uniform", "time_conditioning": True}}[kind]  # fmt: skip
    config = ProsecoDiTConfig(
        vocab_size=V, hidden_size=16, num_layers=1, num_heads=2, cond_dim=8, max_length=12,
        dropout=0.0, mask_token_id=MASK, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
        **flags,
    )  # fmt: skip
    model = ProsecoDiT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    return model


SAMPLERS = {"masked": sample, "ar": sample_autoregressive, "udlm": sample_uniform}


@pytest.mark.parametrize("kind", list(SAMPLERS))
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
        ({"length": 0}, "length must be an int >= 1, got 0"),
        ({"generator": 123}, "generator must be a torch.Generator"),
        ({"prompt": [[3, 4], [5, 99]]}, "outside the model's vocabulary of 12"),
        ({"prompt_attention_mask": torch.ones(1, 2)}, "without a prompt"),
        ({"prompt": [3, 4], "length": 11}, "exceeds the model's maximum length 12"),
        ({"prompt": [[3], [4], [5]], "batch_size": 2}, "does not match the 3 prompts"),
        ({"mask_id": V}, "outside the model's vocabulary of 12"),
        ({"config": {"steps": 2}}, "config must be a proseco.SamplingConfig"),
    ],
)
def test_every_sampler_refuses_bad_arguments_with_the_same_words(kind, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SAMPLERS[kind](tiny(kind), **{"length": 4, **kwargs})


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_every_sampler_pads_ragged_prompts_and_counts_nfes_the_same_way(kind):
    model = tiny(kind)
    gen = torch.Generator().manual_seed(0)
    out = SAMPLERS[kind](model, prompt=[[BOS, 3, 4], [BOS]], length=4, generator=gen,
                         stop_at_eos=False)  # fmt: skip
    assert out.prompt_length == 3 and out.tokens.shape == (2, 7)
    assert out.tokens[1, :3].tolist() == [PAD, PAD, BOS]  # left-padded with the model's pad
    assert not bool((out.tokens == MASK).any())
    assert out.nfe_per_row.dtype == torch.long and out.nfe_per_row.device.type == "cpu"
    assert out.nfe == pytest.approx(float(out.nfe_per_row.double().mean()))
    assert out.corrector_nfe == 0.0 and out.corrector_nfe_per_row.tolist() == [0, 0]
    assert out.num_corrected.tolist() == [0, 0] and out.corrector_changes.rows.numel() == 0
    assert out.model_calls >= out.nfe and out.wall_time > 0


def test_stop_at_eos_is_a_setting_with_each_samplers_natural_default():
    for fn in (sample, sample_autoregressive, sample_uniform, sampler_for):
        assert "stop_at_eos" not in inspect.signature(fn).parameters
    assert SamplingConfig().stop_at_eos is None
    assert SamplingConfig().stops_at_eos(True) and not SamplingConfig().stops_at_eos(False)
    assert not SamplingConfig(stop_at_eos=False).stops_at_eos(True)
    assert SamplingConfig.from_json(SamplingConfig().to_json()).stop_at_eos is None
    with pytest.raises(ConfigError, match="stop_at_eos must be True, False or None"):
        SamplingConfig(stop_at_eos="yes")

    class AlwaysEos(torch.nn.Module):
        """A causal model that always predicts EOS."""

        config = ProsecoDiTConfig(
            vocab_size=V, max_length=12, causal=True, bos_token_id=BOS, eos_token_id=EOS
        )

        def forward(self, input_ids, **kwargs):
            logits = torch.zeros(*input_ids.shape, V)
            logits[..., EOS] = 50.0
            return logits

    check, ar = sampler_for(AlwaysEos())
    assert ar is sample_autoregressive
    stopped = ar(AlwaysEos(), batch_size=2, length=5)  # None: the AR sampler stops at EOS
    assert stopped.num_steps == 1 and stopped.nfe == 1.0
    assert stopped.generated.tolist() == [[EOS] + [EOS] * 4] * 2  # no pad: padded with EOS
    full = ar(AlwaysEos(), SamplingConfig(stop_at_eos=False), batch_size=2, length=5)
    assert full.num_steps == 5 and full.nfe == 5.0


def test_the_model_caller_moved_and_its_old_path_still_works():
    from proseco.sampling import caller, guidance

    assert guidance.ModelCaller is caller.ModelCaller
    assert "ModelCaller" in guidance.__all__
