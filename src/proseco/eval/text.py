"""Text sample quality: generative perplexity, unigram entropy, MAUVE, validation NELBO.

The metrics of the paper's OpenWebText study (Table 2), measured with an *evaluator*: a causal LM
that re-tokenizes the samples with its own tokenizer.

* :func:`generative_perplexity` — ``exp(sum NLL / sum tokens)`` under the evaluator
  (token-weighted, as the research code aggregates it).
* :func:`sample_entropy` — per-sample Shannon entropy (nats) of the empirical unigram
  distribution of the sample's own token ids (``torch.special.entr(counts / n).sum()`` in the
  research code); the paper reports the mean over samples.
* :func:`mauve_score` — MAUVE between reference and sample texts on evaluator features (last-token
  hidden state of the last layer). ``mauve-text`` is GPL-3.0 and only an optional extra
  (``pip install 'proseco[mauve]'``); without it the score is ``None`` and one warning says so.
* :func:`validation_nelbo` — the NELBO (and its perplexity bound) of a diffusion model on
  held-out token ids; it lives in :mod:`proseco.eval.likelihood` and is re-exported here.

Every metric sees a sample cut the same way, by :func:`cut_at_eos`: it ends before its first EOS.

The evaluator (:class:`Evaluator`, :func:`load_evaluator`: SmolLM2-135M offline by default) is
loaded by :mod:`proseco.eval.evaluator`; its names are re-exported here.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from proseco.errors import ConfigError, DataError
from proseco.eval.evaluator import DEFAULT_EVALUATOR, Evaluator, evaluator_cache_dir, load_evaluator
from proseco.eval.likelihood import validation_nelbo

__all__ = [
    "Evaluator",
    "load_evaluator",
    "cut_at_eos",
    "generative_perplexity",
    "sample_entropy",
    "distinct_n",
    "generative_nll_per_sample",
    "score_texts",
    "evaluator_features",
    "mauve_score",
    "text_metrics",
    "validation_nelbo",
    "DEFAULT_EVALUATOR",
    "evaluator_cache_dir",
]

METRIC_KEYS = ("num_samples", "gen_ppl", "entropy", "entropy_std", "mean_tokens", "mauve",
               "reference_gen_ppl")  # fmt: skip
MAUVE_MISSING = (
    "MAUVE skipped: the optional package mauve-text (GPL-3.0) is not installed; "
    "install it with `pip install 'proseco[mauve]'` to compute MAUVE"
)


# --- cutting samples -------------------------------------------------------------------------


def cut_at_eos(
    ids: Sequence[int] | torch.Tensor, eos_id: int | None, *, bos_id: int | None = None
) -> list[int]:
    """A sample's tokens before its first EOS (all of them if it has none or ``eos_id`` is None).

    Args:
        ids: one sample's token ids ``[L]``.
        eos_id: the end token of the layout (None: the layout has none, nothing is cut).
        bos_id: if given and the sample starts with it, that leading BOS is dropped first, so a
            layout whose BOS is also its EOS (GPT-2's ``<|endoftext|>``) is not cut to nothing.

    Returns:
        The kept ids as a list of ints (the EOS itself is not included).
    """
    row = ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
    if bos_id is not None and row and row[0] == bos_id:
        row = row[1:]
    if eos_id is not None and eos_id in row:
        row = row[: row.index(eos_id)]
    return row


# --- generative perplexity -------------------------------------------------------------------


MAX_CHARS_PER_TOKEN = 32
"""A text is cut to ``(max_length + 1) * MAX_CHARS_PER_TOKEN`` characters before it is tokenized,
so one huge sample costs no more than a long one (no tokenizer's tokens average 32 characters;
the kept ``max_length`` tokens are the same)."""


def _encode(texts: Sequence[str], evaluator: Evaluator, max_length: int | None) -> list[list[int]]:
    """``[prefix] + tokens(text)[:max_length]`` for every text (cut to a bounded number of
    characters first, see :data:`MAX_CHARS_PER_TOKEN`)."""
    if isinstance(texts, str):
        raise ConfigError("texts must be a list of strings, got one string; wrap it in a list")
    if max_length is None:
        context = getattr(evaluator.model.config, "max_position_embeddings", None) or 1024
        max_length = int(context) - 1
    if max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    prefix = evaluator.context_id()
    chars = (max_length + 1) * MAX_CHARS_PER_TOKEN  # bounds the work on a huge sample
    encoded = evaluator.tokenizer([t[:chars] for t in texts], add_special_tokens=False)
    return [[prefix, *ids[:max_length]] for ids in encoded["input_ids"]]


def _batches(rows: list[list[int]], batch_size: int, pad_id: int):
    """Length-sorted, right-padded batches: ``(input_ids [B, L], attention_mask [B, L], index)``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        width = max(len(rows[i]) for i in index)
        ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for b, i in enumerate(index):
            ids[b, : len(rows[i])] = torch.tensor(rows[i])
            mask[b, : len(rows[i])] = 1
        yield ids, mask, index


def _pad_id(evaluator: Evaluator) -> int:
    pad = getattr(evaluator.tokenizer, "pad_token_id", None)
    return evaluator.context_id() if pad is None else int(pad)


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def score_texts(
    texts: Sequence[str],
    evaluator: Evaluator,
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    bf16: bool = False,
    features: bool = False,
) -> dict[str, torch.Tensor]:
    """One evaluator pass over ``texts``: per-text NLL sums and token counts, and optionally
    the MAUVE features of :func:`evaluator_features` from the same forward.

    Scored as in :func:`generative_perplexity`; the per-sample sums let a caller bootstrap the
    token-weighted perplexity ``exp(nll.sum() / count.sum())`` over resampled texts.

    Returns:
        ``nll`` ``[N]`` float64 (nats), ``count`` ``[N]`` int64 and, with ``features``,
        ``features`` ``[N, hidden]`` float32, all on the CPU in the order of ``texts``.
    """
    rows = _encode(texts, evaluator, max_length)
    device = evaluator.device
    nll_sums = torch.zeros(len(rows), dtype=torch.float64)
    counts = torch.zeros(len(rows), dtype=torch.long)
    feats: list[torch.Tensor | None] = [None] * len(rows)
    for ids, mask, index in _batches(rows, batch_size, _pad_id(evaluator)):
        ids, mask = ids.to(device), mask.to(device)
        with _autocast(device, bf16):
            out = evaluator.model(input_ids=ids, attention_mask=mask, output_hidden_states=features)
        nll = F.cross_entropy(
            out.logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none"
        )
        scored = mask[:, 1:].bool()
        nll_sums[index] = (nll.double() * scored).sum(dim=1).cpu()
        counts[index] = scored.sum(dim=1).cpu()
        if features:
            last = mask.sum(dim=1) - 1  # [B] position of the last real token
            hidden = out.hidden_states[-1][torch.arange(len(index), device=device), last]
            for b, i in enumerate(index):
                feats[i] = hidden[b].float().cpu()
    result = {"nll": nll_sums, "count": counts}
    if features:
        result["features"] = torch.stack(feats) if feats else torch.empty(0)
    return result


def generative_nll_per_sample(
    texts: Sequence[str],
    evaluator: Evaluator,
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per text: ``(sum of token NLLs in nats [N] float64, scored tokens [N] int64)``; see
    :func:`score_texts`."""
    out = score_texts(texts, evaluator, batch_size=batch_size, max_length=max_length, bf16=bf16)
    return out["nll"], out["count"]


def generative_nll(
    texts: Sequence[str],
    evaluator: Evaluator,
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    bf16: bool = False,
) -> tuple[float, int]:
    """``(sum of token NLLs in nats, number of scored tokens)`` over ``texts``; see
    :func:`generative_perplexity`."""
    nll_sums, counts = generative_nll_per_sample(
        texts, evaluator, batch_size=batch_size, max_length=max_length, bf16=bf16
    )
    return float(nll_sums.sum()), int(counts.sum())


def generative_perplexity(
    texts: Sequence[str],
    evaluator: Evaluator,
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    bf16: bool = False,
) -> float:
    """Perplexity of ``texts`` under the evaluator: ``exp(sum NLL / number of scored tokens)``.

    Each text is re-tokenized with the evaluator's tokenizer (no special tokens added), truncated
    to ``max_length`` tokens, and scored after one context token, ``evaluator.context_id()``
    (the tokenizer's BOS, else EOS; ``<|endoftext|>`` for SmolLM2). So every token of the text is
    scored, the first one given only that BOS, and no end token is scored: samples are expected
    to be cut at their EOS already (:func:`cut_at_eos`). The average is token-weighted over all
    texts (long samples count more), as in the research code. Texts are batched by length with
    right padding, which a causal LM never attends to.

    Args:
        texts: decoded samples.
        evaluator: from :func:`load_evaluator`.
        batch_size: texts per forward pass.
        max_length: text tokens kept per sample (default: the evaluator's context minus one).
        bf16: run the evaluator under bfloat16 autocast (about 2x faster on CPUs with bf16 units;
            NLLs are still summed in float32/64).

    Raises:
        DataError: no text has a single token to score.
    """
    total, count = generative_nll(
        texts, evaluator, batch_size=batch_size, max_length=max_length, bf16=bf16
    )
    if count == 0:
        raise DataError("no tokens to score: every text is empty after re-tokenization")
    return math.exp(total / count)


# --- entropy ---------------------------------------------------------------------------------


def sample_entropy(token_ids: Iterable[Sequence[int]] | torch.Tensor) -> list[float]:
    """Per-sample unigram entropy in nats, as the paper computes it.

    For one sample with token counts ``c_v`` over its ``n`` ids: ``H = -sum_v (c_v/n) ln(c_v/n)``
    (the research code: ``torch.special.entr(counts / counts.sum()).sum()`` over the sample's own
    ids). Cut samples with :func:`cut_at_eos` first; the paper's value is the mean of this list.

    Args:
        token_ids: samples as lists of ids, or a tensor ``[N, L]``.

    Returns:
        ``N`` floats; an empty sample has entropy 0.0.
    """
    rows = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else token_ids
    out = []
    for row in rows:
        counts = Counter(int(t) for t in row)
        n = sum(counts.values())
        out.append(-sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0)
    return out


def distinct_n(token_ids: Iterable[Sequence[int]] | torch.Tensor, n: int) -> list[float]:
    """Per-sample distinct-n: unique n-grams over all n-grams of the sample's own ids.

    1.0 means no n-gram repeats; a sample that loops ("the the and the the and") scores low.

    Args:
        token_ids: samples as lists of ids, or a tensor ``[N, L]``.
        n: the n-gram order (>= 1).

    Returns:
        ``N`` floats in ``[0, 1]``; a sample shorter than ``n`` scores 0.0.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    rows = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else token_ids
    out = []
    for row in rows:
        grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
        out.append(len(set(grams)) / len(grams) if grams else 0.0)
    return out


# --- MAUVE -----------------------------------------------------------------------------------


@torch.no_grad()
def evaluator_features(
    texts: Sequence[str],
    evaluator: Evaluator,
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    bf16: bool = False,
) -> torch.Tensor:
    """MAUVE features: the evaluator's last-layer hidden state at each text's last token.

    Texts are encoded as in :func:`generative_perplexity` (context token first); the pass is
    :func:`score_texts`'s (its NLLs come free with it).

    Returns:
        float32 ``[N, hidden]`` on the CPU, in the order of ``texts``.
    """
    out = score_texts(
        texts, evaluator, batch_size=batch_size, max_length=max_length, bf16=bf16, features=True
    )
    return out["features"]


def mauve_available() -> bool:
    """Whether ``mauve-text`` can be imported."""
    try:
        import mauve  # noqa: F401
    except ImportError:
        return False
    return True


def mauve_score(
    p_texts: Sequence[str],
    q_texts: Sequence[str],
    evaluator: Evaluator,
    *,
    seed: int = 0,
    batch_size: int = 16,
    max_length: int | None = None,
    bf16: bool = False,
    **mauve_options: Any,
) -> float | None:
    """MAUVE between reference texts ``p_texts`` and samples ``q_texts`` on evaluator features.

    Features are :func:`evaluator_features` (the research code used GPT-2 Large's; MiniLM-style
    mean-pooled sentence embeddings are blind to word order and should not be used). Then
    ``mauve.compute_mauve(p_features=..., q_features=..., seed=seed, **mauve_options)`` with the
    package defaults (k-means on PCA features, ``num_buckets = n / 10``, scaling factor 5).

    Returns:
        The MAUVE score in ``[0, 1]``, or ``None`` when ``mauve-text`` (GPL-3.0, optional extra
        ``proseco[mauve]``) is not installed; a warning then says how to install it.

    Raises:
        DataError: an empty side.
    """
    if not p_texts or not q_texts:
        raise DataError(
            f"MAUVE needs texts on both sides, got {len(p_texts)} reference and {len(q_texts)} "
            "sample texts"
        )
    try:
        import mauve
    except ImportError:
        warnings.warn(MAUVE_MISSING, stacklevel=2)
        return None
    kwargs = dict(batch_size=batch_size, max_length=max_length, bf16=bf16)
    p = evaluator_features(p_texts, evaluator, **kwargs).numpy()
    q = evaluator_features(q_texts, evaluator, **kwargs).numpy()
    result = mauve.compute_mauve(p_features=p, q_features=q, seed=seed, **mauve_options)
    return float(result.mauve)


# --- all together ----------------------------------------------------------------------------


def text_metrics(
    texts: Sequence[str] | None,
    evaluator: Evaluator | None,
    *,
    token_ids: Sequence[Sequence[int]] | torch.Tensor | None = None,
    tokenizer: Any = None,
    eos_id: int | None = None,
    bos_id: int | None = None,
    reference: Sequence[str] | None = None,
    mauve: bool = True,
    batch_size: int = 16,
    max_length: int | None = None,
    bf16: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Gen-PPL, mean entropy and MAUVE of a set of samples, with one EOS rule for all of them.

    Args:
        texts: decoded samples; None to decode ``token_ids`` (cut by :func:`cut_at_eos`) with
            ``tokenizer`` (special tokens skipped), so that text and ids end at the same EOS.
        evaluator: the scoring LM; None computes only the entropy.
        token_ids: the samples' own token ids (needed for the entropy); cut at ``eos_id``
            after a leading ``bos_id`` (see :func:`cut_at_eos`).
        tokenizer: the diffusion model's tokenizer (only to decode ``token_ids``).
        eos_id, bos_id: the layout's end / start token ids.
        reference: held-out texts: MAUVE against them and their own gen-PPL (the "data" row).
        mauve: compute MAUVE when ``reference`` is given (None in the result if not installed).
        batch_size, max_length, bf16: evaluator options (see :func:`generative_perplexity`).
        seed: MAUVE's k-means seed.

    Returns:
        ``num_samples``, ``gen_ppl``, ``entropy`` (mean over samples), ``entropy_std``,
        ``mean_tokens`` (ids per sample after the cut), ``mauve``, ``reference_gen_ppl``; a
        metric that was not computed is None.
    """
    cut = None
    if token_ids is not None:
        cut = [cut_at_eos(row, eos_id, bos_id=bos_id) for row in token_ids]
    if texts is None:
        if cut is None or tokenizer is None:
            raise ConfigError("text_metrics needs texts, or token_ids together with a tokenizer")
        texts = tokenizer.batch_decode(cut, skip_special_tokens=True)
    texts = list(texts)
    if not texts:
        raise DataError("no samples to evaluate")
    if cut is not None and len(cut) != len(texts):
        raise DataError(f"{len(texts)} texts but {len(cut)} token rows; they must pair up")
    out: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    out["num_samples"] = len(texts)
    if cut is not None:
        entropies = torch.tensor(sample_entropy(cut), dtype=torch.float64)
        out["entropy"] = float(entropies.mean())
        out["entropy_std"] = float(entropies.std()) if len(entropies) > 1 else 0.0
        out["mean_tokens"] = sum(map(len, cut)) / len(cut)
    if evaluator is not None:
        options = dict(batch_size=batch_size, max_length=max_length, bf16=bf16)
        out["gen_ppl"] = generative_perplexity(texts, evaluator, **options)
        if reference:
            out["reference_gen_ppl"] = generative_perplexity(reference, evaluator, **options)
            if mauve:
                out["mauve"] = mauve_score(reference, texts, evaluator, seed=seed, **options)
    return out
