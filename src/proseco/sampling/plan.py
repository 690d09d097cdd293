"""The plan of a masked diffusion run: ``[prompt | masks]``, its blocks and their time grid.

The sequence is ``[prompt | length masks]`` per row (the prompt laid out by
:func:`proseco.sampling.front.open_run`). The generated part is split into blocks of
``block_length`` positions (one block when ``block_length`` is ``None``; when it does not divide
the length, the last block is shorter) and ``steps`` are split evenly across blocks, each block
running its own time grid ``t_k = linspace(1, eps, steps_per_block + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proseco.errors import ConfigError
from proseco.sampling.inputs import check_positive_int
from proseco.schedules import Schedule

__all__ = ["Plan", "make_plan"]


@dataclass
class Plan:
    """The initial state and the time plan of a sampling run.

    Attributes:
        xt: ``[B, P + length]`` prompt followed by masks.
        editable: ``[B, P + length]`` bool, positions sampling may write (the generated part).
        attention_mask: ``[B, P + length]`` 1 = real token, or ``None`` when there is no padding.
        prompt_length: ``P``.
        blocks: ``(start, end)`` column ranges of the blocks, in order.
        steps_per_block: unmasking steps per block.
        times: ``steps_per_block + 1`` times from 1 to ``eps``.
        alphas: ``alpha`` of each time under the sampling schedule.
    """

    xt: torch.Tensor
    editable: torch.Tensor
    attention_mask: torch.Tensor | None
    prompt_length: int
    blocks: list[tuple[int, int]]
    steps_per_block: int
    times: list[float]
    alphas: list[float]


def _blocks(
    prompt_length: int, length: int, steps: int, block_length: int | None
) -> tuple[list[tuple[int, int]], int]:
    if block_length is None:
        return [(prompt_length, prompt_length + length)], steps
    check_positive_int("block_length", block_length)
    num_blocks = -(-length // block_length)  # ceil: a last block may be shorter
    if steps % num_blocks:
        raise ConfigError(
            f"steps {steps} cannot be split evenly across {num_blocks} blocks; use a multiple of "
            f"{num_blocks} steps"
        )
    end = prompt_length + length
    starts = range(prompt_length, end, block_length)
    return [(s, min(s + block_length, end)) for s in starts], steps // num_blocks


def make_plan(
    prompt: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    *,
    mask_id: int,
    length: int,
    steps: int,
    block_length: int | None,
    schedule: Schedule,
    eps: float,
) -> Plan:
    """The :class:`Plan` of ``prompt`` ``[B, P]`` (its padding mask ``[B, P]`` or ``None``)
    followed by ``length`` masks."""
    check_positive_int("steps", steps)
    if not 0.0 < eps < 1.0:
        raise ConfigError(f"eps must be in (0, 1), got {eps}")
    if bool((prompt == mask_id).any()):
        raise ConfigError(
            f"the prompt contains the mask id {mask_id}; prompts (and their padding) must be "
            "real tokens: pad with another id (pad_id)"
        )
    batch, prompt_length = prompt.shape
    total = prompt_length + length
    blocks, steps_per_block = _blocks(prompt_length, length, steps, block_length)
    masks = torch.full((batch, length), mask_id, dtype=torch.long, device=prompt.device)
    xt = torch.cat([prompt, masks], dim=1)
    editable = torch.zeros((batch, total), dtype=torch.bool, device=prompt.device)
    editable[:, prompt_length:] = True
    attention = None
    if prompt_mask is not None:
        attention = torch.cat([prompt_mask, torch.ones_like(masks)], dim=1)
    grid = torch.linspace(1.0, eps, steps_per_block + 1, dtype=torch.float64)
    alphas = schedule.alpha(grid)
    return Plan(
        xt=xt,
        editable=editable,
        attention_mask=attention,
        prompt_length=prompt_length,
        blocks=blocks,
        steps_per_block=steps_per_block,
        times=grid.tolist(),
        alphas=alphas.tolist(),
    )
