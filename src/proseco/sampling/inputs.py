"""Checks the arguments of :func:`proseco.sample` and lays out the sequence it works on.

The sequence is ``[prompt | length masks]`` per row. Prompts of different lengths are left-padded
(LLaDA style) and come with an attention mask; padding and prompt are never edited. The generated
part is split into blocks of ``block_length`` positions (one block when ``block_length`` is
``None``; when it does not divide the length, the last block is shorter) and ``steps`` are split
evenly across blocks, each block running its own time grid
``t_k = linspace(1, eps, steps_per_block + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from proseco.errors import ConfigError
from proseco.models.protocol import model_max_length, model_vocab_size
from proseco.schedules import Schedule

__all__ = ["Plan", "prepare", "model_device", "prompt_length_of"]


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


def model_device(model: Any, fallback: torch.device | None = None) -> torch.device:
    """The device of the model's first parameter, else ``fallback``, else CPU."""
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return fallback if fallback is not None else torch.device("cpu")


def prompt_length_of(prompt: Any) -> int:
    """Width ``P`` the prompt will have once laid out (the longest row of a list of id lists)."""
    if prompt is None:
        return 0
    if isinstance(prompt, torch.Tensor):
        return int(prompt.shape[-1]) if prompt.dim() else 1
    if isinstance(prompt, Sequence) and prompt and all(isinstance(p, int) for p in prompt):
        return len(prompt)
    if isinstance(prompt, Sequence):
        return max((len(p) for p in prompt if hasattr(p, "__len__")), default=0)
    return 0


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")


