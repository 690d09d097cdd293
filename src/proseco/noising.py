"""The forward (noising) process of masked diffusion: time draws and token masking."""

from __future__ import annotations

import torch

from proseco.schedules import Schedule, get_schedule

__all__ = ["sample_t", "mask_tokens"]


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
