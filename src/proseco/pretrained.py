"""One loader for every command: :func:`load_pretrained` -> model, tokenizer, sampling config.

A model directory is what ``save_pretrained`` / ``proseco train`` writes: ``config.json`` and
safetensors weights, optionally a tokenizer and a ``sampling_config.json`` (the decoding settings
the model is meant to be sampled with). The bundled DiT and the SMILES tokenizer register
themselves with the ``Auto`` classes on import, so any such directory loads through
``AutoModelForMaskedLM`` / ``AutoTokenizer``; a name that is not a local path is tried on the
Hugging Face hub (which needs internet).

Hub diffusion LMs load through the adapters of :mod:`proseco.models.hub`, chosen from the
directory's ``config.json`` (``model_type`` / ``architectures`` / ``auto_map``) or named with
``adapter=``: ``"llada"`` (LLaDA: proseco's native model when it implements the checkpoint, no
remote code needed; else its remote code, see :mod:`proseco.models.llada_hub`), ``"dream"``
(Dream-style, logits un-shifted), ``"masked_lm"`` (any ``AutoModelForMaskedLM``: BERT,
ModernBERT) and ``"proseco"`` (the bundled DiT, no adapter)::

    model, tokenizer, config = load_pretrained("GSAI-ML/LLaDA-8B-Base", adapter="llada",
                                               trust_remote_code=True, dtype="bfloat16")

LoRA adapters load everywhere a model does: a directory holding ``adapter_config.json`` (what
``proseco train`` writes with ``model.lora.save: adapter``) is loaded on the base model it names
(``base_model_name_or_path``: absolute, relative to the adapter directory, or a hub name), and
``lora=ADAPTER`` (``--lora`` on the command line) applies an adapter directory or hub adapter to
``path``. The adapters are merged into the weights; the tokenizer and ``sampling_config.json``
come from the adapter directory when it has them, else from the base.

Every failure to load raises :class:`~proseco.errors.ModelLoadError` with the path and the fix.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch

from proseco.errors import ConfigError, ModelLoadError
from proseco.sampling.config import SamplingConfig

__all__ = [
    "Pretrained",
    "adapter_base",
    "is_adapter_dir",
    "load_model",
    "load_pretrained",
    "load_tokenizer",
    "shipped_checkpoints",
]

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Pretrained(NamedTuple):
    """What :func:`load_pretrained` returns (unpacks as ``model, tokenizer, config``).

    Attributes:
        model: the network in eval mode on the requested device.
        tokenizer: its tokenizer, or ``None`` when the directory has none.
        sampling_config: the saved :class:`~proseco.SamplingConfig`, or the defaults.
    """

    model: Any
    tokenizer: Any
    sampling_config: SamplingConfig


def _register() -> None:
    import proseco.data.smiles  # noqa: F401  (registers SmilesTokenizer with AutoTokenizer)
    import proseco.models.dit  # noqa: F401  (registers the DiT with the Auto classes)


def _resolve(path: str | os.PathLike) -> tuple[str, bool]:
    """``(location, is_local)``; a missing local-looking path is an error.

    ``package:REL/PATH`` names a directory shipped inside proseco (e.g.
    ``package:assets/qm9/mdlm``), as for tokenizers and data sources.
    """
    from proseco.data.text import resolve_source

    text = resolve_source(os.fspath(path))
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(
                f"{local} is a file, not a model directory; pass the directory that holds "
                "config.json (written by `proseco train` or save_pretrained)"
            )
        if not (local / "config.json").is_file() and not is_adapter_dir(local):
            raise ModelLoadError(
                f"{local} is not a model directory (no config.json); pass a directory written by "
                "`proseco train` (its final/ folder) or save_pretrained"
            )
        return str(local), True
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1
    if looks_local:
        raise ModelLoadError(
            f"model directory {text} does not exist; pass a directory written by `proseco train` "
            "or save_pretrained (or a hub name such as org/model)"
        )
    _check_hub_reachable(text)
    return text, False


def _hub_host() -> str:
    from urllib.parse import urlparse

    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def _check_hub_reachable(name: str) -> None:
    """Fail at once for a hub name that is neither cached nor reachable.

    Without this the hub client retries for about a minute before the same error. Nothing is
    checked in offline mode (``HF_HUB_OFFLINE=1``: the cache alone is used) or when the name's
    ``config.json`` is already in the local cache.

    Raises:
        ModelLoadError: the hub's host cannot be reached within a few seconds.
    """
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return
    except Exception:  # an invalid repo id: the hub client names the problem itself
        return
    host = _hub_host()
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as err:
        raise ModelLoadError(
            f"{name} is not a local model directory, not in the hub cache, and {host} cannot be "
            f"reached ({err.strerror or err}); pass a directory written by `proseco train` or "
            "save_pretrained, or download the model where the hub is reachable"
        ) from None


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a LoRA adapter directory (``adapter_config.json``, no ``config.json``)."""
    path = Path(path)
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def adapter_base(adapter_dir: str | os.PathLike) -> str:
    """The base model of a LoRA adapter directory, from its ``adapter_config.json``.

    ``base_model_name_or_path`` is used as written when it is absolute or a hub name; a relative
    path is looked up relative to the adapter directory, then (adapters written before paths
    were made absolute) relative to the current directory.

    Raises:
        ModelLoadError: no adapter config, no base named, or a relative base found nowhere.
    """
    import json

    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"{adapter_dir} holds no adapter_config.json; pass the final/ directory of a run "
            "trained with model.lora.save: adapter"
        )
    try:
        base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {config_file}: {e}") from None
    if not base:
        raise ModelLoadError(
            f"{config_file} names no base model; give the base and the adapter: "
            f"proseco sample BASE_DIR --lora {adapter_dir}"
        )
    from proseco.data.text import resolve_source

    text = resolve_source(str(base))
    path = Path(text).expanduser()
    if path.is_absolute():
        return str(path)
    for candidate in (adapter_dir / path, path):
        if candidate.exists():
            return str(candidate.resolve())
    if not text.startswith((".", "~")) and text.count("/") <= 1:
        return text  # a hub name
    raise ModelLoadError(
        f"{config_file} names the base model {base!r}, found neither relative to the adapter "
        f"directory nor to the current one; give the base and the adapter: proseco sample "
        f"BASE_DIR --lora {adapter_dir}"
    )