def _pad_prompts(
    prompt: Sequence[Any], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Left-pad a list of 1-D token sequences; returns ``(ids [B, P], mask [B, P] | None)``."""
    rows = []
    for p in prompt:
        row = torch.as_tensor(p)
        if row.dtype.is_floating_point or row.dtype == torch.bool:
            raise ConfigError(f"prompts must be integer token ids, got {p!r}")
        rows.append(row.long().reshape(-1))
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r) :] = r
            mask[i, width - len(r) :] = 1
    padded = bool((mask == 0).any())
    return ids.to(device), (mask.to(device) if padded else None)


def _prompt_tensor(
    prompt: Any, prompt_attention_mask: torch.Tensor | None, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(prompt, torch.Tensor):
        if prompt.dtype.is_floating_point or prompt.dtype.is_complex or prompt.dtype == torch.bool:
            raise ConfigError(
                f"prompt must hold integer token ids, got a {prompt.dtype} tensor; "
                "pass e.g. torch.tensor(ids, dtype=torch.long)"
            )
        ids = prompt.to(device=device, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2:
            raise ConfigError(
                f"prompt must be [P] or [B, P] token ids, got shape {tuple(ids.shape)}"
            )
    elif isinstance(prompt, Sequence) and prompt and all(isinstance(p, int) for p in prompt):
        ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    elif isinstance(prompt, Sequence) and prompt:
        if prompt_attention_mask is not None:
            raise ConfigError("pass prompt_attention_mask only with a prompt tensor [B, P]")
        return _pad_prompts(prompt, pad_id, device)
    else:
        raise ConfigError("prompt must be a tensor [B, P], a list of ids or a list of id lists")
    if prompt_attention_mask is None:
        return ids, None
    mask = prompt_attention_mask.to(device=device).long()
    if mask.shape != ids.shape:
        raise ConfigError(
            f"prompt_attention_mask has shape {tuple(mask.shape)} but prompt has shape "
            f"{tuple(ids.shape)}; they must match"
        )
    if not bool(((mask == 0) | (mask == 1)).all()) or bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ConfigError(
            "prompt_attention_mask must be 0/1 and left-padded (zeros before ones in each row); "
            "pad prompts on the left"
        )
    return ids, (mask if bool((mask == 0).any()) else None)


def _blocks(
    prompt_length: int, length: int, steps: int, block_length: int | None
) -> tuple[list[tuple[int, int]], int]:
    if block_length is None:
        return [(prompt_length, prompt_length + length)], steps
    _check_positive_int("block_length", block_length)
    num_blocks = -(-length // block_length)  # ceil: a last block may be shorter
    if steps % num_blocks:
        raise ConfigError(
            f"steps {steps} cannot be split evenly across {num_blocks} blocks; use a multiple of "
            f"{num_blocks} steps"
        )
    end = prompt_length + length
    starts = range(prompt_length, end, block_length)
    return [(s, min(s + block_length, end)) for s in starts], steps // num_blocks


def resolve_length(model: Any, length: int | None, prompt_length: int) -> tuple[int, int | None]:
    """``(length, the model's maximum length)``: ``length`` checked, or by default the model's
    maximum minus ``prompt_length`` (the samplers outside the masked loop share this)."""
    max_length = model_max_length(model)
    if length is None:
        if max_length is None:
            raise ConfigError("pass length=...: the model does not declare a maximum length")
        length = max_length - prompt_length
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"length must be an int >= 1, got {length!r}")
    return length, max_length


def check_fits(prompt_length: int, length: int, max_length: int | None) -> None:
    """Refuse ``prompt_length + length`` tokens past the model's ``max_length``."""
    if max_length is not None and prompt_length + length > max_length:
        raise ConfigError(
            f"prompt length {prompt_length} + length {length} exceeds the model's maximum "
            f"length {max_length}; shorten the prompt or generate fewer tokens"
        )


def prepare(
    model: Any,
    *,
    mask_id: int,
    batch_size: int | None,
    length: int,
    steps: int,
    prompt: Any,
    prompt_attention_mask: torch.Tensor | None,
    block_length: int | None,
    schedule: Schedule,
    eps: float,
    pad_id: int | None,
    eos_id: int | None,
    device: torch.device,
) -> Plan:
    """Validate the inputs of :func:`proseco.sample` and build its :class:`Plan`."""
    _check_positive_int("steps", steps)
    _check_positive_int("length", length)
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 0:
        raise ConfigError(f"mask_id must be a non-negative int, got {mask_id!r}")
    vocab = model_vocab_size(model)
    if vocab is not None and mask_id >= vocab:
        raise ConfigError(
            f"mask_id {mask_id} is outside the model's vocabulary of {vocab}; pass the mask id "
            "the model was trained with"
        )
    if not 0.0 < eps < 1.0:
        raise ConfigError(f"eps must be in (0, 1), got {eps}")
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else (0 if mask_id != 0 else 1)
    if prompt is None:
        if prompt_attention_mask is not None:
            raise ConfigError("prompt_attention_mask was given without a prompt")
        batch = 1 if batch_size is None else batch_size
        _check_positive_int("batch_size", batch)
        ids, attention = torch.empty((batch, 0), dtype=torch.long, device=device), None
    else:
        ids, attention = _prompt_tensor(prompt, prompt_attention_mask, pad_id, device)
        if batch_size is not None and batch_size != ids.shape[0]:
            if ids.shape[0] != 1:
                raise ConfigError(
                    f"batch_size {batch_size} does not match the {ids.shape[0]} prompts given; "
                    "drop batch_size or pass one prompt to repeat"
                )
            _check_positive_int("batch_size", batch_size)
            ids = ids.expand(batch_size, -1)
            if attention is not None:
                attention = attention.expand(batch_size, -1)
        if bool((ids == mask_id).any()):
            raise ConfigError(
                f"the prompt contains the mask id {mask_id}; prompts (and their padding) must be "
                "real tokens: pad with another id (pad_id)"
            )
        if vocab is not None and bool(((ids < 0) | (ids >= vocab)).any()):
            raise ConfigError(f"the prompt contains ids outside the model's vocabulary of {vocab}")
    batch, prompt_length = ids.shape
    total = prompt_length + length
    max_length = model_max_length(model)
    if max_length is not None and total > max_length:
        raise ConfigError(
            f"prompt length {prompt_length} + length {length} = {total} exceeds the model's "
            f"maximum length {max_length}; shorten the prompt or generate fewer tokens"
        )
    blocks, steps_per_block = _blocks(prompt_length, length, steps, block_length)
    masks = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
    xt = torch.cat([ids, masks], dim=1)
    editable = torch.zeros((batch, total), dtype=torch.bool, device=device)
    editable[:, prompt_length:] = True
    if attention is not None:
        attention = torch.cat([attention, torch.ones_like(masks)], dim=1)
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
