"""UDLM (uniform-noise diffusion): forward marginal, NELBO against hand and discrete-time values."""

from __future__ import annotations

import math

import pytest
import torch

from proseco.losses import udlm_loss, udlm_terms
from proseco.noising import uniform_marginal, uniform_noise_tokens
from proseco.schedules import LogLinearSchedule, get_schedule

# --- (a) the forward process ------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.001, 0.3, 0.7, 0.999])
@pytest.mark.parametrize("mask_id", [0, 2, 5])
def test_forward_marginal_matches_alpha_onehot_plus_uniform(t: float, mask_id: int) -> None:
    vocab, draws = 6, 60_000  # N = 5 non-mask tokens
    x_token = 3 if mask_id != 3 else 1
    x0 = torch.full((1, draws), x_token)
    gen = torch.Generator().manual_seed(int(t * 1000) + mask_id)
    zt = uniform_noise_tokens(
        x0, torch.tensor([t]), vocab_size=vocab, mask_id=mask_id, generator=gen
    )
    assert not bool((zt == mask_id).any())
    freq = torch.bincount(zt.view(-1), minlength=vocab).double() / draws
    alpha = 1.0 - (1.0 - 1e-3) * t
    expected = torch.full((vocab,), (1.0 - alpha) / 5)
    expected[x_token] += alpha
    expected[mask_id] = 0.0
    assert torch.allclose(
        uniform_marginal(x0[:, :1], torch.tensor([t]), vocab_size=vocab, mask_id=mask_id)[
            0, 0
        ].float(),
        expected.float(),
    )
    # 5 sigma of a binomial frequency
    tol = 5 * torch.sqrt(expected * (1 - expected) / draws) + 1e-9
    assert bool(((freq - expected).abs() <= tol).all()), (freq, expected)


def test_forward_keeps_noise_mask_positions_and_other_schedules() -> None:
    x0 = torch.randint(0, 4, (64, 10))
    keep = torch.zeros(64, 10, dtype=torch.bool)
    keep[:, :4] = True  # a "prompt": never noised
    gen = torch.Generator().manual_seed(0)
    zt = uniform_noise_tokens(
        x0,
        torch.ones(64),
        vocab_size=5,
        mask_id=4,
        noise_mask=~keep,
        schedule="cosine",
        generator=gen,
    )
    assert torch.equal(zt[:, :4], x0[:, :4])
    assert not bool((zt == 4).any())
    # at t = 1 (alpha = eps) about (N - 1) / N of the noisable tokens change
    changed = (zt[:, 4:] != x0[:, 4:]).double().mean().item()
    assert abs(changed - 0.75) < 0.06


# --- (b) the NELBO ------------------------------------------------------------------------------


class FixedLogits(torch.nn.Module):
    """A time-conditioned "model" that returns the same logits ``[V]`` at every position."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.time_conditioning = True
        self.vocab_size = len(logits)
        self.seen_t: torch.Tensor | None = None

    def forward(self, input_ids: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.seen_t = timesteps
        return self.logits.expand(*input_ids.shape, -1).clone()


def _posterior(z_t: int, x: list[float], at: float, as_: float) -> list[float]:
    """q(z_s | z_t, x) for N tokens, from the paper's product form (float64, pure Python)."""
    n = len(x)
    ats = at / as_
    p = [(ats * (j == z_t) + (1 - ats) / n) * (as_ * x[j] + (1 - as_) / n) for j in range(n)]
    z = sum(p)
    return [v / z for v in p]


