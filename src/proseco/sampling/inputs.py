"""Argument checks and prompt layout shared by every sampler.

A prompt comes as ``[B, P]`` / ``[P]`` token ids, a list of ids, or a list of id lists of
different lengths; it becomes ``ids [B, P]`` plus a ``[B, P]`` attention mask (1 = token) when
some row is left-padded (LLaDA style), else ``None``. One prompt is repeated ``batch_size`` times.
Padding and prompt are never edited by a sampler. :func:`proseco.sampling.front.open_run` runs
these checks for :func:`proseco.sample`, the AR and the UDLM sampler alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from proseco.errors import ConfigError
from proseco.models.protocol import model_max_length

__all__ = [
    "check_fits",
    "check_generator",
    "check_positive_int",
    "default_length",
    "layout_prompt",
    "model_device",
    "prompt_length_of",
]


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


def check_positive_int(name: str, value: Any) -> None:
    """Refuse anything but an ``int >= 1`` (``bool`` included) for the setting ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")


def check_generator(generator: Any, device: torch.device) -> None:
    """``generator`` must be ``None`` or a ``torch.Generator`` on the model's device type."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}; "
            "e.g. generator=torch.Generator().manual_seed(0)"
        )
    if generator.device.type != device.type:
        raise ConfigError(
            f"the generator is on {generator.device} but the model is on {device}; create it with "
            f"torch.Generator(device={str(device)!r})"
        )


def default_length(model: Any, prompt_length: int) -> int:
    """Tokens to generate when ``length`` is not given: the model's maximum minus the prompt."""
    max_length = model_max_length(model)
    if max_length is None:
        raise ConfigError("the model declares no maximum length: pass length=<tokens to generate>")
    if max_length <= prompt_length:
        raise ConfigError(
            f"the prompt ({prompt_length} tokens) fills the model's maximum length {max_length}; "
            "pass a shorter prompt"
        )
    return max_length - prompt_length


def check_fits(prompt_length: int, length: int, max_length: int | None) -> None:
    """Refuse ``prompt_length + length`` tokens past the model's ``max_length``."""
    total = prompt_length + length
    if max_length is not None and total > max_length:
        raise ConfigError(
            f"prompt length {prompt_length} + length {length} = {total} exceeds the model's "
            f"maximum length {max_length}; shorten the prompt or generate fewer tokens"
        )


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
    """``(ids [B, P], attention mask [B, P] | None)`` of one prompt argument, as given."""
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


def layout_prompt(
    prompt: Any,
    prompt_attention_mask: torch.Tensor | None,
    *,
    batch_size: int | None,
    pad_id: int,
    vocab: int | None,
    device: torch.device,
    empty: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt as ``(ids [B, P], attention mask [B, P] | None)``.

    Args:
        prompt: the sampler's ``prompt`` argument, or ``None``.
        prompt_attention_mask: ``[B, P]`` 1 = token, 0 = left padding, for a prompt tensor.
        batch_size: rows without a prompt (default 1); with one prompt, repeats it.
        pad_id: the id written before shorter prompts of a list.
        vocab: the model's vocabulary size; prompt ids must be below it (``None``: unchecked).
        device: where the ids go.
        empty: the ``[1, P0]`` start of every row when there is no prompt (default: none, ``P = 0``).
    """
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    if prompt is None:
        if prompt_attention_mask is not None:
            raise ConfigError("prompt_attention_mask was given without a prompt")
        batch = 1 if batch_size is None else batch_size
        if empty is None:
            return torch.empty((batch, 0), dtype=torch.long, device=device), None
        return empty.to(device=device, dtype=torch.long).expand(batch, -1), None
    ids, attention = _prompt_tensor(prompt, prompt_attention_mask, pad_id, device)
    if batch_size is not None and batch_size != ids.shape[0]:
        if ids.shape[0] != 1:
            raise ConfigError(
                f"batch_size {batch_size} does not match the {ids.shape[0]} prompts given; "
                "drop batch_size or pass one prompt to repeat"
            )
        ids = ids.expand(batch_size, -1)
        attention = None if attention is None else attention.expand(batch_size, -1)
    if vocab is not None and bool(((ids < 0) | (ids >= vocab)).any()):
        raise ConfigError(f"the prompt contains ids outside the model's vocabulary of {vocab}")
    return ids, attention
