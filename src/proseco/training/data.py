"""Data wiring for training: tokenized splits (cached on disk) and a deterministic batch order.

:func:`build_splits` turns a :class:`~proseco.training.config.DataSection` into two
:class:`TokenDataset` s (train, validation) of ``[N, L]`` tensors. Tokenized data is cached as
safetensors under ``data.cache_dir``, keyed by the sources (path, size, mtime), the tokenizer and
every data option, so a second run (or the other processes of a distributed run) skip tokenizing.

:class:`BatchOrder` decides which examples form each micro-batch from ``(seed, step)`` alone: the
examples are visited in a per-epoch random permutation, global batch ``k`` takes stream positions
``[k G, (k + 1) G)``, and that slice is cut into ``micro_batch`` pieces shared out over processes
and accumulation steps. Resuming at step ``k`` therefore needs no data-loader state, and one
process with accumulation sees exactly the micro-batches that several processes see together.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proseco.data.text import (
    encode_pretraining,
    encode_sft,
    list_source_files,
    read_records,
    record_field,
    special_ids,
)
from proseco.training.config import DataSection

__all__ = [
    "TokenDataset",
    "BatchOrder",
    "batch_plan",
    "build_splits",
    "micro_seed",
    "eval_seed",
    "CACHE_VERSION",
]

CACHE_VERSION = 1
_EVAL_TAG = 2**31 - 1


class TokenDataset:
    """Tensors ``[N, L]`` (``input_ids``, ``loss_mask``, ``noise_mask``, optional
    ``attention_mask`` / ``prompt_mask``) and optional ``labels`` ``[N]``."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.tensors["input_ids"].shape[0])

    @property
    def length(self) -> int:
        """The sequence length ``L``."""
        return int(self.tensors["input_ids"].shape[1])

    def batch(self, indices: torch.Tensor, device: torch.device | str | None = None) -> dict:
        """Rows ``indices`` of every tensor, moved to ``device``."""
        return {k: v[indices].to(device) for k, v in self.tensors.items()}


def micro_seed(seed: int, step: int, index: int) -> int:
    """A well-mixed 63-bit seed for the noise of micro-batch ``index`` of optimizer step ``step``."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(2, np.uint64)[0] >> 1)


def eval_seed(seed: int, index: int) -> int:
    """The seed of validation micro-batch ``index`` (the same at every evaluation)."""
    return micro_seed(seed, _EVAL_TAG, index)


class BatchOrder:
    """Which examples each micro-batch holds (see the module docstring).

    Args:
        num_examples: ``N``.
        global_batch_size: ``G``; must equal ``micro_batch_size x num_processes x accumulation``.
        micro_batch_size: examples per forward pass per process.
        num_processes, process_index: this process's place in the run.
        seed: seed of the epoch permutations.
    """

    def __init__(
        self,
        num_examples: int,
        global_batch_size: int,
        micro_batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
    ) -> None:
        per_step = micro_batch_size * num_processes
        if global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size {global_batch_size} is not a multiple of "
                f"micro_batch_size {micro_batch_size} x {num_processes} processes; change one"
            )
        self.num_examples = num_examples
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.accumulation = global_batch_size // per_step
        self.seed = seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.num_examples, generator=g)
        return self._perms[epoch]

    def micro_index(self, accum_index: int) -> int:
        """Index of this process's ``accum_index``-th micro-batch within the global batch."""
        return self.process_index * self.accumulation + accum_index

    def indices(self, step: int, accum_index: int) -> torch.Tensor:
        """Example indices ``[micro_batch_size]`` of one micro-batch of optimizer step ``step``."""
        start = (
            step * self.global_batch_size + self.micro_index(accum_index) * self.micro_batch_size
        )
        positions = torch.arange(start, start + self.micro_batch_size)
        epochs, offsets = positions // self.num_examples, positions % self.num_examples
        out = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self._perm(epoch)[offsets[sel]]
        return out

    def epoch(self, step: int) -> float:
        """Epochs completed after ``step`` optimizer steps."""
        return step * self.global_batch_size / self.num_examples


def batch_plan(
    global_batch_size: int, micro_batch_size: int | None, num_processes: int
) -> tuple[int, int]:
    """``(micro_batch_size, accumulation_steps)`` for the global batch on ``num_processes``."""
    g, micro = global_batch_size, micro_batch_size
    if micro is None:
        if g % num_processes:
            raise ValueError(
                f"train.global_batch_size {g} cannot be split over {num_processes} processes; "
                "make it a multiple of the process count or set train.micro_batch_size"
            )
        micro = g // num_processes
    if g % (micro * num_processes):
        raise ValueError(
            f"train.global_batch_size {g} is not a multiple of train.micro_batch_size {micro} x "
            f"{num_processes} processes; adjust one of them"
        )
    return micro, g // (micro * num_processes)


# --------------------------------------------------------------------- building splits
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


def _split_records(records: list, fraction: float, seed: int) -> tuple[list, list]:
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
        if cfg.validation_source is not None:
            val_records = read_records(cfg.validation_source, **{**read, "max_records": None})
        else:
            records, val_records = _split_records(records, cfg.validation_fraction, cfg.seed)
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
