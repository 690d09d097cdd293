"""Options every command that loads a model shares, spelled and meant the same everywhere.

``--device``, ``--dtype``, ``--trust-remote-code``, ``--adapter``, ``--lora ADAPTER`` and
``--chat-template auto|none`` (``proseco sample``, ``eval humaneval --generate``, ``eval nelbo``,
and the commands built on ``sample``'s parser: ``generate``, ``chat``, ``serve``).
:func:`load_model_from_args` loads ``args.model_dir`` with them, and names these flags (not the
Python keyword arguments) in its errors. :func:`chat_template` says how prompts are laid out:
as SFT laid them out for the model (:func:`proseco.data.text.prompt_ids`).
:func:`add_cache_option` adds ``--cache none|prefix|dual`` (``SamplingConfig.cache``) to every
command that samples (``sample``, ``generate``, ``chat``, ``serve``, ``eval humaneval``,
``eval lm-eval``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from proseco.errors import ConfigError, ModelLoadError

__all__ = [
    "CACHE_MODES",
    "CHAT_TEMPLATES",
    "DTYPES",
    "add_cache_option",
    "add_model_options",
    "chat_template",
    "load_model_from_args",
    "quiet_loading",
    "saved_chat_template",
]

DTYPES = ("float32", "bfloat16", "float16")
CHAT_TEMPLATES = ("auto", "none")
# SamplingConfig.cache's values (proseco.sampling.config.CACHE_MODES; spelled out here so that
# building a parser imports no torch)
CACHE_MODES = ("none", "prefix", "dual")
CACHE_HELP = (
    "reuse attention keys/values within a block (Fast-dLLM): none (default: every call runs the "
    "whole sequence), prefix (prompt and finished blocks cached), dual (the masked future too); "
    "needs a model with the window cache (the bundled DiT); an approximation, see the README"
)

# Python keyword arguments in library messages -> the flags that set them
_FLAGS = (
    (re.compile(r"\btrust_remote_code=True\b"), "--trust-remote-code"),
    (re.compile(r"\badapter=(\S)"), r"--adapter \1"),
    (re.compile(r"\bdtype=(\S)"), r"--dtype \1"),
    (re.compile(r"\blora=(\S)"), r"--lora \1"),
)


def add_model_options(
    group: Any, *, device_default: str = "auto", chat_template_help: str | None = None
) -> None:
    """Add ``--device``, ``--dtype``, ``--trust-remote-code``, ``--adapter``, ``--lora`` and
    ``--chat-template`` to ``group`` (a parser or an argument group)."""
    group.add_argument("--device", default=device_default,
                       help=f"auto | cpu | cuda | cuda:1 ... (default {device_default})")  # fmt: skip
    group.add_argument("--dtype", choices=DTYPES, default="float32",
                       help="weights' dtype (default float32)")  # fmt: skip
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow hub models that ship their own modelling code (LLaDA, Dream)")  # fmt: skip
    group.add_argument("--adapter", default=None, choices=["proseco", "llada", "dream", "masked_lm"],
                       help="how to load MODEL_DIR (default: detected from its config.json)")  # fmt: skip
    group.add_argument("--lora", default=None, metavar="ADAPTER",
                       help="a LoRA adapter (directory or hub name) merged into MODEL_DIR; a "
                       "MODEL_DIR that is itself an adapter run's final/ needs none")  # fmt: skip
    group.add_argument("--chat-template", default=None, choices=CHAT_TEMPLATES,
                       help=chat_template_help or "how a text prompt is laid out: auto = the "
                       "tokenizer's chat template when it has one, else [BOS] prompt; none = "
                       "[BOS] prompt (default: what the model's SFT run used, from its "
                       "config.yaml, else auto)")  # fmt: skip


def add_cache_option(group: Any, *, help: str | None = None) -> None:
    """Add ``--cache none|prefix|dual`` (default: not given, so the saved config's value stays)."""
    group.add_argument("--cache", default=None, choices=CACHE_MODES, help=help or CACHE_HELP)


def saved_chat_template(model_dir: str | Path) -> str | None:
    """How the ``proseco train`` run that wrote ``model_dir`` laid out prompts.

    ``data.chat_template`` of an SFT run; ``"none"`` for a run of another kind (pretraining and
    QM9 never use a template: ``[BOS] text``); ``None`` when ``model_dir`` was not written by
    ``proseco train`` (no ``config.yaml`` in it or its parent, the run directory of a
    ``final/``).
    """
    path = Path(str(model_dir)).expanduser()
    if not path.is_dir():
        return None
    for candidate in (path / "config.yaml", path.parent / "config.yaml"):
        if not candidate.is_file():
            continue
        try:
            import yaml

            data = yaml.safe_load(candidate.read_text(encoding="utf-8")) or {}
        except (OSError, ValueError):
            return None
        section = data.get("data") if isinstance(data, dict) else None
        if not isinstance(section, dict) or "kind" not in section:
            continue  # some other config.yaml
        if section.get("kind") != "sft":
            return "none"
        value = section.get("chat_template", "auto")
        return value if value in CHAT_TEMPLATES else None
    return None


def chat_template(args: argparse.Namespace) -> str:
    """``--chat-template``, else what the model's SFT run used, else ``"auto"``."""
    if getattr(args, "chat_template", None) is not None:
        if args.chat_template not in CHAT_TEMPLATES:
            raise ConfigError(
                f"--chat-template must be one of {list(CHAT_TEMPLATES)}, got {args.chat_template!r}"
            )
        return args.chat_template
    for source in (getattr(args, "lora", None), args.model_dir):
        if source is not None and (saved := saved_chat_template(source)) is not None:
            return saved
    return "auto"


def quiet_loading() -> None:
    """Silence transformers' "Loading weights" progress bars (``--no-progress``)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def flag_message(message: str) -> str:
    """``message`` with the Python keyword arguments it suggests written as command-line flags."""
    for pattern, flag in _FLAGS:
        message = pattern.sub(flag, message)
    return message


def load_model_from_args(args: argparse.Namespace, device: Any, *, model_dir: Any = None) -> Any:
    """:func:`proseco.load_pretrained` of ``model_dir`` (default ``args.model_dir``) with the
    shared options; a :class:`~proseco.errors.ModelLoadError` names the flags to use."""
    from proseco.pretrained import load_pretrained

    if getattr(args, "no_progress", False):
        quiet_loading()
    try:
        return load_pretrained(
            args.model_dir if model_dir is None else model_dir,
            device=device,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            adapter=args.adapter,
            lora=args.lora,
        )
    except ModelLoadError as err:
        raise ModelLoadError(flag_message(str(err))) from err
