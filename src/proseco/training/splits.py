"""Tokenized training splits, built from a :class:`~proseco.training.config.DataSection` and
cached on disk.

:func:`build_splits` reads the records (:mod:`proseco.data.text`) or QM9 (:mod:`proseco.data.qm9`),
encodes them with the tokenizer, holds out a validation split, checks the result (no mask token
inside the data, labels in range, no empty split) and returns two
:class:`~proseco.training.batches.TokenDataset` s (train, validation) of ``[N, L]`` tensors.
Tokenized data is cached as safetensors under ``data.cache_dir``, keyed by the sources (path,
size, mtime), the tokenizer and every data option, so a second run (or the other processes of a
distributed run) skip tokenizing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from proseco.data.text import (
    CORPUS_PREFIX,
    encode_pretraining,
    encode_sft,
    list_source_files,
    read_records,
    record_field,
    special_ids,
    split_records,
)
from proseco.training.batches import TokenDataset
from proseco.training.config import DataSection

__all__ = ["build_splits", "default_cache_dir", "CACHE_VERSION"]

CACHE_VERSION = 1


def _fingerprint_tokenizer(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    payload = json.dumps(
        [
            type(tokenizer).__name__,
            vocab,
            {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
            getattr(tokenizer, "chat_template", None),
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _fingerprint_source(source: str | None) -> Any:
    if source is None:
        return None
    if source.startswith(CORPUS_PREFIX):  # no files to stat: the cleaning code's version instead
        from proseco.data.corpus import CORPUS_VERSION

        return [source, CORPUS_VERSION]
    try:
        files = list_source_files(source)
    except ValueError:
        files = None
    if not files:
        return source
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _qm9_version(cfg: DataSection) -> Any:
    if cfg.kind != "qm9":
        return None
    from proseco.data import qm9

    return ["qm9pack", qm9.CACHE_VERSION, qm9.QM9_SIZE]


def default_cache_dir() -> Path:
    """``$PROSECO_CACHE_DIR/data`` or ``~/.cache/proseco/data``."""
    root = os.environ.get("PROSECO_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "proseco") / "data"


def _cache_path(cfg: DataSection, tokenizer: Any) -> Path:
    options = {k: v for k, v in asdict(cfg).items() if k not in ("cache_dir",)}
    key = json.dumps(
        {
            "version": CACHE_VERSION,
            "options": options,
            "source": _fingerprint_source(cfg.source) or _qm9_version(cfg),
            "validation_source": _fingerprint_source(cfg.validation_source),
            "tokenizer": _fingerprint_tokenizer(tokenizer),
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    return root / f"{cfg.kind}-{digest}.safetensors"


def _encode_records(
    records: list[dict], cfg: DataSection, tokenizer: Any
) -> dict[str, torch.Tensor]:
    if cfg.kind == "sft":
        out = encode_sft(
            record_field(records, cfg.prompt_field),
            record_field(records, cfg.response_field),
            tokenizer,
            max_length=cfg.max_length,
            overlong=cfg.overlong,
            train_on_padding=cfg.train_on_padding,
            chat_template=cfg.chat_template,
            pad_with=cfg.pad_with,
        )
    else:
        layout = "padded" if cfg.label is not None else cfg.layout
        out = encode_pretraining(
            record_field(records, cfg.text_field),
            tokenizer,
            max_length=cfg.max_length,
            layout=layout,
            overlong=cfg.overlong,
            train_on_padding=cfg.train_on_padding,
        )
    if cfg.label is not None:
        labels = []
        for i, record in enumerate(records):
            value = record.get(cfg.label)
            try:
                labels.append(int(value))
            except (TypeError, ValueError):
                raise ValueError(
                    f"record {i} has label {cfg.label}={value!r}; labels must be integers in "
                    f"[0, data.num_classes={cfg.num_classes})"
                ) from None
        out["labels"] = torch.tensor(labels, dtype=torch.long)[out["record_index"]]
    out.pop("record_index", None)
    out.pop("prompt_mask", None)
    return out


def _qm9_split(cfg: DataSection, tokenizer: Any, split: str) -> dict[str, torch.Tensor]:
    from proseco.data.qm9 import qm9_tensors

    overflow = "truncate" if cfg.overlong == "truncate" else "error"
    raw = qm9_tensors(tokenizer, split, cfg.max_length, cfg.label, overflow=overflow)
    if split == "train" and cfg.max_records is not None:
        raw = {k: v[: cfg.max_records] for k, v in raw.items()}
    real = raw["attention_mask"].bool()
    out: dict[str, torch.Tensor] = {"input_ids": raw["input_ids"]}
    if cfg.train_on_padding:
        out["loss_mask"] = torch.ones_like(real)
    else:
        out["loss_mask"] = real
        out["attention_mask"] = real
    out["noise_mask"] = out["loss_mask"].clone()
    if "labels" in raw:
        out["labels"] = raw["labels"].long()
    return out


def _encode_all(cfg: DataSection, tokenizer: Any) -> dict[str, torch.Tensor]:
    if cfg.kind == "qm9" and cfg.source is None:
        train = _qm9_split(cfg, tokenizer, "train")
        val = _qm9_split(cfg, tokenizer, "validation") if cfg.validation_fraction > 0 else {}
    else:
        read = {"split": cfg.split, "hub_config": cfg.hub_config, "max_records": cfg.max_records}
        records = read_records(cfg.source, **read)
        if cfg.kind == "sft" and cfg.mix:
            from proseco.data.sft_sources import read_sft_mix

            fields = {"prompt_field": cfg.prompt_field, "response_field": cfg.response_field}
            records += read_sft_mix(cfg.mix, max_records=cfg.max_records, **fields)
        if cfg.validation_source is not None:
            val_records = read_records(cfg.validation_source, **{**read, "max_records": None})
        else:
            records, val_records = split_records(records, cfg.validation_fraction, cfg.seed)
        train = _encode_records(records, cfg, tokenizer)
        try:
            val = _encode_records(val_records, cfg, tokenizer) if val_records else {}
        except ValueError as err:
            raise ValueError(f"validation split: {err}") from None
    tensors = {f"train.{k}": v for k, v in train.items()}
    tensors.update({f"validation.{k}": v for k, v in val.items()})
    return tensors


def _check_split(
    name: str, tensors: dict[str, torch.Tensor], cfg: DataSection, mask_id: int
) -> None:
    if not tensors or tensors["input_ids"].shape[0] == 0:
        raise ValueError(
            f"the {name} split is empty after tokenization; add data, lower data.max_length, "
            "or (validation) set data.validation_fraction: 0"
        )
    n_mask = int((tensors["input_ids"] == mask_id).sum())
    if n_mask:
        raise ValueError(
            f"the {name} data contains the mask token (id {mask_id}) {n_mask} times; remove "
            "literal mask tokens from the text or use a tokenizer with a dedicated mask token"
        )
    labels = tensors.get("labels")
    if cfg.num_classes > 0 and labels is None:
        raise ValueError(
            f"data.num_classes={cfg.num_classes} but the data has no labels; set data.label"
        )
    if labels is not None:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= cfg.num_classes:
            raise ValueError(
                f"the {name} labels lie in [{lo}, {hi}] but data.num_classes={cfg.num_classes} "
                f"allows [0, {cfg.num_classes - 1}]; fix the labels or raise data.num_classes"
            )


def build_splits(
    cfg: DataSection, tokenizer: Any, *, use_cache: bool = True
) -> tuple[TokenDataset, TokenDataset | None]:
    """Tokenize (or load from the cache) the train and validation splits.

    Raises:
        ValueError / FileNotFoundError: missing files, empty splits, labels out of range,
            records longer than ``data.max_length`` (with ``overlong: error``).
    """
    mask_id = special_ids(tokenizer)["mask"]
    path = _cache_path(cfg, tokenizer)
    if use_cache and path.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    else:
        tensors = _encode_all(cfg, tokenizer)
        if use_cache:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
            os.replace(tmp, path)
    splits = {}
    for name in ("train", "validation"):
        prefix = f"{name}."
        splits[name] = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    _check_split("train", splits["train"], cfg, mask_id)
    val = None
    if splits["validation"]:
        _check_split("validation", splits["validation"], cfg, mask_id)
        val = TokenDataset(splits["validation"])
    elif cfg.validation_fraction > 0 or cfg.validation_source is not None:
        _check_split("validation", {}, cfg, mask_id)
    return TokenDataset(splits["train"]), val
