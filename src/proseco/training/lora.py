"""LoRA fine-tuning through ``peft`` (``pip install "proseco[lora]"``): wrap, merge, save, load.

``model.lora`` in a recipe (:class:`~proseco.training.config.LoraSection`) freezes the
pretrained weights and trains low-rank adapters ``W + (alpha / r) B A`` of the target linear
layers. What ``OUTPUT/final`` holds depends on ``model.lora.save``:

* ``merged`` (default): the base model with every adapter merged into its weight, saved with
  the base model's own ``save_pretrained``, so :func:`proseco.load_pretrained` loads it like
  any other model directory. The merge works on a (gathered) state dict, so it also works
  after FSDP / DeepSpeed training.
* ``adapter``: only ``adapter_config.json`` and ``adapter_model.safetensors`` (small), with
  the base model recorded as an absolute path (a hub name stays a name). The directory loads
  wherever a model directory does (:func:`proseco.load_pretrained`, ``proseco sample``,
  ``proseco eval ...``: the base named in ``adapter_config.json`` with the adapter merged in),
  or with :func:`load_adapter`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from proseco.errors import ConfigError, ModelLoadError
from proseco.training.config import LoraSection

__all__ = [
    "apply_lora",
    "count_parameters",
    "is_lora_model",
    "merged_state_dict",
    "save_model",
    "load_adapter",
]

_PREFIX = "base_model.model."

log = logging.getLogger("proseco.training")


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError(
            'model.lora needs peft: pip install "proseco[lora]" (or remove model.lora)'
        ) from None
    return peft


def apply_lora(model: nn.Module, section: LoraSection) -> nn.Module:
    """Wrap ``model`` in a ``peft`` model whose only trainable weights are the adapters.

    Raises:
        ConfigError: ``peft`` is missing, or no module matches ``target_modules``.
    """
    peft = _peft()
    targets: str | list[str] = list(section.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    alpha = 2 * section.r if section.alpha is None else section.alpha
    config = peft.LoraConfig(
        r=section.r, lora_alpha=alpha, lora_dropout=section.dropout, target_modules=targets
    )
    try:
        wrapped = peft.get_peft_model(model, config)
    except ValueError as err:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n})
        raise ConfigError(
            f"model.lora.target_modules {list(section.target_modules)} match no module of the "
            f"model ({err}); its module names include {names[:20]}"
        ) from None
    trainable, total = count_parameters(wrapped)
    log.info(
        "proseco train: LoRA r=%d, alpha %g on %s: %s trainable parameters of %s (%.2f%%)",
        section.r, alpha, targets if isinstance(targets, str) else ", ".join(targets),
        f"{trainable:,}", f"{total:,}", 100.0 * trainable / max(total, 1),
    )  # fmt: skip
    return wrapped


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (tied weights counted once)."""
    params = list(model.parameters())  # parameters() yields a shared tensor once
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return trainable, sum(p.numel() for p in params)


def is_lora_model(model: Any) -> bool:
    """True for a model wrapped by :func:`apply_lora`."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def merged_state_dict(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter merged in: ``W + scale * B @ A``.

    Args:
        state: a ``peft`` model's full state dict (keys ``base_model.model.X.base_layer.weight``,
            ``...X.lora_A.default.weight`` ``[r, in]``, ``...X.lora_B.default.weight``
            ``[out, r]``, and the untouched weights).
        scale: ``alpha / r``.

    Returns:
        Keys as in the base model (``X.weight``), values in each base weight's dtype.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix(_PREFIX)
        if ".lora_" in name:
            continue
        if ".base_layer." in name:
            module, _, param = name.partition(".base_layer.")
            if param == "weight":
                a = state[f"{_PREFIX}{module}.lora_A.default.weight"].float()
                b = state[f"{_PREFIX}{module}.lora_B.default.weight"].float()
                value = (value.float() + scale * (b @ a)).to(value.dtype)
            name = f"{module}.{param}"
        out[name] = value
    return out


def save_model(
    model: Any, out_dir: str | os.PathLike, state_dict: dict[str, torch.Tensor], mode: str
) -> None:
    """``save_pretrained`` for the unwrapped model: a LoRA model as ``merged`` or ``adapter``.

    Args:
        model: the unwrapped model (a ``peft`` model or a plain ``PreTrainedModel``).
        state_dict: its full state dict (gathered under FSDP / DeepSpeed).
        mode: ``merged`` or ``adapter`` (ignored for a plain model).
    """
    from proseco.models.hub import HubDiffusionLM

    if isinstance(model, HubDiffusionLM):  # save the wrapped network under its own names
        inner = {k.removeprefix("model."): v for k, v in state_dict.items()}
        save_model(model.model, out_dir, inner, mode)
        return
    if not is_lora_model(model):
        model.save_pretrained(str(out_dir), state_dict=state_dict)
        return
    if mode == "adapter":
        model.save_pretrained(str(out_dir), state_dict=state_dict)
        _absolute_base(Path(out_dir) / "adapter_config.json")
        return
    lora = model.peft_config["default"]
    if lora.fan_in_fan_out or lora.use_dora or lora.use_rslora:
        raise ConfigError(
            "merging supports plain LoRA on nn.Linear layers only; set model.lora.save: adapter"
        )
    merged = merged_state_dict(state_dict, lora.lora_alpha / lora.r)
    model.get_base_model().save_pretrained(str(out_dir), state_dict=merged)


def _absolute_base(config_file: Path) -> None:
    """Record a local base model in ``adapter_config.json`` as an absolute path, so the adapter
    loads from any working directory (peft writes the path as it was given)."""
    from proseco.data.text import resolve_source

    config = json.loads(config_file.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        return
    path = Path(resolve_source(str(base))).expanduser()
    if path.exists() and str(path.resolve()) != base:
        config["base_model_name_or_path"] = str(path.resolve())
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_adapter(
    adapter_dir: str | os.PathLike,
    base: str | os.PathLike | None = None,
    *,
    merge: bool = True,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> nn.Module:
    """Load a base model and the adapter saved with ``model.lora.save: adapter``.

    Args:
        adapter_dir: the directory holding ``adapter_config.json``.
        base: the base model directory or hub name (default: the one recorded in
            ``adapter_config.json``, i.e. the run's ``model.pretrained``).
        merge: merge the adapters into the weights (a plain model) or keep the ``peft`` model.
        trust_remote_code: allow a base hub model with its own modelling code (LLaDA, Dream);
            such a base comes back in its :mod:`proseco.models.hub` adapter.

    Raises:
        ModelLoadError: no adapter in ``adapter_dir``.
    """
    from proseco.pretrained import _load_lora, adapter_base, load_model

    _peft()
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"{adapter_dir} holds no adapter_config.json; pass the final/ directory of a run "
            "trained with model.lora.save: adapter"
        )
    if base is None:
        base = adapter_base(adapter_dir)
    model = load_model(base, device=device, trust_remote_code=trust_remote_code)
    return _load_lora(model, adapter_dir, merge=merge).eval()