def test_udlm_loss_matches_hand_computation() -> None:
    # N = 3 tokens plus the mask (id 3); x_theta = softmax(log [1, 2, 1]) = [1/4, 1/2, 1/4];
    # x = 0, z_t = 1, t = 0.5, log-linear: alpha = 0.5005, alpha' = -0.999.
    # xbar = [3a + 1 - a, 1 - a, 1 - a] = [1.501, 0.4995, 0.4995];
    # xbar_theta = 3a x_theta + 1 - a = [0.874875, 1.25025, 0.874875]; i = z_t = 1:
    # alpha'/(N a) * [N/xbar_1 - N/xbar_theta_1 - sum_{j != 1} xbar_j/xbar_1 log(xbar_theta_1
    # xbar_j / (xbar_theta_j xbar_1))] = 2.48852553...
    model = FixedLogits([0.0, math.log(2.0), 0.0, 7.0])  # the mask logit is ignored
    out = udlm_loss(
        model, torch.tensor([[0]]), mask_id=3, t=torch.tensor([0.5]), zt=torch.tensor([[1]])
    )
    a, da, n = 0.5005, -0.999, 3
    xbar = [n * a + 1 - a, 1 - a, 1 - a]
    xbt = [n * a * p + 1 - a for p in (0.25, 0.5, 0.25)]
    bracket = (
        n / xbar[1]
        - n / xbt[1]
        - sum(xbar[j] / xbar[1] * math.log(xbt[1] * xbar[j] / (xbt[j] * xbar[1])) for j in (0, 2))
    )
    assert da / (n * a) * bracket == pytest.approx(2.4885255315, rel=1e-9)
    assert out.loss.item() == pytest.approx(2.4885255315, rel=1e-5)
    assert float(model.seen_t[0]) == 0.5  # the model is time-conditioned


@pytest.mark.parametrize("mask_id", [3, 0, 1])
@pytest.mark.parametrize("t", [0.05, 0.5, 0.95])
@pytest.mark.parametrize("case", [(0, 1), (2, 2), (1, 0)])
def test_udlm_term_is_the_limit_of_the_discrete_time_kl(mask_id, t, case) -> None:
    # KL(q(z_s | z_t, x) || p_theta(z_s | z_t)) / (t - s) -> the continuous-time integrand
    x_tok, z_tok = case  # in the N = 3 token space
    raw = [0.3, -1.2, 0.8]
    x_theta = torch.softmax(torch.tensor(raw, dtype=torch.float64), 0).tolist()
    logits = list(raw)
    logits.insert(mask_id, 9.0)
    to_id = [j if j < mask_id else j + 1 for j in range(3)]  # N-space -> vocabulary ids
    sched = LogLinearSchedule()
    at = float(sched.alpha(torch.tensor(t, dtype=torch.float64)))
    s = t - 1e-6
    as_ = float(sched.alpha(torch.tensor(s, dtype=torch.float64)))
    onehot = [float(j == x_tok) for j in range(3)]
    q = _posterior(z_tok, onehot, at, as_)
    p = _posterior(z_tok, x_theta, at, as_)
    kl = sum(a * math.log(a / b) for a, b in zip(q, p) if a > 0)
    term = udlm_terms(
        torch.tensor([[logits]], dtype=torch.float64), torch.tensor([[to_id[x_tok]]]),
        torch.tensor([[to_id[z_tok]]]), torch.tensor([at], dtype=torch.float64),
        torch.tensor([-(1 - 1e-3)], dtype=torch.float64), mask_id=mask_id,
    )  # fmt: skip
    assert term.item() == pytest.approx(kl / (t - s), rel=1e-4, abs=1e-7)


# --- (c) the minimum --------------------------------------------------------------------------


def test_udlm_loss_is_zero_when_the_model_predicts_x_and_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 4, (8, 12), generator=gen)
    x0[x0 >= 2] += 1  # mask id 2 never in the data; tokens 0, 1, 3, 4

    class Oracle(torch.nn.Module):
        time_conditioning = True
        vocab_size = 5

        def forward(self, input_ids, timesteps):
            return torch.nn.functional.one_hot(x0, 5).float() * 60.0

    out = udlm_loss(Oracle(), x0, mask_id=2, generator=gen)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    assert bool((out.mdm_terms >= 0).all())
    assert int(out.num_masked) > 0 and not bool((out.xt == 2).any())
    wrong = udlm_loss(FixedLogits([0.0] * 5), x0, mask_id=2, t=out.t, zt=out.xt)
    assert wrong.loss.item() > 0.01


