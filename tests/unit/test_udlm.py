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
    assert torch.allclose(uniform_marginal(x0[:, :1], torch.tensor([t]), vocab_size=vocab,
                                           mask_id=mask_id)[0, 0].float(), expected.float())
    # 5 sigma of a binomial frequency
    tol = 5 * torch.sqrt(expected * (1 - expected) / draws) + 1e-9
    assert bool(((freq - expected).abs() <= tol).all()), (freq, expected)


def test_forward_keeps_noise_mask_positions_and_other_schedules() -> None:
    x0 = torch.randint(0, 4, (64, 10))
    keep = torch.zeros(64, 10, dtype=torch.bool)
    keep[:, :4] = True  # a "prompt": never noised
    gen = torch.Generator().manual_seed(0)
    zt = uniform_noise_tokens(x0, torch.ones(64), vocab_size=5, mask_id=4, noise_mask=~keep,
                              schedule="cosine", generator=gen)
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
    out = udlm_loss(model, torch.tensor([[0]]), mask_id=3, t=torch.tensor([0.5]),
                    zt=torch.tensor([[1]]))
    a, da, n = 0.5005, -0.999, 3
    xbar = [n * a + 1 - a, 1 - a, 1 - a]
    xbt = [n * a * p + 1 - a for p in (0.25, 0.5, 0.25)]
    bracket = n / xbar[1] - n / xbt[1] - sum(
        xbar[j] / xbar[1] * math.log(xbt[1] * xbar[j] / (xbt[j] * xbar[1])) for j in (0, 2)
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
    out = udlm_loss(model, x0, mask_id=3, t=torch.tensor([0.4]), zt=torch.tensor([[0, 2, 2, 1]]),
                    loss_mask=loss_mask)
    assert out.mdm_terms[0, 0] == 0 and int(out.num_tokens) == 3
    out.loss.backward()
    assert model.logits.grad is not None and bool(torch.isfinite(model.logits.grad).all())
    with pytest.raises(ValueError, match="mask id"):
        udlm_loss(model, x0, mask_id=3, t=torch.tensor([0.4]), zt=torch.tensor([[3, 1, 2, 0]]))
    with pytest.raises(ValueError, match="noise_mask keeps clean"):
        udlm_loss(model, x0, mask_id=3, t=torch.tensor([0.4]), zt=torch.tensor([[1, 1, 2, 0]]),
                  noise_mask=loss_mask)


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
    udlm = dataclasses.replace(
        udlm, model=dataclasses.replace(udlm.model, time_conditioning=True)
    )
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


@pytest.mark.parametrize("name", ["qm9-udlm-cpu", "qm9-udlm-ring-cpu", "qm9-udlm-qed-cpu",
                                  "text-udlm-cpu"])
def test_the_udlm_recipes_copy_the_mdlm_recipes_but_for_the_objective(name: str) -> None:
    import dataclasses

    from proseco.training.config_io import load_config

    udlm, mdlm = load_config(name), load_config(name.replace("udlm", "mdlm"))
    assert udlm.loss.objective == "udlm" and udlm.model.time_conditioning
    assert dataclasses.replace(udlm.model, time_conditioning=False) == mdlm.model
    assert udlm.data == mdlm.data and udlm.optim == mdlm.optim and udlm.train == mdlm.train
    assert udlm.loss.cond_dropout == mdlm.loss.cond_dropout