def _lora_source(path: str | os.PathLike, lora: str | os.PathLike | None) -> tuple[Any, Any]:
    """``(base, adapter)`` locations: ``path`` with ``lora``, an adapter directory and its base,
    or ``(path, None)`` for a plain model."""
    if lora is not None:
        return path, lora
    location, local = _resolve(path)
    if local and is_adapter_dir(location):
        return adapter_base(location), location
    return path, None


def _load_lora(base_model: Any, adapter: str | os.PathLike, *, merge: bool = True) -> Any:
    """``base_model`` with the LoRA adapter ``adapter`` (a directory or hub name) applied."""
    try:
        import peft
    except ImportError:
        raise ModelLoadError(
            f'{adapter} is a LoRA adapter; loading it needs peft: pip install "proseco[lora]"'
        ) from None
    from proseco.models.hub import HubDiffusionLM

    def apply(network: Any) -> Any:
        try:
            wrapped = peft.PeftModel.from_pretrained(network, str(adapter))
        except Exception as e:  # peft raises many types for a missing or mismatched adapter
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"cannot load the LoRA adapter {adapter}: {reason}") from e
        return wrapped.merge_and_unload() if merge else wrapped

    if isinstance(base_model, HubDiffusionLM):  # adapt the wrapped network, keep the adapter
        base_model.model = apply(base_model.model)
        return base_model
    return apply(base_model)


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {list(_DTYPES)}") from None


def _cpu_dtype(location: str) -> torch.dtype | None:
    """float32 for a local DiT directory saved in float16/bfloat16, else ``None`` (as saved).

    The shipped QM9 checkpoints are stored in float16 to keep the package small; on a CPU, half
    precision matmuls are slow (or emulated) and the samplers' numerics are pinned in float32, so
    ``dtype=None`` on a CPU upcasts them. Pass ``dtype="float16"`` to keep the stored precision.
    """
    from proseco.models.hub import read_config_json

    try:
        config = read_config_json(location)
    except ModelLoadError:
        return None  # from_pretrained reports an unreadable config.json in one line
    saved = config.get("dtype") or config.get("torch_dtype")
    return torch.float32 if saved in ("float16", "bfloat16") else None


def _adapter_of(location: str, adapter: str | None) -> str:
    from proseco.models.hub import ADAPTERS, detect_adapter, read_config_json

    if adapter is None:
        return detect_adapter(read_config_json(location))
    if adapter not in ADAPTERS:
        from proseco.registry import closest

        raise ModelLoadError(
            f"unknown adapter {adapter!r}{closest(str(adapter), list(ADAPTERS))}; choose one of "
            f"{list(ADAPTERS)}"
        )
    return adapter


