"""Checkpoints: atomic, resumable, and a ``from_pretrained`` export of the EMA weights.

A checkpoint ``OUTPUT/checkpoints/step-00000100/`` holds Accelerate's state (``model.safetensors``
with un-prefixed parameter names, ``optimizer.bin``, ``random_states_<rank>.pkl``), the EMA
shadows (``ema.safetensors``, one file per rank under FSDP/DeepSpeed), the model's ``config.json``
and ``trainer_state.json`` (step, epoch, examples and tokens seen). The data position and the
learning rate are functions of the step (see :class:`~proseco.training.batches.BatchOrder` and
:mod:`~proseco.training.lr`), so the step restores them. It is written to a hidden temporary
directory and renamed into place, so a run killed while saving leaves the previous checkpoint
intact; only directories holding ``trainer_state.json`` count as checkpoints.

:func:`export_pretrained` writes ``OUTPUT/final/``: the model with its EMA weights
(``save_pretrained``) and the tokenizer next to it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

from proseco.training.config import TrainConfig
from proseco.training.config_io import config_diff, load_config
from proseco.training.ema import EMA

__all__ = [
    "CHECKPOINTS",
    "STATE_FILE",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "export_pretrained",
    "install_state_hooks",
    "resume_point",
    "RESUMABLE_FIELDS",
]

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d+)$")

# Fields a resumed run may change; any other difference from the saved config is an error. The
# data order depends only on the global batch and the step, so micro-batching (and the number of
# processes) may change too; the resumed run is then equivalent but not bitwise identical.
RESUMABLE_FIELDS = frozenset(
    {
        "train.max_steps",
        "train.micro_batch_size",
        "train.mixed_precision",
        "train.eval_every",
        "train.eval_batches",
        "train.save_every",
        "train.keep_checkpoints",
        "train.log_every",
        "train.progress_bar",
        "train.tensorboard",
        "train.wandb_project",
        "data.cache_dir",
    }
)


def _sharded(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def _ema_file(accelerator: Accelerator) -> str:
    return (
        f"ema_rank{accelerator.process_index}.safetensors"
        if _sharded(accelerator)
        else "ema.safetensors"
    )


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, path)`` under ``output_dir``, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first, then removed."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def install_state_hooks(accelerator: Accelerator) -> None:
    """Save model weights under the unwrapped names (no ``module.`` prefix) and load them so.

    A checkpoint written by a DDP run then resumes on one process (and vice versa) and its
    ``model.safetensors`` loads into the bare model. FSDP and DeepSpeed keep their own formats.
    """
    if _sharded(accelerator):
        return

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        for i, state in enumerate(weights):
            weights[i] = {k.removeprefix("module."): v for k, v in state.items()}

    def load_hook(models: list, input_dir: str) -> None:
        path = Path(input_dir) / "model.safetensors"
        if len(models) == 1 and path.is_file():
            model = accelerator.unwrap_model(models.pop())
            model.load_state_dict(load_file(str(path), device=str(accelerator.device)))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | Path,
    step: int,
    *,
    model: Any,
    ema: EMA | None,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically (call on every process) and prune old ones.

    Args:
        accelerator: the run's accelerator (model and optimizer prepared through it).
        output_dir: the run directory.
        step: optimizer steps done.
        model: the prepared model (its unwrapped ``config`` is saved as ``config.json``).
        ema: the EMA, or None.
        state: JSON-serialisable trainer state (``step`` is added).
        keep: how many checkpoints to keep (0 keeps all).

    Returns:
        The checkpoint directory.
    """
    root = Path(output_dir) / CHECKPOINTS
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if ema is not None and (_sharded(accelerator) or accelerator.is_main_process):
        save_file(ema.state_dict(), str(tmp / _ema_file(accelerator)))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        config = getattr(accelerator.unwrap_model(model), "config", None)
        if config is not None and hasattr(config, "to_json_file"):
            config.to_json_file(str(tmp / "config.json"))
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
        _publish(tmp, final)
        if keep > 0:
            for _, old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    accelerator: Accelerator, path: str | Path, *, ema: EMA | None
) -> dict[str, Any]:
    """Restore model, optimizer, RNG and EMA state from ``path``; return the trainer state."""
    path = Path(path)
    accelerator.load_state(str(path))
    if ema is not None:
        ema_path = path / _ema_file(accelerator)
        if not ema_path.is_file():
            raise FileNotFoundError(
                f"{ema_path} is missing; the checkpoint was written without EMA (train.ema_decay: 0)"
            )
        ema.load_state_dict(load_file(str(ema_path), device=str(accelerator.device)))
    return json.loads((path / STATE_FILE).read_text())


def export_pretrained(
    accelerator: Accelerator,
    model: Any,
    ema: EMA | None,
    tokenizer: Any,
    out_dir: str | Path,
) -> Path:
    """Save the model with its EMA weights and the tokenizer as a ``from_pretrained`` directory.

    Call on every process (FSDP / DeepSpeed gather the full weights). Written atomically.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    with ema.swapped() if ema is not None else nullcontext():
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            accelerator.unwrap_model(model).save_pretrained(str(tmp), state_dict=state_dict)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
            _publish(tmp, out_dir)
    accelerator.wait_for_everyone()
    return out_dir


def resume_point(config: TrainConfig, output_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: start fresh); call before writing anything.

    Raises:
        ValueError: ``output_dir`` holds a run and ``resume`` is False, or the run's saved config
            differs from ``config`` in a field outside :data:`RESUMABLE_FIELDS`, or its newest
            checkpoint is past ``train.max_steps``.
    """
    ckpt = latest_checkpoint(output_dir)
    existing = [n for n in ("config.yaml", "checkpoints", "final") if (output_dir / n).exists()]
    if not resume:
        if existing:
            raise ValueError(
                f"{output_dir} already holds a run ({', '.join(existing)}); pass --resume "
                "(resume=True) to continue it, or choose a new output directory"
            )
        return None
    if ckpt is not None and (output_dir / "config.yaml").is_file():
        saved = load_config(output_dir / "config.yaml")
        changed = [f for f in config_diff(saved, config) if f not in RESUMABLE_FIELDS]
        if changed:
            raise ValueError(
                f"cannot resume {output_dir}: the config differs from the saved one in "
                f"{', '.join(changed)}; only {', '.join(sorted(RESUMABLE_FIELDS))} may change"
            )
    if ckpt is not None:
        step = json.loads((ckpt / STATE_FILE).read_text())["step"]
        if step > config.train.max_steps:
            raise ValueError(
                f"{ckpt} is at step {step}, past train.max_steps={config.train.max_steps}; "
                "raise train.max_steps to resume"
            )
    return ckpt
