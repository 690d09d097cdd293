"""Checkpoints: atomic, resumable, and a ``from_pretrained`` export of the EMA weights.

A checkpoint ``OUTPUT/checkpoints/step-00000100/`` holds Accelerate's state (``model.safetensors``
with un-prefixed parameter names, ``optimizer.bin``, ``random_states_<rank>.pkl``), the EMA
shadows (``ema.safetensors``, one file per rank under FSDP/DeepSpeed), the model's ``config.json``
and ``trainer_state.json`` (step, epoch, examples and tokens seen). The data position and the
learning rate are functions of the step (see :class:`~proseco.training.batches.BatchOrder` and
:mod:`~proseco.training.lr`), so the step restores them. It is written to a hidden temporary
directory and renamed into place, so a run killed while saving leaves the previous checkpoint
intact; only directories holding ``trainer_state.json`` count as checkpoints. The training loop
only saves weights that are all finite and within
:data:`~proseco.training.loop.WEIGHT_GROWTH_LIMIT` times their size at the start of the run, so
every checkpoint is a good one, one a run can resume from.

Resuming (:func:`plan_resume`, :func:`load_resume_checkpoint`) tries the checkpoints newest first:
one that cannot be read (a truncated file, a corrupt ``trainer_state.json``, non-finite weights) is
skipped with a warning naming the file and the error, and the previous one is used. A random
state (``random_states_<rank>.pkl``) that cannot be restored stops the resume, since the run would
silently stop being exact, unless ``train.allow_inexact_resume`` says to go on without it. Only
the settings in :data:`RESUMABLE_FIELDS` may differ from the saved ``config.yaml``.

:func:`export_pretrained` writes ``OUTPUT/final/``: the model with its EMA weights
(``save_pretrained``) and the tokenizer next to it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

from proseco.errors import ConfigError, ModelLoadError, OutputError
from proseco.fileio import apply_umask
from proseco.training.config import TrainConfig
from proseco.training.config_io import apply_overrides, config_diff, config_to_dict, load_config
from proseco.training.ema import EMA
from proseco.training.lora import save_model
from proseco.training.rundir import (
    CHECKPOINTS,
    STATE_FILE,
    RunDirState,
    inspect_run_dir,
    list_checkpoints,
    refuse_foreign,
    writing,
)

__all__ = [
    "CHECKPOINTS",
    "STATE_FILE",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_resume_checkpoint",
    "read_trainer_state",
    "non_finite_tensors",
    "export_pretrained",
    "EXPORT_INFO",
    "exported_step",
    "install_state_hooks",
    "without_shared",
    "load_deduplicated",
    "plan_resume",
    "resume_config",
    "resume_point",
    "ResumePlan",
    "Resumed",
    "RESUMABLE_FIELDS",
]

log = logging.getLogger("proseco.training")


# Fields a resumed run may change; any other difference from the saved config is an error.
# - The learning-rate schedule (lr, min_lr, warm-up, constant/cosine), gradient clipping and
#   weight decay are read at every step (weight decay is re-applied to the optimizer after its
#   state is loaded), so lowering the learning rate or clipping after a divergence works.
# - Logging, evaluation and checkpoint intervals, max_steps, trackers and the progress bar only
#   change what is recorded or how long the run goes on.
# - The data order depends only on the global batch and the step, so micro-batching (and the
#   number of processes) may change too; the resumed run is then equivalent but not bitwise
#   identical. So may mixed precision.
# Everything else (model, data, loss, seed, global batch, AdamW betas and eps, EMA decay) defines
# the run and is refused.
RESUMABLE_FIELDS = frozenset(
    {
        "optim.lr",
        "optim.min_lr",
        "optim.warmup_steps",
        "optim.lr_schedule",
        "optim.grad_clip",
        "optim.weight_decay",
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
        "train.allow_inexact_resume",
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


def _any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process if ``flag`` is True on any of them."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor(float(flag), device=accelerator.device)
    return float(accelerator.reduce(value, reduction="sum")) > 0


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def read_trainer_state(path: str | Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of checkpoint ``path``.

    Raises:
        ModelLoadError: the file is missing, unreadable or not a JSON object with a ``step``;
            the message names the file.
    """
    file = Path(path) / STATE_FILE
    try:
        state = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{file} cannot be read: {err}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ModelLoadError(f"{file} is corrupt: expected a JSON object with an integer 'step'")
    return state


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinite values."""
    return [
        name
        for name, t in tensors.items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first, then removed.
    Its files get the umask's mode first (``safetensors`` writes them 0600)."""
    apply_umask(tmp)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _storage_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (tensor.device, tensor.untyped_storage().data_ptr())


