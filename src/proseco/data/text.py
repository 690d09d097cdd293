"""Text data for masked diffusion: reading records, pretraining chunks and SFT pairs.

Reading (:func:`read_records`): local ``.txt`` (one record per blank-line-separated paragraph),
``.jsonl`` / ``.json``, ``.csv`` and ``.parquet`` files, a directory or glob of them, or a Hugging
Face dataset name (``datasets`` is imported only then). :func:`split_records` holds out a seeded
random validation share of the records.

Encoding returns a dict of tensors, one row per example ``[N, L]``:

* ``input_ids`` — the clean tokens ``x0``;
* ``loss_mask`` — positions that carry loss; ``noise_mask`` — positions that may be masked;
* ``attention_mask`` — present when padding must be hidden from the model.

:func:`encode_pretraining` builds the MDLM "wrapped" layout (documents + EOS concatenated and cut
into ``[BOS] chunk [EOS]``) or a padded one (``[BOS] doc [EOS] <pad>...``);
:func:`encode_sft` lays out ``prompt | response EOS | pad`` where the prompt is never noised and
carries no loss.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proseco.data.corpus import CORPUS_PREFIX, read_corpus
from proseco.fileio import read_jsonl_objects
from proseco.special_tokens import tokenizer_special_ids

__all__ = [
    "read_records",
    "list_source_files",
    "record_field",
    "split_records",
    "encode_pretraining",
    "encode_sft",
    "prompt_ids",
    "special_ids",
]

_EXTENSIONS = (".txt", ".jsonl", ".json", ".csv", ".parquet")


PACKAGE_PREFIX = "package:"


def _looks_like_hub_name(source: str) -> bool:
    if source.startswith((".", "/", "~", PACKAGE_PREFIX)) or source.lower().endswith(_EXTENSIONS):
        return False
    return source.count("/") <= 1 and not any(ch in source for ch in "*?[")


def resolve_source(source: str) -> str:
    """Map ``package:REL/PATH`` to a file shipped inside the ``proseco`` package."""
    if source.startswith(PACKAGE_PREFIX):
        from importlib import resources

        return str(Path(str(resources.files("proseco"))) / source[len(PACKAGE_PREFIX) :])
    return source


def list_source_files(source: str) -> list[Path] | None:
    source = resolve_source(source)
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _EXTENSIONS)
        if not files:
            raise ValueError(
                f"directory {source!r} holds no {'/'.join(_EXTENSIONS)} files; point data.source "
                "at a data file"
            )
        return files
    matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(source)) if Path(p).is_file())
    if matches:
        return matches
    if any(ch in source for ch in "*?["):
        raise ValueError(f"data source glob {source!r} matches no files")
    return None


def _read_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        paragraphs = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n")]
        return [{"text": p} for p in paragraphs if p.strip()]
    if suffix == ".jsonl":
        records = read_jsonl_objects(path, what="data file", hint="", empty=None, objects=False)
        return [record for _, record in records]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        return list(data)
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(
                f"reading {path} needs pyarrow: pip install pyarrow (or convert it to jsonl)"
            ) from None
        return pq.read_table(path).to_pylist()
    raise ValueError(f"unsupported data file {path}; use one of {', '.join(_EXTENSIONS)}")


def _read_hub(name: str, split: str, config_name: str | None) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"data.source {name!r} is not a local file, so it is read as a Hugging Face dataset, "
            'which needs `pip install "proseco[text]"` (or give the path of a local file)'
        ) from None
    return list(datasets.load_dataset(name, config_name, split=split))


def read_records(
    source: str,
    *,
    split: str = "train",
    hub_config: str | None = None,
    max_records: int | None = None,
) -> list[dict[str, Any]]:
    """Read records (dicts) from a local file / directory / glob, a corpus or a hub dataset.

    Args:
        source: a path, directory, glob, ``corpus:kjv`` / ``corpus:shakespeare`` (one record
            per document, :mod:`proseco.data.corpus`), or a hub name such as ``"org/name"``.
        split, hub_config: the split and config name of a hub dataset.
        max_records: keep only the first ``max_records``.

    Raises:
        FileNotFoundError: a local-looking path that does not exist.
        ValueError: an empty source.
    """
    files = None if source.startswith(CORPUS_PREFIX) else list_source_files(source)
    if source.startswith(CORPUS_PREFIX):
        records = read_corpus(source)
    elif files is None:
        if not _looks_like_hub_name(source):
            raise FileNotFoundError(
                f"data source {source!r} not found: no such file or directory (a Hugging Face "
                "dataset is given by its hub name, e.g. 'org/name')"
            )
        records = _read_hub(source, split, hub_config)
    else:
        records = [r for path in files for r in _read_file(path)]
    if max_records is not None:
        records = records[:max_records]
    if not records:
        raise ValueError(f"data source {source!r} holds no records; it is empty")
    return records


def split_records(
    records: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out ``round(fraction * N)`` records (at least one) for validation.

    The held-out records are the first of ``numpy.random.default_rng(seed).permutation(N)``;
    both parts keep the records' original order. ``fraction <= 0`` holds out nothing.

    Returns:
        ``(train, validation)``.
    """
    if fraction <= 0:
        return records, []
    n_val = max(1, int(round(fraction * len(records))))
    if n_val >= len(records):
        raise ValueError(
            f"data.validation_fraction={fraction} of {len(records)} records leaves nothing to "
            "train on; add data or lower the fraction"
        )
    perm = np.random.default_rng(seed).permutation(len(records))
    val = set(perm[:n_val].tolist())
    return [r for i, r in enumerate(records) if i not in val], [records[i] for i in sorted(val)]


