"""The sampler's single door to the model: :class:`ModelCaller`.

Every model call of a sampling run (:func:`proseco.sample`, the AR and UDLM samplers) goes through
one :class:`ModelCaller`, which calls :func:`proseco.models.protocol.call_model` (time input for
time-conditioned models, extra conditioning, padding mask), applies classifier-free guidance
(:class:`~proseco.sampling.guidance.Guidance`), removes the mask token from the outputs and counts
NFEs exactly: one per network evaluation, so a guided call (``gamma`` not in ``{0, 1}``) costs 2.
A call may cover only some rows of the batch (``rows=``): per-row inputs (labels, times, the
padding mask, conditioning tensors with ``B`` rows) are gathered to match, and each row's own count
of evaluations is kept.

Guided log-probabilities: ``gamma * log p(x | z, c) + (1 - gamma) * log p(x | z, null)``,
renormalised (``gamma = 1``: conditional only, ``gamma = 0``: unconditional only, one call each).

Window cache (``SamplingConfig.cache``, :mod:`proseco.models.kv_cache`): after
:meth:`ModelCaller.begin_block` every call still takes whole sequences ``[n, L]`` but returns
logits of the block's window only (``[n, W, V]``, columns ``window[0] .. window[1] - 1``). A call
whose rows have a cache for this block runs the window alone against the cached keys and values;
otherwise (the block's first call, or rows without one) it runs the whole sequence with
``use_cache=True`` and keeps the entries outside the window. There is one cache per kind of call
(plain, conditional, unconditional: guidance needs two), with rows kept per batch row, and each
call, windowed or not, counts as one evaluation.
"""

from __future__ import annotations

from typing import Any

import torch

from proseco.errors import ModelOutputError
from proseco.models.protocol import (
    call_model_cached,
    call_model_with_quality,
    is_time_conditioned,
    model_vocab_size,
)
from proseco.sampling.processors import exclude_token

__all__ = ["ModelCaller"]

# Finite floor for log-probs before mixing, so that gamma > 1 never meets inf - inf.
_LOG_FLOOR = -1e4


