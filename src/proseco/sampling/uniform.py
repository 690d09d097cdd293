"""Sampling a uniform-noise diffusion model (UDLM, Schiff et al. 2025).

Tokens are never masked: every generated position starts as a uniform draw over the ``N`` non-mask
tokens and is re-drawn at every step from the posterior ``q(z_s | z_t, x)`` with ``x`` replaced by
the model's prediction ``x_theta``::

    z = uniform over the N non-mask tokens          # prompt positions hold the prompt
    for t, s in grid (1 = t_0 > t_1 > ... > t_T = 0):
        x_theta = softmax(model(z, t))              # mask column excluded
        if s > 0:  z ~ (a_ts onehot(z) + (1 - a_ts) / N) * (a_s x_theta + (1 - a_s) / N)
        else:      z = argmax x_theta               # the last step (``final="sample"``: a draw)

with ``a_s = alpha(s)`` and ``a_ts = alpha(t) / alpha(s)``. Classifier-free guidance is the paper's
D-CFG: the guided transition is ``p(z_s | z_t, y)^gamma p(z_s | z_t, null)^(1 - gamma)``,
renormalised (two model evaluations per step; the last step mixes ``x_theta`` the same way).

The same settings (:class:`~proseco.SamplingConfig`: ``steps``, ``schedule``, temperature, top-k,
top-p, ``float64``, ``guidance``, ``conditioning``) and result (:class:`~proseco.SampleOutput`)
as :func:`proseco.sample`; temperature, top-k and top-p shape ``x_theta`` before it enters the
posterior. NFE: one evaluation per step per row (two with guidance at ``gamma`` not in
``{0, 1}``), so ``T`` steps cost ``T`` (``2T``); every row takes every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from proseco.errors import ConfigError
from proseco.models.protocol import is_time_conditioned, model_vocab_size
from proseco.sampling.caller import ModelCaller
from proseco.sampling.config import SamplingConfig, resolve_config
from proseco.sampling.front import RunInputs, open_run, sample_output
from proseco.sampling.output import SampleOutput
from proseco.sampling.processors import NEG_INF, LogitsProcessor, gumbel_argmax
from proseco.sampling.unmasking import Ancestral
from proseco.schedules import get_schedule

__all__ = ["sample_uniform", "check_uniform_args", "is_uniform", "uniform_posterior"]

_FINAL = ("argmax", "sample")


def is_uniform(model: Any) -> bool:
    """Whether ``model.config.diffusion == "uniform"`` (a UDLM-trained proseco DiT)."""
    return getattr(getattr(model, "config", None), "diffusion", "masked") == "uniform"


def uniform_posterior(
    log_x_theta: torch.Tensor,
    zt: torch.Tensor,
    alpha_t: float,
    alpha_s: float,
    *,
    mask_id: int | None,
) -> torch.Tensor:
    """Log-probabilities ``[n, L, V]`` of ``q(z_s | z_t, x = x_theta)`` (mask column ``-inf``).

    ``q ~ (alpha_ts onehot(z_t) + (1 - alpha_ts) / N) * (alpha_s x_theta + (1 - alpha_s) / N)``
    with ``alpha_ts = alpha_t / alpha_s`` and ``N`` the non-mask tokens.

    Args:
        log_x_theta: the model's log-probabilities ``[n, L, V]`` (mask column ``-inf``).
        zt: current tokens ``[n, L]`` (no mask ids).
        alpha_t, alpha_s: ``alpha`` at the current time ``t`` and the next ``s < t``.
        mask_id: the column that is not a token (``None``: every column is).
    """
    vocab = log_x_theta.shape[-1]
    n = vocab - (mask_id is not None and 0 <= mask_id < vocab)
    a_ts = alpha_t / alpha_s
    stay = torch.full_like(log_x_theta, (1.0 - a_ts) / n)
    stay.scatter_add_(-1, zt.unsqueeze(-1), torch.full_like(stay[..., :1], a_ts))
    log_post = stay.log() + torch.log(alpha_s * log_x_theta.exp() + (1.0 - alpha_s) / n)
    if mask_id is not None and 0 <= mask_id < vocab:
        log_post[..., mask_id] = NEG_INF
    return torch.log_softmax(log_post, dim=-1)


@dataclass
class _Setup:
    """A checked run: the front door's inputs, the model caller and the steps."""

    run: RunInputs
    caller: ModelCaller
    steps: int