def special_ids(tokenizer: Any) -> dict[str, int]:
    """``bos``, ``eos``, ``pad`` and ``mask`` ids of a tokenizer, all required (its fallbacks:
    :func:`proseco.special_tokens.tokenizer_special_ids`, BOS -> CLS -> EOS, EOS -> SEP)."""
    found = tokenizer_special_ids(tokenizer)
    ids = {"bos": found.bos, "eos": found.eos, "pad": found.pad, "mask": found.mask}
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(
            f"tokenizer has no {'/'.join(missing)} token; add them with "
            "tokenizer.add_special_tokens(...) (proseco.training adds mask/pad automatically)"
        )
    return ids


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def record_field(records: Sequence[dict[str, Any]], name: str) -> list[str]:
    values = []
    for i, record in enumerate(records):
        if name not in record:
            raise ValueError(
                f"record {i} has no field {name!r}; its fields are {sorted(record)} (set "
                "data.text_field / data.prompt_field / data.response_field)"
            )
        value = record[name]
        values.append(value if isinstance(value, str) else str(value))
    return values


def _fit(ids: list[int], length: int, overlong: str, longest: list[int]) -> list[int] | None:
    if len(ids) <= length:
        return ids
    if overlong == "truncate":
        return ids[:length]
    if overlong == "drop":
        return None
    longest[0] = max(longest[0], len(ids))
    return ids


def _pack(
    rows: list[list[int]], masks: list[list[bool]], pad: int, length: int
) -> dict[str, torch.Tensor]:
    n = len(rows)
    input_ids = torch.full((n, length), pad, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.bool)
    trainable = torch.zeros((n, length), dtype=torch.bool)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = True
        trainable[i, : len(row)] = torch.tensor(mask, dtype=torch.bool)
    return {"input_ids": input_ids, "attention_mask": attention, "trainable": trainable}


def _finish(packed: dict[str, torch.Tensor], train_on_padding: bool) -> dict[str, torch.Tensor]:
    attention, trainable = packed.pop("attention_mask"), packed.pop("trainable")
    if train_on_padding:
        padding = ~attention
        packed["loss_mask"] = trainable | padding
    else:
        packed["loss_mask"] = trainable
        packed["attention_mask"] = attention
    packed["noise_mask"] = packed["loss_mask"].clone()
    return packed