def _view(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)


def without_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every tensor that is the same view of memory as an earlier one left out.

    Tied weights (BERT's and ModernBERT's output projection is their word embedding matrix, and
    BERT's decoder bias its prediction bias) appear under several names in a ``state_dict`` and
    share memory, which safetensors refuses to write. The first name of each is kept;
    :func:`load_deduplicated` restores the others through the model's own tying. A tensor that
    overlaps another without being the same view is written as a copy.
    """
    out: dict[str, torch.Tensor] = {}
    seen: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for name, tensor in state.items():
        if tensor.device.type == "meta" or tensor.untyped_storage().nbytes() == 0:
            out[name] = tensor
            continue
        views = seen.setdefault(_storage_key(tensor), [])
        if _view(tensor) in views:
            continue  # an alias of a tensor already kept
        out[name] = tensor.clone() if views else tensor
        views.append(_view(tensor))
    return out


def load_deduplicated(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state)`` for a ``state`` written by :func:`without_shared`.

    A name missing from ``state`` is accepted only when the live model ties it to a name that
    is there (loading that one fills both); anything else missing or unexpected is an error,
    as with a strict load.
    """
    live = model.state_dict()
    groups: dict[tuple[Any, ...], set[str]] = {}
    for name, tensor in live.items():
        groups.setdefault((*_storage_key(tensor), *_view(tensor)), set()).add(name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    untied = [
        name
        for name in missing
        if not (groups[(*_storage_key(live[name]), *_view(live[name]))] & state.keys())
    ]
    if untied or unexpected:
        raise ModelLoadError(
            f"checkpoint weights do not match the model: missing {sorted(untied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def install_state_hooks(accelerator: Accelerator) -> None:
    """Save model weights under the unwrapped names (no ``module.`` prefix) and load them so.

    A checkpoint written by a DDP run then resumes on one process (and vice versa) and its
    ``model.safetensors`` loads into the bare model. Tied weights are written once
    (:func:`without_shared`). FSDP and DeepSpeed keep their own formats.
    """
    if _sharded(accelerator):
        return

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        for i, state in enumerate(weights):
            weights[i] = without_shared({k.removeprefix("module."): v for k, v in state.items()})

    def load_hook(models: list, input_dir: str) -> None:
        path = Path(input_dir) / "model.safetensors"
        if len(models) == 1 and path.is_file():
            model = accelerator.unwrap_model(models.pop())
            load_deduplicated(model, load_file(str(path), device=_load_device(accelerator)))

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
        state: JSON-serialisable trainer state (``step`` and ``num_processes`` are added).
        keep: how many checkpoints to keep (0 keeps all).

    Returns:
        The checkpoint directory.

    Raises:
        OutputError: the disk is full or read-only (the partial checkpoint is removed).
    """
    root = Path(output_dir) / CHECKPOINTS
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    try:
        with writing(tmp, "a checkpoint to"):
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
                saved = {**state, "step": step, "num_processes": accelerator.num_processes}
                (tmp / STATE_FILE).write_text(json.dumps(saved, indent=2))
                _publish(tmp, final)
    except OutputError:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # give the space back
        raise
    if accelerator.is_main_process and keep > 0:
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ------------------------------------------------------------------------------------ resuming
@dataclass
class ResumePlan:
    """What :func:`plan_resume` decided.

    Attributes:
        candidates: checkpoints to resume from, newest first (empty: start from scratch).
        changes: settings that differ from the saved config (all in
            :data:`RESUMABLE_FIELDS`), ``{"optim.lr": (old, new)}``.
    """

    candidates: list[Path] = field(default_factory=list)
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def _flat_values(config: TrainConfig) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, sec in config_to_dict(config).items() for k, v in sec.items()}


def plan_resume(
    config: TrainConfig,
    output_dir: str | Path,
    resume: bool,
    found: RunDirState | None = None,
) -> ResumePlan:
    """Decide how a run into ``output_dir`` starts; call before writing anything.

    A directory that is missing, empty, or holds a run that made no progress (no checkpoint,
    no ``final/``, no metrics: e.g. one that failed while starting) starts from scratch. A run
    with progress is only continued with ``resume``; a directory holding other files is never
    written to.

    Raises:
        OutputError: ``output_dir`` is a file, or a non-empty directory that is not a run.
        ConfigError: ``output_dir`` holds a run and ``resume`` is False; or the saved config
            differs from ``config`` outside :data:`RESUMABLE_FIELDS`; or the newest checkpoint
            is past ``train.max_steps``.
    """
    output_dir = Path(output_dir)
    found = inspect_run_dir(output_dir) if found is None else found
    refuse_foreign(found, output_dir)
    if not resume:
        if found.has_progress:
            raise ConfigError(
                f"{output_dir} already holds a run ({found.describe()}); pass --resume "
                "(resume=True) to continue it, or choose a new output directory"
            )
        return ResumePlan()
    candidates = [path for _, path in reversed(list_checkpoints(output_dir))]
    if not candidates:
        return ResumePlan()
    changes: dict[str, tuple[Any, Any]] = {}
    saved_path = output_dir / "config.yaml"
    if saved_path.is_file():
        try:
            saved = load_config(saved_path)
        except ValueError as err:
            raise ConfigError(f"cannot resume {output_dir}: {err}") from None
        changed = config_diff(saved, config)
        refused = [f for f in changed if f not in RESUMABLE_FIELDS]
        if refused:
            raise ConfigError(
                f"cannot resume {output_dir}: the config differs from the saved one in "
                f"{', '.join(refused)}; only {', '.join(sorted(RESUMABLE_FIELDS))} may change "
                "on --resume"
            )
        old, new = _flat_values(saved), _flat_values(config)
        changes = {f: (old[f], new[f]) for f in changed}
    newest = found.checkpoints[-1] if found.checkpoints else 0
    if newest > config.train.max_steps:
        raise ConfigError(
            f"{candidates[0]} is at step {newest}, past train.max_steps="
            f"{config.train.max_steps}; raise train.max_steps to resume"
        )
    return ResumePlan(candidates, changes)


def resume_point(config: TrainConfig, output_dir: Path, resume: bool) -> Path | None:
    """The newest checkpoint to resume from (None: start fresh); see :func:`plan_resume`."""
    plan = plan_resume(config, output_dir, resume)
    return plan.candidates[0] if plan.candidates else None


def resume_config(
    recipe: TrainConfig, overrides: Sequence[str] | Mapping[str, Any] | None, output_dir: str | Path
) -> TrainConfig:
    """The config a command-line ``--resume`` continues with: the run's own ``config.yaml`` (the
    recipe and overrides it was launched with, and the changes of earlier resumes) with only the
    ``overrides`` given on this command applied.

    A recipe setting in :data:`RESUMABLE_FIELDS` that differs from the run's saved value does
    not change the run (it is logged); pass it as a flag to change it. A recipe that differs in
    a field that defines the run is returned as given, so :func:`plan_resume` refuses it by
    name. Without a saved ``config.yaml`` this is ``recipe`` with ``overrides``.
    """
    requested = apply_overrides(recipe, overrides)
    saved_path = Path(output_dir).expanduser() / "config.yaml"
    if not saved_path.is_file():
        return requested
    try:
        continued = apply_overrides(load_config(saved_path), overrides)
    except ValueError:
        return requested  # plan_resume names the unreadable config
    differing = config_diff(continued, requested)
    if any(name not in RESUMABLE_FIELDS for name in differing):
        return requested
    if differing:
        old, new = _flat_values(continued), _flat_values(requested)
        kept = ", ".join(f"{k} {old[k]} (the recipe says {new[k]})" for k in differing)
        log.info(
            "proseco train: --resume continues %s as launched, keeping %s; pass a flag "
            "(--section.field VALUE) to change a setting",
            output_dir,
            kept,
        )
    return continued


def _load_device(accelerator: Accelerator) -> str:
    """The device name for safetensors' ``load_file``: under CPU DDP Accelerate's device is
    ``cpu:0``, which safetensors refuses; every CPU is plain ``cpu``."""
    device = accelerator.device
    return "cpu" if device.type == "cpu" else str(device)


def _load_parts(
    accelerator: Accelerator, path: Path, ema: EMA | None, model: Any
) -> dict[str, Any]:
    """Load everything but judge the random state; raise on any damage (no collectives)."""
    state = read_trainer_state(path)
    accelerator.load_state(str(path))
    if ema is not None:
        ema_path = path / _ema_file(accelerator)
        if not ema_path.is_file():
            raise ModelLoadError(
                f"{ema_path} is missing; the checkpoint was written without EMA (train.ema_decay: 0)"
            )
        ema.load_state_dict(load_file(str(ema_path), device=_load_device(accelerator)))
    tensors = {} if model is None else {n: p.detach() for n, p in model.named_parameters()}
    if ema is not None:
        tensors.update({f"ema.{n}": t for n, t in ema.shadow.items()})
    bad = non_finite_tensors(tensors)
    if bad:
        raise ModelLoadError(f"{path} holds non-finite weights ({', '.join(bad[:3])})")
    return state


def _random_state_problem(path: Path, process_index: int) -> str | None:
    """Why this process's random state in ``path`` cannot be restored, or None."""
    from accelerate.utils import load
    from accelerate.utils.constants import RNG_STATE_NAME

    file = path / f"{RNG_STATE_NAME}_{process_index}.pkl"
    if not file.is_file():
        return f"{file} is missing"
    try:
        states = load(file)  # weights_only: a pickle that would run code is refused
    except Exception as err:  # noqa: BLE001 - any failure means "not restorable"
        return f"{file} cannot be loaded ({type(err).__name__}: {_short(err)})"
    needed = ("random_state", "numpy_random_seed", "torch_manual_seed")
    if not isinstance(states, dict) or any(k not in states for k in needed):
        return f"{file} does not hold the random states of Python, NumPy and torch"
    return None


def _short(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Resumed:
    """What :func:`load_resume_checkpoint` restored.

    Attributes:
        state: the trainer state (``step``, ``tokens_seen``, ...).
        checkpoint: the checkpoint it came from.
        skipped: newer checkpoints that could not be loaded, with the reason.
        inexact: why the random state was not restored (only with ``allow_inexact``), or None.
    """

    state: dict[str, Any]
    checkpoint: Path
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    inexact: str | None = None


def load_resume_checkpoint(
    accelerator: Accelerator,
    candidates: list[Path],
    *,
    ema: EMA | None,
    model: Any = None,
    allow_inexact: bool = False,
    reseed: int | None = None,
) -> Resumed:
    """Restore the newest loadable checkpoint of ``candidates`` (newest first).

    A checkpoint that cannot be loaded (truncated or corrupt files, non-finite weights) is
    skipped with a warning and the next one is tried. Call on every process.

    Args:
        ema: the run's EMA, or None.
        model: the prepared model, to check that the loaded weights are finite.
        allow_inexact: go on (with a warning) when the random state cannot be restored.
        reseed: then seed the random generators with this instead.

    Raises:
        ModelLoadError: no candidate can be loaded; or a random state cannot be restored and
            ``allow_inexact`` is False.
    """
    from accelerate.utils import set_seed

    skipped: list[tuple[Path, str]] = []
    for i, path in enumerate(candidates):
        error = None
        try:
            state = _load_parts(accelerator, path, ema, model)
        except Exception as err:  # noqa: BLE001 - a damaged checkpoint: try the previous one
            error = _short(err, 400)
        if _any_process(accelerator, error is not None):
            skipped.append((path, error or "another process could not load its part"))
            if accelerator.is_main_process and i + 1 < len(candidates):
                log.warning(
                    "proseco train: warning: checkpoint %s cannot be loaded (%s); falling back "
                    "to the previous checkpoint, %s",
                    path,
                    skipped[-1][1],
                    candidates[i + 1].name,
                )
            continue
        problem = None
        saved_procs = state.get("num_processes")
        if saved_procs in (None, accelerator.num_processes):
            problem = _random_state_problem(path, accelerator.process_index)
        if _any_process(accelerator, problem is not None):
            problem = problem or "another process's random state cannot be restored"
            if not allow_inexact:
                raise ModelLoadError(
                    f"cannot resume exactly from {path}: {problem}. Without it the resumed run "
                    "would differ from an uninterrupted one. To continue anyway, pass "
                    "--train.allow_inexact_resume true; or remove that checkpoint directory to "
                    "resume from an earlier one"
                )
            if accelerator.is_main_process:
                log.warning(
                    "proseco train: WARNING: resuming from %s WITHOUT its random state (%s); "
                    "train.allow_inexact_resume is set, so the run goes on, but it is no longer "
                    "bitwise reproducible",
                    path,
                    problem,
                )
            if reseed is not None:
                set_seed(reseed, device_specific=True)
        return Resumed(state, path, skipped, problem)
    reasons = "; ".join(f"{p}: {r}" for p, r in skipped) or "no checkpoint given"
    raise ModelLoadError(
        f"no checkpoint could be loaded ({reasons}); remove the damaged checkpoint directories "
        "to start again from scratch with --resume"
    )


def load_checkpoint(
    accelerator: Accelerator,
    path: str | Path,
    *,
    ema: EMA | None,
    model: Any = None,
    allow_inexact: bool = False,
) -> dict[str, Any]:
    """Restore model, optimizer, RNG and EMA state from ``path``; return the trainer state.

    Raises:
        ModelLoadError: a file is missing or damaged, the weights are not finite, or (unless
            ``allow_inexact``) the random state cannot be restored.
    """
    path = Path(path)
    try:
        resumed = load_resume_checkpoint(
            accelerator, [path], ema=ema, model=model, allow_inexact=allow_inexact
        )
    except ModelLoadError as err:
        if "no checkpoint could be loaded" in str(err):
            raise ModelLoadError(f"cannot load checkpoint {path}: {err}") from None
        raise
    return resumed.state


EXPORT_INFO = "export_info.json"  # in final/: {"step": the training step it was exported at}


def exported_step(out_dir: str | Path) -> int | None:
    """The training step an exported ``final/`` directory holds (from its ``export_info.json``),
    or None if it was exported before the step was recorded or cannot be read."""
    try:
        step = json.loads((Path(out_dir) / EXPORT_INFO).read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def export_pretrained(
    accelerator: Accelerator,
    model: Any,
    ema: EMA | None,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    lora_save: str = "merged",
    step: int | None = None,
) -> Path:
    """Save the model with its EMA weights and the tokenizer as a ``from_pretrained`` directory.

    Call on every process (FSDP / DeepSpeed gather the full weights). Written atomically. A
    LoRA model is saved as ``lora_save`` says (:func:`proseco.training.lora.save_model`). With
    ``step``, ``export_info.json`` records it: a run resumed with a raised ``max_steps`` keeps
    its earlier ``final/`` until the new export replaces it, and readers can tell which it is.

    Raises:
        OutputError: the disk is full or read-only.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    with ema.swapped() if ema is not None else nullcontext():
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            try:
                with writing(out_dir, "the exported model to"):
                    shutil.rmtree(tmp, ignore_errors=True)
                    unwrapped = accelerator.unwrap_model(model)
                    save_model(unwrapped, tmp, state_dict, lora_save)
                    if tokenizer is not None:
                        tokenizer.save_pretrained(str(tmp))
                    if step is not None:
                        (tmp / EXPORT_INFO).write_text(json.dumps({"step": step}) + "\n")
                    _publish(tmp, out_dir)
            except OutputError:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    accelerator.wait_for_everyone()
    return out_dir