def _setup(
    model: Any,
    config: SamplingConfig | None,
    batch_size: int | None,
    length: int | None,
    prompt: Any,
    prompt_attention_mask: torch.Tensor | None,
    generator: torch.Generator | None,
    mask_id: int | None,
    final: str,
    overrides: dict[str, Any],
) -> _Setup:
    """Validate every argument of :func:`sample_uniform` (no model call)."""
    config = resolve_config(config, overrides)
    if getattr(getattr(model, "config", None), "diffusion", "uniform") != "uniform":
        raise ConfigError(
            "this model was trained with masking (config.diffusion='masked'); sample it with "
            "proseco.sample, or train a UDLM model (loss.objective: udlm)"
        )
    if getattr(getattr(model, "config", None), "causal", False):
        raise ConfigError("a causal (AR) model cannot be sampled by the uniform-noise sampler")
    if config.corrector is not None:
        raise ConfigError(
            "a ProSeCo corrector needs a masked diffusion model; drop the corrector (and any "
            "--corrector-*/--preset flag) for a uniform-noise (UDLM) model"
        )
    if not isinstance(config.unmasking, Ancestral):
        raise ConfigError(
            f"a uniform-noise (UDLM) model has no masks to reveal, so the unmasking strategy "
            f"{type(config.unmasking).__name__} does not apply; drop --unmasking/--preset"
        )
    if config.block_length is not None:
        raise ConfigError("block_length is a masked-diffusion setting; drop it for a UDLM model")
    if config.cache != "none":
        raise ConfigError(
            f"cache={config.cache!r} is the block cache of masked diffusion decoding; sample a "
            "UDLM model with cache='none' (--cache none)"
        )
    if final not in _FINAL:
        raise ConfigError(f"final must be one of {_FINAL}, got {final!r}")
    vocab = model_vocab_size(model)
    if vocab is None:
        raise ConfigError("the model declares no vocabulary size (config.vocab_size)")
    run = open_run(
        model, config, mask_id=mask_id, batch_size=batch_size, length=length, prompt=prompt,
        prompt_attention_mask=prompt_attention_mask, generator=generator, needs_mask=False,
    )  # fmt: skip
    if vocab - (run.ids.mask is not None) < 2:
        raise ConfigError("uniform noise needs at least 2 non-mask tokens")
    if not is_time_conditioned(model) and hasattr(model, "config"):
        raise ConfigError(
            "a UDLM model must be time-conditioned (config.time_conditioning=True); retrain with "
            "model.time_conditioning: true"
        )
    caller = run.caller(model, attention_mask=run.attention_mask())
    steps = config.steps if config.steps is not None else run.length
    return _Setup(run, caller, steps)


def check_uniform_args(
    model: Any,
    config: SamplingConfig | None = None,
    *,
    batch_size: int | None = None,
    length: int | None = None,
    prompt: Any = None,
    prompt_attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mask_id: int | None = None,
    final: str = "argmax",
    **overrides: Any,
) -> None:
    """Raise the error :func:`sample_uniform` would raise, without calling the model."""
    _setup(
        model, config, batch_size, length, prompt, prompt_attention_mask, generator, mask_id,
        final, overrides,
    )  # fmt: skip


def _log_x_theta(logits: torch.Tensor, processor: LogitsProcessor) -> torch.Tensor:
    """``log x_theta`` ``[n, L, V]`` after temperature / top-k / top-p (greedy: one-hot)."""
    flat = logits.reshape(-1, logits.shape[-1]).clone()
    if processor.greedy:
        best = flat.argmax(-1, keepdim=True)
        out = torch.full_like(flat, NEG_INF).scatter_(-1, best, 0.0)
        out = out.double() if processor.float64 else out.float()
    else:
        out = processor.log_probs(flat)
        if not processor.float64:
            out = out.float()
    return out.view(logits.shape)


def _draw(
    log_probs: torch.Tensor, generator: torch.Generator | None, float64: bool
) -> torch.Tensor:
    """One token per position of ``log_probs`` ``[n, L, V]``; returns ``[n, L]``."""
    flat = log_probs.reshape(-1, log_probs.shape[-1])
    return gumbel_argmax(flat, generator, float64).view(log_probs.shape[:-1])


