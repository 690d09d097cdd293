"""The forward (noising) processes: time draws, token masking (MDLM) and uniform noise (UDLM)."""

from __future__ import annotations

import torch

from proseco.schedules import Schedule, get_schedule

__all__ = ["sample_t", "mask_tokens", "uniform_noise_tokens", "uniform_marginal"]


def sample_t(
    batch_size: int,
    *,
    t_min: float = 1e-3,
    antithetic: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw one diffusion time per sequence, ``t ~ U[t_min, 1]``.

    With ``antithetic=True`` the draws are stratified over the batch: one uniform ``u`` and
    ``u_i = (u + i / B) mod 1``, which lowers the variance of the batch loss.

    Returns:
        ``t`` of shape ``[B]`` (float32).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    if antithetic:
        u = torch.rand(1, generator=generator, device=device)
        offsets = torch.arange(batch_size, device=device, dtype=torch.float32) / batch_size
        u = (u + offsets) % 1.0
    else:
        u = torch.rand(batch_size, generator=generator, device=device)
    return t_min + (1.0 - t_min) * u


def mask_tokens(
    x0: torch.Tensor,
    t: torch.Tensor,
    *,
    mask_id: int,
    schedule: Schedule | str | None = None,
    noise_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``xt ~ q(xt | x0)``: each noisable token becomes ``mask_id`` w.p. ``1 - alpha(t)``.

    Args:
        x0: clean tokens ``[B, L]``.
        t: times ``[B]`` in ``(0, 1]``.
        mask_id: the mask token id.
        schedule: noise schedule (default log-linear).
        noise_mask: ``[B, L]`` bool, True where a token may be noised (default: everywhere).
            Padding and SFT prompt positions should be False.
        generator: optional RNG.

    Returns:
        ``xt`` ``[B, L]``, same dtype as ``x0``.
    """
    schedule = get_schedule(schedule)
    p_mask = schedule.mask_prob(t.to(torch.float32)).view(-1, 1)
    u = torch.rand(x0.shape, generator=generator, device=x0.device)
    masked = u < p_mask
    if noise_mask is not None:
        masked &= noise_mask.bool()
    return torch.where(masked, torch.full_like(x0, mask_id), x0)


def _check_uniform_vocab(vocab_size: int, mask_id: int | None) -> int:
    """``N``, the number of tokens uniform noise draws from (the vocabulary minus the mask)."""
    if mask_id is not None and not 0 <= mask_id < vocab_size:
        raise ValueError(
            f"mask_id {mask_id} is outside the vocabulary of {vocab_size}; pass the model's mask "
            "id or None for a vocabulary without one"
        )
    n = vocab_size - (mask_id is not None)
    if n < 2:
        raise ValueError(f"uniform noise needs at least 2 non-mask tokens, got {n}")
    return n


def uniform_noise_tokens(
    x0: torch.Tensor,
    t: torch.Tensor,
    *,
    vocab_size: int,
    mask_id: int | None,
    schedule: Schedule | str | None = None,
    noise_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``zt ~ q(zt | x0) = Cat(alpha(t) onehot(x0) + (1 - alpha(t)) / N)`` (UDLM).

    Each noisable token is kept with probability ``alpha(t)`` and otherwise replaced by a token
    drawn uniformly from the ``N = vocab_size - 1`` non-mask tokens (which may be ``x0`` itself),
    so the mask id never appears in ``zt``.

    Args:
        x0: clean tokens ``[B, L]`` (no mask ids).
        t: times ``[B]`` in ``[0, 1]``.
        vocab_size: ``V``, the model's vocabulary (mask token included).
        mask_id: the mask id, never drawn; ``None`` for a vocabulary without one (``N = V``).
        schedule: noise schedule (default log-linear).
        noise_mask: ``[B, L]`` bool, True where a token may be noised (default: everywhere);
            prompt and padding positions that must stay clean are False.
        generator: optional RNG.

    Returns:
        ``zt`` ``[B, L]``, same dtype as ``x0``.
    """
    n = _check_uniform_vocab(vocab_size, mask_id)
    schedule = get_schedule(schedule)
    p_noise = schedule.mask_prob(t.to(torch.float32)).view(-1, 1)
    u = torch.rand(x0.shape, generator=generator, device=x0.device)
    noised = u < p_noise
    if noise_mask is not None:
        noised &= noise_mask.bool()
    draw = torch.randint(0, n, x0.shape, generator=generator, device=x0.device)
    if mask_id is not None:
        draw = draw + (draw >= mask_id).long()  # skip the mask id
    return torch.where(noised, draw.to(x0.dtype), x0)


def uniform_marginal(
    x0: torch.Tensor,
    t: torch.Tensor,
    *,
    vocab_size: int,
    mask_id: int | None,
    schedule: Schedule | str | None = None,
) -> torch.Tensor:
    """The probabilities ``q(zt | x0)`` ``[B, L, V]`` of :func:`uniform_noise_tokens`.

    ``alpha(t) onehot(x0) + (1 - alpha(t)) / N`` over the non-mask tokens; 0 in the mask column.
    """
    n = _check_uniform_vocab(vocab_size, mask_id)
    alpha = get_schedule(schedule).alpha(t.to(torch.float64)).view(-1, 1, 1)
    onehot = torch.nn.functional.one_hot(x0.long(), vocab_size).to(torch.float64)
    probs = alpha * onehot + (1.0 - alpha) / n
    if mask_id is not None:
        probs[..., mask_id] = 0.0
    return probs