def test_udlm_loss_masks_and_gradients() -> None:
    x0 = torch.tensor([[0, 1, 2, 0]])
    model = FixedLogits([0.5, 0.0, -0.5, 0.0])
    model.logits.requires_grad_(True)
    loss_mask = torch.tensor([[False, True, True, True]])
    out = udlm_loss(
        model,
        x0,
        mask_id=3,
        t=torch.tensor([0.4]),
        zt=torch.tensor([[0, 2, 2, 1]]),
        loss_mask=loss_mask,
    )
    assert out.mdm_terms[0, 0] == 0 and int(out.num_tokens) == 3
    out.loss.backward()
    assert model.logits.grad is not None and bool(torch.isfinite(model.logits.grad).all())
    with pytest.raises(ValueError, match="mask id"):
        udlm_loss(model, x0, mask_id=3, t=torch.tensor([0.4]), zt=torch.tensor([[3, 1, 2, 0]]))
    with pytest.raises(ValueError, match="noise_mask keeps clean"):
        udlm_loss(
            model,
            x0,
            mask_id=3,
            t=torch.tensor([0.4]),
            zt=torch.tensor([[1, 1, 2, 0]]),
            noise_mask=loss_mask,
        )


def test_udlm_config_and_build_checks() -> None:
    from proseco.errors import ConfigError
    from proseco.training.config import LossSection

    assert LossSection(objective="udlm").two_backward is False
    with pytest.raises(ConfigError, match="objective"):
        LossSection(objective="uniform")
    assert get_schedule(None).alpha(torch.tensor(0.0)) == 1.0


def test_the_udlm_objective_builds_a_time_conditioned_uniform_model() -> None:
    import dataclasses

    from proseco.training.build import build_model, build_tokenizer
    from proseco.training.config_io import load_config

    config = load_config("text-cpu-tiny")
    udlm = dataclasses.replace(config, loss=dataclasses.replace(config.loss, objective="udlm"))
    with pytest.raises(ValueError, match="model.time_conditioning: true"):
        build_model(udlm, build_tokenizer("char"))
    udlm = dataclasses.replace(udlm, model=dataclasses.replace(udlm.model, time_conditioning=True))
    model = build_model(udlm, build_tokenizer("char"))
    assert model.config.diffusion == "uniform" and model.config.time_conditioning
    assert build_model(config, build_tokenizer("char")).config.diffusion == "masked"


def test_saved_configs_without_the_diffusion_field_are_masked() -> None:
    from proseco.models.dit_config import ProsecoDiTConfig

    cfg = ProsecoDiTConfig.from_preset("cpu-tiny", vocab_size=12)
    data = cfg.to_dict()
    data.pop("diffusion")
    assert ProsecoDiTConfig.from_dict(data).diffusion == "masked"
    with pytest.raises(ValueError, match="diffusion"):
        ProsecoDiTConfig.from_preset("cpu-tiny", vocab_size=12, diffusion="absorbing")


def test_the_training_step_runs_the_udlm_loss_with_dropped_labels() -> None:
    from proseco.losses import LossConfig
    from proseco.training.step import batch_loss

    seen = {}

    def model(input_ids, **kwargs):
        seen.update(kwargs)
        return torch.zeros(*input_ids.shape, 6)

    model.time_conditioning = True
    model.vocab_size = 6
    batch = {
        "input_ids": torch.tensor([[0, 1, 2, 4], [1, 1, 0, 4]]),
        "loss_mask": torch.ones(2, 4, dtype=torch.bool),
        "noise_mask": torch.ones(2, 4, dtype=torch.bool),
        "labels": torch.tensor([0, 1]),
    }
    out = batch_loss(
        model, batch, mask_id=5, schedule=get_schedule(), loss_config=LossConfig(t_min=0.2),
        step=0, generator=torch.Generator().manual_seed(0), num_classes=2, cond_dropout=1.0,
        objective="udlm",
    )  # fmt: skip
    assert seen["class_labels"].tolist() == [2, 2]
    assert "timesteps" in seen and bool((seen["timesteps"] >= 0.2).all())
    assert out.loss.item() > 0 and not bool((out.xt == 5).any())