@torch.no_grad()
def sample_uniform(
    model: Any,
    config: SamplingConfig | None = None,
    *,
    batch_size: int | None = None,
    length: int | None = None,
    prompt: Any = None,
    prompt_attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mask_id: int | None = None,
    final: str = "argmax",
    return_history: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> SampleOutput:
    """Generate with a uniform-noise diffusion model (UDLM), ``T`` steps from ``t = 1`` to 0.

    Args:
        model: a time-conditioned model following :mod:`proseco.models.protocol`, trained with
            ``loss.objective: udlm`` (``config.diffusion == "uniform"``), in eval mode.
        config: decoding settings; ``steps`` (default: one per generated token), ``schedule``,
            ``temperature``, ``top_k``, ``top_p``, ``float64``, ``guidance`` (D-CFG),
            ``conditioning`` and ``pad_id`` are used; the grid is ``t_k = 1 - k / T`` down to 0
            (``eps`` is not used). A corrector, a non-default unmasking strategy or
            ``block_length`` is refused (they need masks).
        batch_size: ``B`` without a prompt (default 1); with one prompt, repeats it ``B`` times.
        length: tokens to generate after the prompt (default: the model's maximum length minus
            the prompt).
        prompt: ``[B, P]`` / ``[P]`` ids or a list of id lists (left-padded with the pad id); its
            positions are never noised or changed.
        prompt_attention_mask: ``[B, P]`` 1 = token, 0 = left padding, for a padded tensor.
        generator: ``torch.Generator`` for every draw (same seed, same tokens).
        mask_id: the column never drawn (default ``model.config.mask_token_id``).
        final: the last step's tokens: ``"argmax"`` of ``x_theta`` (as the paper's code) or
            ``"sample"`` (a draw from the processed ``x_theta``).
        return_history: accepted for a common call signature; a uniform-noise run records none
            (``history`` is None).
        progress: unused (kept for a common call signature).
        **overrides: fields of :class:`~proseco.SamplingConfig`.

    Returns:
        :class:`~proseco.SampleOutput`: ``tokens`` ``[B, P + length]``, ``prompt_length = P``,
        ``nfe = denoiser_nfe = T`` (``2T`` guided) per sample, ``model_calls``, ``nfe_per_row``,
        ``corrector_nfe = 0``, ``num_steps = T``, ``num_corrected`` zeros. EOS is not acted on:
        decoding cuts a row at its first EOS, as for the masked sampler.

    Raises:
        proseco.errors.ConfigError: a masked or causal model, a corrector, bad lengths or prompts.
    """
    del return_history, progress
    started = time.perf_counter()
    setup = _setup(
        model, config, batch_size, length, prompt, prompt_attention_mask, generator, mask_id,
        final, overrides,
    )  # fmt: skip
    run, caller, steps = setup.run, setup.caller, setup.steps
    config, mask_id, prompt_ids = run.config, run.ids.mask, run.prompt
    batch, prompt_length, device = run.batch, run.prompt_length, run.device
    n = run.vocab - (mask_id is not None)
    processor = config.processor()
    schedule = get_schedule(config.schedule)
    draw = torch.randint(0, n, (batch, run.length), generator=generator, device=device)
    if mask_id is not None:
        draw = draw + (draw >= mask_id).long()
    tokens = torch.cat([prompt_ids, draw], dim=1)
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    alphas = schedule.alpha(times).tolist()
    guided = config.guidance is not None and config.guidance.passes == 2
    gamma = config.guidance.gamma if guided else 1.0
    for k in range(steps):
        t, last = float(times[k]), k == steps - 1
        if last:
            logits = caller.denoise(tokens, t)  # D-CFG at s = 0 mixes x_theta itself
            log_x = _log_x_theta(logits, processor)
            if final == "argmax":
                new = log_x.argmax(-1)
            else:
                new = _draw(log_x, generator, processor.float64)
        else:
            cond, uncond = caller.denoise_each(tokens, t)
            zt = tokens
            log_post = uniform_posterior(
                _log_x_theta(cond, processor), zt, alphas[k], alphas[k + 1], mask_id=mask_id
            )
            if uncond is not None:
                log_u = uniform_posterior(
                    _log_x_theta(uncond, processor), zt, alphas[k], alphas[k + 1],
                    mask_id=mask_id,
                )  # fmt: skip
                mixed = gamma * log_post.clamp_min(-1e4) + (1.0 - gamma) * log_u.clamp_min(-1e4)
                if mask_id is not None:
                    mixed[..., mask_id] = NEG_INF
                log_post = torch.log_softmax(mixed, dim=-1)
            new = _draw(log_post, generator, processor.float64)
        tokens = torch.cat([prompt_ids, new[:, prompt_length:]], dim=1)
    return sample_output(
        caller, tokens, started=started, prompt_length=prompt_length, num_steps=steps
    )