class ModelCaller:
    """Calls the model for the sampler and counts NFEs, per call and per row.

    ``denoiser_nfe`` / ``corrector_nfe`` count network evaluations (a call on a subset of rows
    counts as one); ``denoiser_rows`` / ``corrector_rows`` ``[B]`` count, per row, the
    evaluations it took part in.

    Args:
        model: any model following :mod:`proseco.models.protocol`.
        mask_id: column removed (set to ``-inf``) from every output.
        batch_size: ``B``, used to build time and label tensors.
        device: device of the token tensors.
        conditioning: extra keyword arguments for every call (``class_labels``, ...).
        attention_mask: ``[B, L]`` padding mask passed to every call, or ``None``.
        guidance: a :class:`~proseco.sampling.guidance.Guidance`, or ``None``.
        cache: ``"none"``, ``"prefix"`` or ``"dual"`` (:meth:`begin_block`; the model must
            support the window cache, which :func:`proseco.sample` checks).
    """

    def __init__(
        self,
        model: Any,
        *,
        mask_id: int,
        batch_size: int,
        device: torch.device,
        conditioning: dict[str, Any] | None = None,
        attention_mask: torch.Tensor | None = None,
        guidance: Any = None,
        cache: str = "none",
    ) -> None:
        self.model = model
        self.mask_id = mask_id
        self.batch_size = batch_size
        self.device = device
        self.time_conditioned = is_time_conditioned(model)
        self.vocab_size = model_vocab_size(model)
        self.kwargs = dict(conditioning or {})
        if attention_mask is not None:
            self.kwargs["attention_mask"] = attention_mask
        self.guidance = guidance
        self.denoiser_nfe = 0
        self.corrector_nfe = 0
        self.denoiser_rows = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.corrector_rows = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.last_conditional: torch.Tensor | None = None
        # PRISM: quality logits [n, L] of the last denoiser call (of its conditional evaluation
        # when guided), or None for a model without a quality head
        self.last_quality: torch.Tensor | None = None
        self._quality: torch.Tensor | None = None
        self.cache_mode = cache
        self.window: tuple[int, int] | None = None  # columns the logits cover; None = all
        self._positions: torch.Tensor | None = None  # [W] positions of the window
        self._context: torch.Tensor | None = None  # positions kept in the caches
        self._caches: dict[str, _RowCache] = {}
        self.cache_refreshes = 0  # calls that ran the whole sequence to fill a cache
        if guidance is not None:
            null = guidance.null_label
            if null is None:
                null = getattr(getattr(model, "config", None), "null_label", None)
            if null is None:
                raise ValueError(
                    "guidance needs a null label: pass Guidance(..., null_label=N) or use a model "
                    "whose config defines null_label"
                )
            self.cond_labels = self._labels(guidance.condition)
            self.null_labels = self._labels(null)

    def begin_block(self, start: int, end: int, length: int) -> tuple[int, int]:
        """Start the block ``[start, end)`` of sequences of ``length``: forget every cache; the
        window is ``[start, length)`` (prefix cache) or ``[start, end)`` (dual). Returns the
        window, ``(0, length)`` without a cache."""
        if self.cache_mode == "none":
            return 0, length
        stop = length if self.cache_mode == "prefix" else end
        self.window = (start, stop)
        device = self.device
        self._positions = torch.arange(start, stop, device=device)
        self._context = torch.cat(
            (torch.arange(0, start, device=device), torch.arange(stop, length, device=device))
        )
        self._caches = {}
        return start, stop

    @property
    def nfe(self) -> int:
        """All model evaluations so far."""
        return self.denoiser_nfe + self.corrector_nfe

    def _labels(self, label: int | torch.Tensor) -> torch.Tensor:
        if isinstance(label, torch.Tensor):
            label = label.to(self.device, torch.long)
            if label.dim() == 0:
                return label.expand(self.batch_size)
            if label.shape != (self.batch_size,):
                raise ValueError(
                    f"guidance labels must be an int or a tensor [B] = [{self.batch_size}], "
                    f"got shape {tuple(label.shape)}"
                )
            return label
        return torch.full((self.batch_size,), int(label), dtype=torch.long, device=self.device)

    @property
    def drafts_from_conditional(self) -> bool:
        """Whether corrector drafts come from the conditional output (``in_corrector=False``)."""
        return self.guidance is not None and not self.guidance.in_corrector

    def _times(self, n: int, t: float) -> torch.Tensor | None:
        if not self.time_conditioned:
            return None
        return torch.full((n,), float(t), device=self.device)

    def _kwargs(self, rows: torch.Tensor | None) -> dict[str, Any]:
        """Model keyword arguments for ``rows`` (tensors with ``B`` rows are gathered)."""
        if rows is None:
            return self.kwargs
        return {key: _take(value, rows, self.batch_size) for key, value in self.kwargs.items()}

    def _raw(
        self,
        x: torch.Tensor,
        t: torch.Tensor | None,
        kwargs: dict[str, Any],
        rows: torch.Tensor | None = None,
        key: str = "plain",
        **extra: Any,
    ) -> torch.Tensor:
        if self.window is None:
            logits, self._quality = call_model_with_quality(self.model, x, t, **{**kwargs, **extra})
        else:
            logits, self._quality = self._windowed(x, t, {**kwargs, **extra}, rows, key)
        if not logits.is_contiguous():
            logits = logits.contiguous()
        self._check_width(logits)
        logits = exclude_token(logits, self.mask_id)
        best = logits.amax(dim=-1)  # NaN anywhere or +inf -> non-finite; a row of -inf too
        if not bool(torch.isfinite(best).all()):
            raise ModelOutputError(
                "the model returned non-finite logits (NaN, +inf, or -inf for every token but the "
                "mask at some position); check its weights (a diverged checkpoint?) and its input"
            )
        return logits

    def _windowed(
        self,
        x: torch.Tensor,
        t: torch.Tensor | None,
        kwargs: dict[str, Any],
        rows: torch.Tensor | None,
        key: str,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (and quality logits) of the window for ``x`` ``[n, L]`` through cache ``key``."""
        start, stop = self.window
        entry = self._caches.get(key)
        if entry is not None and entry.ready(rows):
            mask = kwargs.get("attention_mask")
            if isinstance(mask, torch.Tensor) and mask.dim() == 2:
                kwargs = {**kwargs, "attention_mask": mask[:, start:stop]}
            logits, quality, _ = call_model_cached(
                self.model, x[:, start:stop], t, past_key_values=entry.get(rows),
                position_ids=self._positions, **kwargs,
            )  # fmt: skip
            return logits, quality
        logits, quality, cache = call_model_cached(self.model, x, t, use_cache=True, **kwargs)
        if entry is None:
            entry = self._caches[key] = _RowCache(self.batch_size, self.device)
        entry.put(rows, cache.select(self._context))
        self.cache_refreshes += 1
        return logits[:, start:stop], None if quality is None else quality[:, start:stop]

    def _check_width(self, logits: torch.Tensor) -> None:
        """Refuse logits whose vocabulary disagrees with the model's or lacks the mask column."""
        width = logits.shape[-1]
        if self.vocab_size is not None and width > self.vocab_size:
            raise ModelOutputError(
                f"the model returned logits with {width} columns but declares a vocabulary of "
                f"{self.vocab_size}; tokens past the vocabulary could be drawn. Slice the logits "
                "to the vocabulary (or fix config.vocab_size)"
            )
        if self.mask_id >= width:
            raise ModelOutputError(
                f"the model returned logits with {width} columns, so there is no column for "
                f"mask_id {self.mask_id}; pass the mask id the model was trained with"
            )

    def _evaluate(
        self, x: torch.Tensor, t: float, guided: bool, rows: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """``(logits, conditional logits or None, evaluations made)``; mask column ``-inf``."""
        times = self._times(x.shape[0], t)
        kwargs = self._kwargs(rows)
        g = self.guidance
        if g is None:
            return self._raw(x, times, kwargs, rows), None, 1
        key = g.label_key
        cond_labels, null_labels = self.cond_labels, self.null_labels
        if rows is not None:
            cond_labels, null_labels = cond_labels[rows], null_labels[rows]
        if not guided or g.gamma == 1.0:
            logits = self._raw(x, times, kwargs, rows, "cond", **{key: cond_labels})
            return logits, logits, 1
        if g.gamma == 0.0:
            logits = self._raw(x, times, kwargs, rows, "uncond", **{key: null_labels})
            return logits, None, 1
        cond = self._raw(x, times, kwargs, rows, "cond", **{key: cond_labels})
        quality = self._quality  # the conditional evaluation's
        uncond = self._raw(x, times, kwargs, rows, "uncond", **{key: null_labels})
        self._quality = quality
        lc = torch.log_softmax(cond.float(), dim=-1).clamp_min_(_LOG_FLOOR)
        lu = torch.log_softmax(uncond.float(), dim=-1).clamp_min_(_LOG_FLOOR)
        mixed = torch.log_softmax(g.gamma * lc + (1.0 - g.gamma) * lu, dim=-1)
        return exclude_token(mixed, self.mask_id), cond, 2

    def denoise(self, x: torch.Tensor, t: float, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Denoiser logits ``[n, L, V]`` for ``x`` ``[n, L]`` at time ``t`` (guided if set);
        ``[n, W, V]`` of the window after :meth:`begin_block` with a cache.

        ``rows`` ``[n]``: the batch rows ``x`` holds (``None`` = all ``B`` rows, in order).
        """
        logits, cond, n = self._evaluate(x, t, True, rows)
        self.last_conditional = cond
        self.last_quality = self._quality
        self.denoiser_nfe += n
        _count(self.denoiser_rows, rows, n)
        return logits

    def denoise_each(
        self, x: torch.Tensor, t: float, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conditional and unconditional denoiser logits ``[n, L, V]``, not mixed.

        For samplers that apply guidance to something other than the denoiser's log-probs
        (UDLM mixes its transition probabilities). ``(logits, None)`` with one evaluation when
        there is no guidance or ``gamma`` is 0 or 1 (as :meth:`denoise`); otherwise
        ``(conditional, unconditional)``, two evaluations counted as denoiser NFEs.
        """
        g = self.guidance
        if g is None or g.passes == 1:
            return self.denoise(x, t, rows), None
        times = self._times(x.shape[0], t)
        kwargs = self._kwargs(rows)
        cond_labels, null_labels = self.cond_labels, self.null_labels
        if rows is not None:
            cond_labels, null_labels = cond_labels[rows], null_labels[rows]
        cond = self._raw(x, times, kwargs, rows, "cond", **{g.label_key: cond_labels})
        uncond = self._raw(x, times, kwargs, rows, "uncond", **{g.label_key: null_labels})
        self.last_conditional = cond
        self.denoiser_nfe += 2
        _count(self.denoiser_rows, rows, 2)
        return cond, uncond

    def correct(self, y: torch.Tensor, t: float, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Corrector logits ``[n, L, V]`` for the fully unmasked draft ``y`` ``[n, L]``.

        ``rows`` ``[n]``: the batch rows ``y`` holds (``None`` = all ``B`` rows, in order).
        """
        guided = self.guidance is None or self.guidance.in_corrector
        logits, _, n = self._evaluate(y, t, guided, rows)
        self.corrector_nfe += n
        _count(self.corrector_rows, rows, n)
        return logits

    def draft_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits whose argmax initialises the corrector draft.

        The denoiser output itself, except with ``Guidance(in_corrector=False)``, where it is the
        conditional output of the last guided call, as in the research code.
        """
        g = self.guidance
        if g is not None and not g.in_corrector and self.last_conditional is not None:
            return self.last_conditional
        return logits


class _RowCache:
    """One window cache of a block for the ``B`` rows of a run, filled row by row."""

    def __init__(self, batch_size: int, device: torch.device) -> None:
        self.batch_size = batch_size
        self.cache: Any = None  # a KVCache with B rows once filled
        self.valid = torch.zeros(batch_size, dtype=torch.bool, device=device)

    def ready(self, rows: torch.Tensor | None) -> bool:
        """Whether every row of ``rows`` (all for ``None``) has its entries."""
        return bool(self.valid.all() if rows is None else self.valid[rows].all())

    def get(self, rows: torch.Tensor | None) -> Any:
        """The cache of ``rows`` (gathered; the whole cache for ``None``)."""
        return self.cache if rows is None else self.cache.rows(rows)

    def put(self, rows: torch.Tensor | None, cache: Any) -> None:
        """Keep ``cache`` as the entries of ``rows`` (all rows for ``None``)."""
        if rows is None:
            self.cache = cache
            self.valid.fill_(True)
            return
        if self.cache is None:
            self.cache = cache.empty_rows(self.batch_size)
        self.cache.put_rows(rows, cache)
        self.valid[rows] = True


def _take(value: Any, rows: torch.Tensor, batch_size: int) -> Any:
    """``value[rows]`` for a tensor with ``batch_size`` rows; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch_size:
        return value.index_select(0, rows.to(value.device))
    return value


def _count(counts: torch.Tensor, rows: torch.Tensor | None, n: int) -> None:
    """Add ``n`` evaluations to ``counts`` ``[B]`` at ``rows`` (all rows for ``None``)."""
    if rows is None:
        counts += n
    else:
        counts.index_add_(0, rows, torch.full_like(rows, n))