@pytest.mark.parametrize(
    "name", ["qm9-udlm-cpu", "qm9-udlm-ring-cpu", "qm9-udlm-qed-cpu", "text-udlm-cpu"]
)
def test_the_udlm_recipes_copy_the_mdlm_recipes_but_for_the_objective(name: str) -> None:
    import dataclasses

    from proseco.training.config_io import load_config

    udlm, mdlm = load_config(name), load_config(name.replace("udlm", "mdlm"))
    assert udlm.loss.objective == "udlm" and udlm.model.time_conditioning
    assert dataclasses.replace(udlm.model, time_conditioning=False) == mdlm.model
    assert udlm.data == mdlm.data and udlm.optim == mdlm.optim and udlm.train == mdlm.train
    assert udlm.loss.cond_dropout == mdlm.loss.cond_dropout


# --- (d) the sampler ----------------------------------------------------------------------------


def _tiny_udlm(mask_id: int = 7, vocab: int = 8, num_classes: int = 2, seed: int = 0):
    from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig

    torch.manual_seed(seed)
    cfg = ProsecoDiTConfig(
        vocab_size=vocab, hidden_size=16, num_layers=1, num_heads=2, cond_dim=8, max_length=12,
        dropout=0.0, time_conditioning=True, num_classes=num_classes, mask_token_id=mask_id,
        diffusion="uniform", eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    model = ProsecoDiT(cfg).eval()
    with torch.no_grad():  # make the mask column the model's favourite: it must still never win
        model.lm_head.bias[mask_id] = 50.0
    return model


class MaskLover(torch.nn.Module):
    """Time-conditioned dummy: logits favour the mask id hugely, then ``favourite``."""

    def __init__(self, vocab: int, mask_id: int, favourite: int) -> None:
        super().__init__()
        self.config = type("C", (), {"vocab_size": vocab, "mask_token_id": mask_id,
                                     "time_conditioning": True, "diffusion": "uniform",
                                     "null_label": 2, "max_position_embeddings": 16})()  # fmt: skip
        self.calls: list[tuple[float, object]] = []
        self.mask_id, self.favourite = mask_id, favourite

    def forward(self, input_ids, timesteps, class_labels=None, attention_mask=None):
        self.calls.append((float(timesteps[0]), class_labels))
        logits = torch.randn(*input_ids.shape, self.config.vocab_size)
        logits[..., self.mask_id] = 1e4
        logits[..., self.favourite] += 3.0
        return logits


def test_the_posterior_is_the_papers_product_form() -> None:
    from proseco.sampling.uniform import uniform_posterior

    x_theta = [0.2, 0.5, 0.3]
    log_x = torch.log(torch.tensor([[[0.2, 0.0, 0.5, 0.3]]], dtype=torch.float64))  # mask id 1
    post = uniform_posterior(log_x, torch.tensor([[2]]), 0.4, 0.7, mask_id=1).exp()[0, 0]
    expected = _posterior(1, x_theta, 0.4, 0.7)  # z_t = id 2 = index 1 in N-space
    assert post[1] == 0.0
    assert torch.allclose(post[[0, 2, 3]], torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma", [None, 0.0, 1.0, 3.0])
@pytest.mark.parametrize("final", ["argmax", "sample"])
def test_the_sampler_never_emits_the_mask_and_counts_nfes(seed, gamma, final) -> None:
    from proseco.sampling import Guidance, SamplingConfig
    from proseco.sampling.uniform import sample_uniform

    mask_id = 3
    model = MaskLover(vocab=6, mask_id=mask_id, favourite=4)
    guidance = None if gamma is None else Guidance(gamma=gamma, condition=1)
    config = SamplingConfig(steps=5, guidance=guidance)
    out = sample_uniform(model, config, batch_size=4, length=10, final=final,
                         generator=torch.Generator().manual_seed(seed))  # fmt: skip
    assert out.tokens.shape == (4, 10)
    assert not bool((out.tokens == mask_id).any())
    passes = 2 if gamma not in (None, 0.0, 1.0) else 1
    assert out.nfe == out.denoiser_nfe == 5 * passes and out.corrector_nfe == 0
    assert out.model_calls == len(model.calls) == 5 * passes
    assert out.nfe_per_row.tolist() == [5 * passes] * 4 and out.num_steps == 5
    times = sorted({round(t, 6) for t, _ in model.calls}, reverse=True)
    assert times == [1.0, 0.8, 0.6, 0.4, 0.2]  # t = 1 ... 1/T; the last step lands on 0
    if passes == 2:
        labels = [int(lab[0]) for _, lab in model.calls]
        assert labels == [1, 2] * 5  # conditional, then the null label, every step


def test_a_tiny_dit_samples_without_masks_and_keeps_the_prompt() -> None:
    from proseco.sampling import SamplingConfig
    from proseco.sampling.dispatch import sampler_for, sampler_kind
    from proseco.sampling.uniform import check_uniform_args, sample_uniform

    model = _tiny_udlm(mask_id=0)
    assert sampler_kind(model) == "uniform"
    check, sampler = sampler_for(model)
    assert check is check_uniform_args and sampler is sample_uniform
    prompt = torch.tensor([[5, 6, 2], [2, 2, 3]])
    for seed in range(3):
        out = sampler(
            model,
            SamplingConfig(steps=4, temperature=0.7, top_k=5),
            prompt=prompt,
            length=7,
            mask_id=0,
            generator=torch.Generator().manual_seed(seed),
        )
        assert torch.equal(out.tokens[:, :3], prompt) and out.prompt_length == 3
        assert out.generated.shape == (2, 7) and not bool((out.tokens == 0).any())
    a = sample_uniform(model, steps=3, batch_size=2, generator=torch.Generator().manual_seed(5))
    b = sample_uniform(model, steps=3, batch_size=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.tokens, b.tokens) and a.tokens.shape == (2, 12)  # default: max length


def test_a_perfect_denoiser_is_reproduced() -> None:
    from proseco.sampling.uniform import sample_uniform

    class Perfect(MaskLover):
        def forward(self, input_ids, timesteps, class_labels=None, attention_mask=None):
            logits = torch.full((*input_ids.shape, 6), -30.0)
            logits[..., 5] = 30.0
            return logits

    for final in ("argmax", "sample"):
        out = sample_uniform(Perfect(6, 3, 5), steps=3, batch_size=3, length=8, final=final,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert bool((out.tokens == 5).all())


def test_the_uniform_sampler_refuses_what_needs_masks() -> None:
    from proseco.errors import ConfigError
    from proseco.sampling import Corrector, SamplingConfig
    from proseco.sampling.uniform import check_uniform_args

    model = MaskLover(6, 3, 4)
    with pytest.raises(ConfigError, match="corrector"):
        check_uniform_args(model, SamplingConfig(corrector=Corrector(steps=1)), length=4)
    with pytest.raises(ConfigError, match="unmasking"):
        check_uniform_args(model, SamplingConfig(unmasking="remdm"), length=4)
    with pytest.raises(ConfigError, match="maximum"):
        check_uniform_args(model, length=17)
    model.config.diffusion = "masked"
    with pytest.raises(ConfigError, match="proseco.sample"):
        check_uniform_args(model, length=4)


def test_validation_nelbo_scores_a_uniform_model_with_the_udlm_nelbo() -> None:
    from proseco.eval.text import validation_nelbo

    model = _tiny_udlm(mask_id=7)
    x0 = torch.randint(0, 7, (6, 12), generator=torch.Generator().manual_seed(0))
    got = validation_nelbo(model, x0, mask_id=7, batch_size=6, seed=3)
    gen = torch.Generator().manual_seed(3)
    want = udlm_loss(model, x0, mask_id=7, generator=gen).mdm_terms.double().sum() / x0.numel()
    assert got["nelbo"] == pytest.approx(float(want), rel=1e-6)