def encode_pretraining(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    max_length: int,
    layout: str = "wrapped",
    overlong: str = "error",
    train_on_padding: bool = False,
) -> dict[str, torch.Tensor]:
    """Tokenize documents for pretraining.

    Args:
        texts: the documents.
        tokenizer: a Hugging Face tokenizer with BOS/EOS/PAD/MASK (see :func:`special_ids`).
        max_length: ``L``.
        layout: ``wrapped``: documents (each followed by EOS) are concatenated and cut into
            chunks of ``L - 2`` framed as ``[BOS] chunk [EOS]``; the remainder is dropped, every
            position carries loss and no attention mask is needed. ``padded``: one example per
            document, ``[BOS] doc [EOS]`` then padding.
        overlong: for ``padded``: ``error``, ``truncate`` or ``drop`` documents longer than ``L``.
        train_on_padding: for ``padded``: padding carries loss and is noised.

    Returns:
        ``input_ids`` / ``loss_mask`` / ``noise_mask`` ``[N, L]`` (+ ``attention_mask``; for
        ``padded``, ``record_index`` ``[N]``: which document each row came from).
    """
    ids = special_ids(tokenizer)
    tokens = _tokenize(tokenizer, texts)
    if layout == "wrapped":
        stream = [t for doc in tokens for t in (*doc, ids["eos"])]
        chunk = max_length - 2
        n = len(stream) // chunk
        if n == 0:
            raise ValueError(
                f"the text has {len(stream)} tokens, fewer than one chunk of {chunk} "
                f"(max_length {max_length} - 2); add text or lower data.max_length"
            )
        body = torch.tensor(stream[: n * chunk], dtype=torch.long).view(n, chunk)
        input_ids = torch.cat(
            [torch.full((n, 1), ids["bos"]), body, torch.full((n, 1), ids["eos"])], dim=1
        )
        loss_mask = torch.ones_like(input_ids, dtype=torch.bool)
        return {"input_ids": input_ids, "loss_mask": loss_mask, "noise_mask": loss_mask.clone()}
    if layout != "padded":
        raise ValueError(f"layout must be 'wrapped' or 'padded', got {layout!r}")
    rows, masks, kept, longest = [], [], [], [0]
    for i, doc in enumerate(tokens):
        row = _fit([ids["bos"], *doc, ids["eos"]], max_length, overlong, longest)
        if row is not None:
            rows.append(row)
            masks.append([True] * len(row))
            kept.append(i)
    _raise_overlong(longest[0], max_length, "document (with BOS/EOS)")
    if not rows:
        raise ValueError("no document fits data.max_length; raise it or use overlong=truncate")
    out = _finish(_pack(rows, masks, ids["pad"], max_length), train_on_padding)
    out["record_index"] = torch.tensor(kept, dtype=torch.long)
    return out


def _raise_overlong(longest: int, max_length: int, what: str) -> None:
    if longest:
        raise ValueError(
            f"a {what} has {longest} tokens, longer than data.max_length={max_length}; raise "
            "data.max_length, or set data.overlong to 'truncate' or 'drop'"
        )


CHAT_TEMPLATE_CHOICES = ("auto", "none")
PAD_WITH_CHOICES = ("pad", "eos")


def _prompt_ids(tokenizer: Any, prompt: str, bos: int, chat_template: str = "auto") -> list[int]:
    """``[BOS] prompt``, or the chat template applied to one user turn (``auto`` and one exists)."""
    if chat_template == "auto" and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
    return [bos, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]


