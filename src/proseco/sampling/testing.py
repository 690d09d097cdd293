"""Tiny deterministic models for tests, examples and benchmarks of the sampler (CPU, no weights).

* :class:`ToyDenoiser` — a small random network whose logits depend on the whole input (token
  embeddings pooled over the sequence), optionally time- and class-conditioned; follows the model
  protocol and accepts ``attention_mask``.
* :class:`OracleModel` — knows the right answer but only says it when its input has no mask: on an
  input that still contains masks it predicts a wrong token everywhere. MDLM sampling therefore
  returns wrong tokens and ProSeCo's corrector (whose inputs are fully unmasked) fixes them.
* :class:`TokenCache` — gives any of these the window-cache protocol
  (:mod:`proseco.models.kv_cache`) with an *exact* cache: it caches the context's tokens, not
  keys and values, and a window call reruns the whole sequence as it was when cached. Decoding
  with it tests the sampler's cache bookkeeping apart from the approximation of a real cache.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from proseco.models.kv_cache import KVCache

__all__ = ["ToyDenoiser", "OracleModel", "Spy", "TokenCache"]


class ToyDenoiser(nn.Module):
    """Context-dependent random logits ``[B, L, V]``.

    Args:
        vocab_size: ``V`` (the mask id is one of these ids).
        max_length: longest input accepted (``config.max_position_embeddings``).
        hidden: width.
        num_classes: ``> 0`` adds a label embedding with ``num_classes + 1`` rows (the last is the
            null label) read from ``class_labels``.
        time_conditioning: adds ``timesteps`` ``[B]`` as an input.
        seed: initialisation seed.
    """

    def __init__(
        self,
        vocab_size: int = 12,
        max_length: int = 64,
        hidden: int = 16,
        num_classes: int = 0,
        time_conditioning: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            vocab_size=vocab_size,
            max_position_embeddings=max_length,
            time_conditioning=time_conditioning,
            null_label=num_classes if num_classes > 0 else None,
        )
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(vocab_size, hidden, generator=g))
        self.pos = nn.Parameter(torch.randn(max_length, hidden, generator=g) * 0.5)
        self.mix = nn.Parameter(torch.randn(hidden, hidden, generator=g) / hidden**0.5)
        self.out = nn.Parameter(torch.randn(hidden, vocab_size, generator=g) * 2.0)
        self.labels = nn.Parameter(torch.randn(num_classes + 1, hidden, generator=g))
        self.time = nn.Parameter(torch.randn(hidden, generator=g))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        h = self.embed[input_ids] + self.pos[:length]  # [B, L, H]
        weights = torch.ones(input_ids.shape, dtype=h.dtype, device=h.device)
        if attention_mask is not None:
            weights = attention_mask.to(h.dtype)
        pooled = (h * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)
        context = torch.tanh(pooled @ self.mix)[:, None, :]  # [B, 1, H]
        if class_labels is not None:
            context = context + self.labels[class_labels][:, None, :]
        if self.config.time_conditioning:
            if timesteps is None:
                raise ValueError("this ToyDenoiser is time-conditioned: pass timesteps [B]")
            context = context + timesteps.to(h.dtype)[:, None, None] * self.time
        return torch.tanh(h + context) @ self.out


class OracleModel(nn.Module):
    """Right only on fully unmasked inputs: an ideal corrector over a poor denoiser.

    Args:
        target: ``[L]`` or ``[B, L]`` the right tokens for every position (prompt included).
        vocab_size: ``V``.
        mask_id: the mask id (never predicted).
        margin: logit gap between the predicted token and the others.
    """

    def __init__(
        self, target: torch.Tensor, vocab_size: int, mask_id: int, margin: float = 50.0
    ) -> None:
        super().__init__()
        target = torch.as_tensor(target, dtype=torch.long)
        self.register_buffer("target", target if target.dim() == 2 else target[None])
        wrong = (self.target + 1) % vocab_size
        wrong = torch.where(wrong == mask_id, (wrong + 1) % vocab_size, wrong)
        self.register_buffer("wrong", wrong)
        self.config = SimpleNamespace(vocab_size=vocab_size, time_conditioning=False)
        self.mask_id = mask_id
        self.margin = margin

    def forward(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        batch, length = input_ids.shape
        has_mask = (input_ids == self.mask_id).any(dim=1, keepdim=True)  # [B, 1]
        target = self.target[:, :length].expand(batch, -1)
        wrong = self.wrong[:, :length].expand(batch, -1)
        predicted = torch.where(has_mask, wrong, target)
        logits = torch.zeros(batch, length, self.config.vocab_size)
        return logits.scatter_(-1, predicted[..., None], self.margin)


class Spy(nn.Module):
    """Wraps a model and records every call's ``(input_ids, kwargs)`` in ``calls``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config, self.calls = inner, inner.config, []

    def forward(self, input_ids: torch.Tensor, **kwargs):
        self.calls.append((input_ids.clone(), kwargs))
        return self.inner(input_ids, **kwargs)


class TokenCache(nn.Module):
    """``inner`` with an exact window cache: the "keys" it caches are the context's tokens.

    ``calls`` records the input width of every call and whether it was a window call.
    """

    supports_window_cache = True

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.calls: list[tuple[int, int, bool]] = []  # (rows, width, window call)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        use_cache: bool = False,
        **kwargs,
    ):
        batch, width = input_ids.shape
        self.calls.append((batch, width, past_key_values is not None))
        if past_key_values is None:
            logits = self.inner(input_ids, attention_mask=attention_mask, **kwargs)
            if not use_cache:
                return logits
            ids = input_ids[:, None, :, None]  # [B, 1, L, 1]: the "keys" and "values"
            mask = None if attention_mask is None else attention_mask.bool()
            cache = KVCache([ids], [ids.clone()], torch.arange(width), mask)
            return SimpleNamespace(logits=logits, past_key_values=cache)
        cache = past_key_values
        positions = torch.as_tensor(position_ids).reshape(-1)
        length = cache.length + width
        full = input_ids.new_zeros((batch, length))
        full[:, cache.positions] = cache.keys[0][:, 0, :, 0]
        full[:, positions] = input_ids
        keep = torch.ones((batch, length), dtype=torch.bool, device=input_ids.device)
        if cache.key_mask is not None:
            keep[:, cache.positions] = cache.key_mask
        if attention_mask is not None:
            keep[:, positions] = attention_mask.bool()
        mask = None if bool(keep.all()) else keep.long()
        return self.inner(full, attention_mask=mask, **kwargs)[:, positions]