def load_model(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    adapter: str | None = None,
    gradient_checkpointing: bool = False,
    tokenizer: Any = None,
    lora: str | os.PathLike | None = None,
) -> Any:
    """Load only the network (eval mode, on ``device``). See :func:`load_pretrained`.

    ``tokenizer`` gives a ``masked_lm`` model its mask token and vocabulary (default: the
    directory's own tokenizer).
    """
    from transformers import AutoModelForMaskedLM

    _register()
    base, lora = _lora_source(path, lora)
    if lora is not None:
        model = load_model(base, device="cpu", dtype=dtype, trust_remote_code=trust_remote_code,
                           adapter=adapter, tokenizer=tokenizer)  # fmt: skip
        model = _load_lora(model, lora)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model.to(device).eval()
    location, local = _resolve(path)
    name = _adapter_of(location, adapter)
    torch_dtype = _dtype(dtype)
    if name != "proseco":
        from proseco.models.hub import load_hub_model
        from proseco.models.llada_hub import load_llada  # native LLaDA, else its remote code

        if name == "masked_lm" and tokenizer is None:
            tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        load = load_llada if name == "llada" else partial(load_hub_model, adapter=name)
        model = load(location, tokenizer=tokenizer, dtype=torch_dtype,
                     trust_remote_code=trust_remote_code)  # fmt: skip
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model.to(device).eval()
    if torch_dtype is None and local and torch.device(device).type == "cpu":
        torch_dtype = _cpu_dtype(location)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    try:
        model = AutoModelForMaskedLM.from_pretrained(location, **kwargs)
    except Exception as e:  # transformers raises many types for unreadable checkpoints
        where = "model directory" if local else "hub model (no local directory has that name)"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot load {where} {location}: {reason}. Check that its config.json and "
            "*.safetensors are complete (re-save or re-download them)"
        ) from e
    if gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError(
                f"{type(model).__name__} does not support gradient checkpointing; load it without "
                "gradient_checkpointing=True"
            )
        model.gradient_checkpointing_enable()
    return model.to(device).eval()


def load_tokenizer(path: str | os.PathLike, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved with a model, or ``None`` if a local directory has none."""
    from transformers import AutoTokenizer

    _register()
    location, local = _resolve(path)
    if local and not any((Path(location) / f).exists() for f in _TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelLoadError(f"cannot load the tokenizer of {location}: {e}") from e


def load_pretrained(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    adapter: str | None = None,
    gradient_checkpointing: bool = False,
    lora: str | os.PathLike | None = None,
) -> Pretrained:
    """Load a model directory (or hub name): model (eval mode), tokenizer, sampling config.

    Args:
        path: a ``save_pretrained`` directory (e.g. a run's ``final/``) or a hub name.
        device: where to put the model.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype (default: as saved,
            except that a local proseco DiT saved in half precision loads as float32 on a CPU).
        trust_remote_code: allow hub models that ship their own modelling code (LLaDA, Dream).
        adapter: ``"proseco"``, ``"llada"``, ``"dream"`` or ``"masked_lm"`` (default: detected
            from ``config.json``); see :mod:`proseco.models.hub`.
        gradient_checkpointing: recompute activations in the backward pass (fine-tuning).
        lora: a LoRA adapter (directory or hub name) to merge into ``path``'s weights. A ``path``
            that is itself an adapter directory needs none: its base is read from its
            ``adapter_config.json``.

    Returns:
        :class:`Pretrained` ``(model, tokenizer, sampling_config)``; ``tokenizer`` is ``None``
        when there is none, ``sampling_config`` is ``SamplingConfig()`` when none was saved.

    Raises:
        proseco.errors.ModelLoadError: a missing, incomplete or unreadable directory.
    """
    from proseco.models.convert import is_official_checkpoint, load_official

    if is_official_checkpoint(path):  # the research code's release (kuleshov-group/proseco-owt)
        model = load_official(path, device=device, dtype=_dtype(dtype))
        tokenizer = None
        if model.config.vocab_size == 50258:  # GPT-2 + [MASK] = 50257, as MDLM builds it
            from proseco.data.bpe import gpt2_tokenizer

            tokenizer = gpt2_tokenizer()
            tokenizer.add_special_tokens({"mask_token": "[MASK]"})
        return Pretrained(model, tokenizer, SamplingConfig())
    base, lora = _lora_source(path, lora)
    tokenizer = None
    if lora is not None:  # the adapter's own tokenizer (the one it was trained with) first
        try:
            tokenizer = load_tokenizer(lora, trust_remote_code=trust_remote_code)
        except ModelLoadError:
            if Path(str(lora)).expanduser().exists():
                raise
            # a hub adapter's repository need not hold a tokenizer: the base's is used
    if tokenizer is None:
        tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
    model = load_model(base, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                       adapter=adapter, gradient_checkpointing=gradient_checkpointing,
                       tokenizer=tokenizer, lora=lora)  # fmt: skip
    config = SamplingConfig()
    for source in (lora, base):
        location = Path(str(source)).expanduser() if source is not None else None
        if location is not None and location.is_dir() and SamplingConfig.exists(location):
            config = SamplingConfig.from_pretrained(location)
            break
    return Pretrained(model, tokenizer, config)


def shipped_checkpoints() -> dict[str, Path]:
    """Directories of the QM9 checkpoints that ship in the package (``proseco/assets/qm9``).

    Keys: ``"mdlm"``, ``"proseco"`` (unconditional) and, where present, the class-conditional
    ``"mdlm-ring"`` / ``"proseco-ring"``. Load one with :func:`load_pretrained`.
    """
    from importlib import resources

    root = Path(str(resources.files("proseco") / "assets" / "qm9"))
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}