def prompt_ids(tokenizer: Any, prompt: str, chat_template: str = "auto") -> list[int]:
    """``prompt`` laid out as :func:`encode_sft` lays out an SFT prompt: the tokenizer's chat
    template applied to one user turn with the generation prompt (``chat_template='auto'`` and
    the tokenizer has one), else ``[BOS] prompt`` (BOS falls back to CLS, then EOS; none when
    the tokenizer has none of them).

    A model fine-tuned by ``proseco train`` (``data.kind: sft``) saw its prompts exactly so;
    ``proseco sample --prompt`` and ``eval humaneval --generate`` prompt it this way.
    """
    if chat_template not in CHAT_TEMPLATE_CHOICES:
        raise ValueError(
            f"chat_template must be one of {CHAT_TEMPLATE_CHOICES}, got {chat_template!r}"
        )
    bos = tokenizer_special_ids(tokenizer).bos
    if bos is None and not (chat_template == "auto" and getattr(tokenizer, "chat_template", None)):
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return _prompt_ids(tokenizer, prompt, bos, chat_template)


def encode_sft(
    prompts: Sequence[str],
    responses: Sequence[str],
    tokenizer: Any,
    *,
    max_length: int,
    overlong: str = "error",
    train_on_padding: bool = False,
    chat_template: str = "auto",
    pad_with: str = "pad",
) -> dict[str, torch.Tensor]:
    """Tokenize prompt/response pairs as ``prompt | response EOS | pad``.

    The prompt is ``[BOS] prompt`` or, when the tokenizer has a chat template and
    ``chat_template='auto'``, the template applied to one user turn with the generation prompt
    (``'none'`` ignores the template). Prompt positions are never noised and carry no loss;
    response and EOS positions do (padding too if ``train_on_padding``).
    ``overlong='truncate'`` shortens the response (an overlong prompt is always an error or
    dropped).

    ``pad_with='eos'`` fills the padding with EOS instead of PAD: LLaDA's SFT convention
    (GUIDELINES.md: the response is followed by EOS tokens up to the sequence length, and with
    ``train_on_padding`` they are noised and carry loss like response tokens), so the model
    learns the answer's length by predicting EOS.

    Returns:
        ``input_ids`` / ``loss_mask`` / ``noise_mask`` / ``prompt_mask`` ``[N, L]``
        (+ ``attention_mask`` unless ``train_on_padding``) and ``record_index`` ``[N]``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if chat_template not in CHAT_TEMPLATE_CHOICES:
        raise ValueError(
            f"chat_template must be one of {CHAT_TEMPLATE_CHOICES}, got {chat_template!r}"
        )
    if pad_with not in PAD_WITH_CHOICES:
        raise ValueError(f"pad_with must be one of {PAD_WITH_CHOICES}, got {pad_with!r}")
    ids = special_ids(tokenizer)
    answers = _tokenize(tokenizer, responses)
    rows, masks, kept, longest = [], [], [], [0]
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        head = _prompt_ids(tokenizer, prompt, ids["bos"], chat_template)
        tail = [*answer, ids["eos"]]
        if len(head) >= max_length:
            if overlong == "drop":
                continue
            raise ValueError(
                f"a prompt has {len(head)} tokens, leaving no room for the response within "
                f"data.max_length={max_length}; raise data.max_length or shorten the prompt"
            )
        if len(head) + len(tail) > max_length:
            if overlong == "drop":
                continue
            if overlong == "truncate":
                tail = tail[: max_length - len(head)]
            else:
                longest[0] = max(longest[0], len(head) + len(tail))
        rows.append(head + tail)
        masks.append([False] * len(head) + [True] * len(tail))
        kept.append(i)
    _raise_overlong(longest[0], max_length, "prompt + response")
    if not rows:
        raise ValueError("no prompt/response pair fits data.max_length; raise it")
    packed = _pack(rows, masks, ids[pad_with], max_length)
    prompt_mask = packed["attention_mask"] & ~packed["trainable"]
    out = _finish(packed, train_on_padding)
    out["prompt_mask"] = prompt_mask
    out["record_index"] = torch.tensor(kept, dtype=torch.long)
    return out
