"""Training methods (``proseco.methods``): one registry owns each method's model flags, loss,
validation metric and sampler; a new method is one class plus one registration line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from proseco.errors import ConfigError
from proseco.losses import LossConfig, LossOutput
from proseco.losses.masked import masked_pass
from proseco.methods import METHODS, TrainingMethod, get_method, method_for_model
from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig
from proseco.sampling.dispatch import sampler_for, sampler_kind
from proseco.training.config import LossSection

SHIPPED = {"diffusion": "masked", "ar": "autoregressive", "udlm": "uniform", "prism": "masked"}


def tiny(**flags) -> ProsecoDiT:
    config = ProsecoDiTConfig.from_preset(
        "cpu-tiny", vocab_size=12, max_length=8, mask_token_id=11, hidden_size=32,
        num_layers=1, num_heads=2, cond_dim=16, **flags,
    )  # fmt: skip
    return ProsecoDiT(config).eval()


def test_every_shipped_method_is_registered_with_its_sampler_family():
    assert set(SHIPPED) <= set(METHODS.names())
    for name, kind in SHIPPED.items():
        assert get_method(name).name == name and get_method(name).sampler_kind == kind


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_model_built_with_a_methods_flags_is_recognised_as_that_method(name):
    method = get_method(name)
    model = tiny(**method.model_flags, time_conditioning=name == "udlm")
    assert method_for_model(model).name == name
    assert sampler_kind(model) == SHIPPED[name]
    check, sample = sampler_for(model)
    assert (check, sample) == method.sampler() or name == "ar"  # ar: a fresh partial each time


def test_an_unknown_objective_names_the_registered_methods():
    with pytest.raises(ConfigError, match="loss.objective") as err:
        LossSection(objective="mdlmm")
    assert "diffusion" in str(err.value) and "udlm" in str(err.value)


def test_validation_options_are_each_methods_own_choice():
    trained = LossConfig(sc_weight=0.0, mdm_weight=0.5, t_min=0.1, errors_upweighted=True)
    # diffusion: the corrector pass runs at weight 1 in validation, also for an MDLM run
    masked = get_method("diffusion").validation_config(trained)
    assert (masked.sc_weight, masked.mdm_weight, masked.t_min) == (1.0, 1.0, 1e-3)
    assert not masked.errors_upweighted
    # the others only move t_min to the common 0.001
    for name in ("ar", "udlm", "prism"):
        assert get_method(name).validation_config(trained) == dataclasses.replace(
            trained, t_min=1e-3
        )


def test_the_loss_section_has_a_loss_config_instead_of_being_one():
    section = LossSection(sc_weight=0.25, t_min=0.2, objective="prism", prism_fill=3)
    assert not isinstance(section, LossConfig)
    assert section.loss_config() == LossConfig(sc_weight=0.25, t_min=0.2, prism_fill=3)
    # its option fields mirror LossConfig's, with the same defaults (a new option needs both)
    options = {f.name: f.default for f in dataclasses.fields(LossConfig)}
    mirrored = {f.name: f.default for f in dataclasses.fields(LossSection) if f.name in options}
    assert mirrored == options
    with pytest.raises(ConfigError, match="loss: proposal"):
        LossSection(proposal="greedy")


def test_loss_outputs_name_their_terms():
    from proseco.losses import ar_loss, prism_loss, proseco_loss, udlm_loss

    x0 = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    assert set(ar_loss(tiny(causal=True), x0, mask_id=11).terms) == {"ar_nll"}
    uniform = tiny(diffusion="uniform", time_conditioning=True)
    assert set(udlm_loss(uniform, x0, mask_id=11, generator=g).terms) == {"udlm_nelbo"}
    prism = prism_loss(tiny(quality_head=True), x0, mask_id=11, generator=g)
    assert prism.terms == {"mdlm_nelbo": prism.mdm_loss, "prism_bce": prism.corrector_loss}
    assert set(proseco_loss(tiny(), x0, mask_id=11, generator=g).terms) == {
        "mdlm_nelbo",
        "corrector_nll",
    }
    assert set(proseco_loss(tiny(), x0, mask_id=11, sc_weight=0.0, generator=g).terms) == {
        "mdlm_nelbo"
    }


# ----------------------------------------------------------------- a new method, end to end
class UnweightedMasked(TrainingMethod):
    """A toy method: masked-token cross-entropy without the ``w(t)`` weight, one pass. It is
    the whole of a new method: a loss, a validation metric; flags, checks and the sampler are
    the defaults (a plain masked diffusion model, sampled by the masked loop)."""

    passes = 1
    calls = 0

    def loss(self, model, batch, *, mask_id, schedule, config, step, generator, conditioning,
             backward_fn):  # fmt: skip
        type(self).calls += 1
        first = masked_pass(
            model, batch["input_ids"], mask_id=mask_id, schedule=schedule, config=config,
            t=None, xt=None, loss_mask=batch["loss_mask"], noise_mask=batch["noise_mask"],
            conditioning=conditioning, generator=generator,
        )  # fmt: skip
        terms = first.mdm_terms / first.weight  # -log p(x0) at the masked positions
        loss = terms.sum() / first.num_tokens
        return LossOutput(
            loss=loss, mdm_loss=loss.detach(), corrector_loss=torch.zeros(()),
            mdm_terms=terms.detach(), corrector_terms=None, num_tokens=first.num_tokens,
            num_masked=first.masked.sum(), t=first.t, xt=first.xt, y=None,
            proposal_error_rate=None, term_names=("masked_ce", None),
        )  # fmt: skip

    def validation_metrics(self, sums):
        return {"masked_ce": float(sums[0]) / float(sums[1].clamp(min=1)), "tokens": int(sums[1])}


@pytest.fixture
def toy_method():
    METHODS.register("toy_masked_ce")(UnweightedMasked)
    yield UnweightedMasked
    METHODS.unregister("toy_masked_ce")


def test_a_registered_toy_method_trains_validates_and_samples(toy_method, tmp_path):
    from proseco import load_pretrained
    from proseco.training import train

    result = train(
        "text-cpu-tiny",
        tmp_path / "run",
        overrides={
            "loss.objective": "toy_masked_ce", "train.max_steps": 2, "train.log_every": 1,
            "train.global_batch_size": 4, "train.eval_batches": 1, "train.eval_every": 0,
            "train.save_every": 0, "train.progress_bar": False,
            "data.cache_dir": str(tmp_path / "cache"),
        },
    )  # fmt: skip
    assert toy_method.calls >= 3  # two training steps and the validation batch
    assert LossSection(objective="toy_masked_ce").two_backward is False  # one pass
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train_record = [r for r in records if r["split"] == "train"][-1]
    assert train_record["masked_ce"] == train_record["mdm_loss"] > 0  # named, old key kept
    assert "sc_copy_share" not in train_record  # no ProSeCo diagnostics
    validation = [r for r in records if r["split"] == "validation"][-1]
    assert set(validation) == {"step", "split", "masked_ce", "tokens"}
    assert validation["masked_ce"] > 0 and validation["tokens"] > 0
    assert result.validation == {k: validation[k] for k in ("masked_ce", "tokens")}

    model, tokenizer, config = load_pretrained(result.final_dir)
    assert method_for_model(model).name == "diffusion"  # the default flags: a plain MDM
    check, sample = sampler_for(model)
    config = config.replace(steps=4)
    check(model, config, mask_id=tokenizer.mask_token_id, batch_size=2, length=8)
    out = sample(model, config, mask_id=tokenizer.mask_token_id, batch_size=2, length=8,
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.tokens.shape == (2, 8) and not bool((out.tokens == tokenizer.mask_token_id).any())


def test_an_unregistered_method_is_an_unknown_objective(toy_method):
    METHODS.unregister("toy_masked_ce")
    with pytest.raises(ConfigError, match="toy_masked_ce"):
        LossSection(objective="toy_masked_ce")
    METHODS.register("toy_masked_ce")(UnweightedMasked)  # (the fixture removes it again)
