"""Keys and values of context positions, for block decoding with a cache (``SamplingConfig.cache``).

The sampler's cache protocol (Fast-dLLM's prefix and dual cache) asks two things of a model:

* ``model(input_ids [B, L], use_cache=True, ...)`` runs the whole sequence and returns, besides
  the logits, ``past_key_values``: a :class:`KVCache` of every position (``positions = 0..L-1``).
* ``model(window_ids [B, W], position_ids=[W], past_key_values=cache, ...)`` runs only the
  positions ``position_ids`` (absolute, for the position embedding); their queries attend to the
  cached keys and values as well as to the window's own, and the logits cover the window only.

A model that follows it sets the class attribute ``supports_window_cache = True``
(:func:`proseco.models.protocol.supports_window_cache`); the bundled DiT does. The sampler keeps,
per block, the entries of the positions outside the current window (:meth:`KVCache.select`),
gathers the rows of each call (:meth:`KVCache.rows`) and stores the rows of a refresh
(:meth:`KVCache.put_rows`). Keys are stored with the position embedding applied, so their order
does not matter: attention is a sum over keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["KVCache"]


@dataclass
class KVCache:
    """Per-layer keys and values of ``Lc`` cached positions.

    Attributes:
        keys: one tensor per attention layer, ``[B, heads, Lc, head_dim]`` (any layout whose
            axis 0 is the batch and axis 2 the position works: the sampler only selects along
            those two axes).
        values: as ``keys``.
        positions: ``[Lc]`` long, the absolute position of each cached entry.
        key_mask: ``[B, Lc]`` bool, ``True`` at real tokens (``False`` = left padding, never
            attended to), or ``None`` when no cached position is padding.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    positions: torch.Tensor
    key_mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """``Lc``, the number of cached positions."""
        return int(self.positions.numel())

    @property
    def batch_size(self) -> int:
        return int(self.keys[0].shape[0]) if self.keys else 0

    def select(self, index: torch.Tensor) -> KVCache:
        """The entries ``index`` ``[n]`` (indices into this cache's positions, not positions)."""
        index = index.to(self.positions.device)
        return KVCache(
            [k.index_select(2, index.to(k.device)) for k in self.keys],
            [v.index_select(2, index.to(v.device)) for v in self.values],
            self.positions.index_select(0, index),
            None if self.key_mask is None else self._mask(self.key_mask.index_select(1, index)),
        )

    def rows(self, index: torch.Tensor) -> KVCache:
        """The batch rows ``index`` ``[n]``."""
        return KVCache(
            [k.index_select(0, index.to(k.device)) for k in self.keys],
            [v.index_select(0, index.to(v.device)) for v in self.values],
            self.positions,
            None if self.key_mask is None else self.key_mask.index_select(0, index),
        )

    def empty_rows(self, batch_size: int) -> KVCache:
        """A cache of ``batch_size`` zero rows with this one's positions (for :meth:`put_rows`)."""

        def grow(t: torch.Tensor) -> torch.Tensor:
            return t.new_zeros((batch_size, *t.shape[1:]))

        mask = None
        if self.key_mask is not None:
            mask = self.key_mask.new_ones((batch_size, self.length))
        return KVCache([grow(k) for k in self.keys], [grow(v) for v in self.values],
                       self.positions, mask)  # fmt: skip

    def put_rows(self, index: torch.Tensor, other: KVCache) -> None:
        """Write ``other`` (``n`` rows, the same positions) into rows ``index`` ``[n]``, in place."""
        for mine, theirs in zip(self.keys + self.values, other.keys + other.values):
            mine.index_copy_(0, index.to(mine.device), theirs)
        if other.key_mask is not None and self.key_mask is None:
            self.key_mask = other.key_mask.new_ones((self.batch_size, self.length))
        if self.key_mask is not None:
            theirs = other.key_mask
            if theirs is None:
                theirs = self.key_mask.new_ones((len(index), self.length))
            self.key_mask.index_copy_(0, index.to(self.key_mask.device), theirs)

    @staticmethod
    def _mask(mask: torch.Tensor) -> torch.Tensor | None:
        return None if bool(mask.all()) else mask
