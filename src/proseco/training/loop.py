"""The training loop on Hugging Face Accelerate: one CPU, one GPU, DDP, FSDP or DeepSpeed.

The distributed setup comes entirely from Accelerate (``accelerate launch`` / ``torchrun`` and an
Accelerate config); this loop only decides what each optimizer step computes::

    for step in range(start, max_steps):
        lr <- warm-up / cosine schedule(step)
        for each of the `accumulation` micro-batches of this process (BatchOrder):
            loss = ProSeCo / MDLM loss (noise seeded by (seed, step, micro-batch))
            backward (or two backwards: MDLM term, then corrector term)
        stop if any process saw a non-finite loss or gradient norm
        clip gradients, AdamW step, EMA update
        log / validate (EMA weights) / checkpoint (atomic)
        on SIGTERM / Ctrl-C: checkpoint this step, raise TrainingInterrupted (resumable)
    export OUTPUT/final (EMA weights + tokenizer)

Around it (see :mod:`~proseco.training.rundir` and :mod:`~proseco.training.checkpoint`): the run
holds an OS lock on its directory, so a second run into it is refused; config, data, batch size
and model are all checked before the first file is written; checkpoints are only written with
finite weights; a divergence says whether the loss, the gradient norm or the weights went
non-finite, or the weights grew past :data:`WEIGHT_GROWTH_LIMIT` times their size at the start of
the run (so every checkpoint can be resumed from), and prints a ``proseco train ... --resume
--optim.lr ...`` command to recover from the last good one.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from proseco.errors import ConfigError, DataError, ProsecoError
from proseco.schedules import get_schedule
from proseco.special_tokens import resolve_special_ids
from proseco.training.batches import BatchOrder, batch_plan, eval_seed, micro_seed
from proseco.training.build import build_model, build_tokenizer
from proseco.training.checkpoint import (
    Resumed,
    ResumePlan,
    export_pretrained,
    exported_step,
    install_state_hooks,
    load_resume_checkpoint,
    non_finite_tensors,
    plan_resume,
    save_checkpoint,
)
from proseco.training.config import TrainConfig
from proseco.training.config_io import apply_overrides, config_to_dict, load_config, save_config
from proseco.training.ema import EMA
from proseco.training.interrupt import StopRequests, TrainingInterrupted
from proseco.training.lr import learning_rate, set_learning_rate
from proseco.training.metrics import MetricsLogger, tracker_names
from proseco.training.rundir import RunLock, inspect_run_dir, refuse_foreign, writing
from proseco.training.splits import build_splits
from proseco.training.step import ModelView, batch_loss, evaluate
from proseco.training.term_stats import TermStats

__all__ = ["train", "TrainResult", "TrainingDivergedError", "RESUME_LOG"]

log = logging.getLogger("proseco.training")

RESUME_LOG = "resume_log.jsonl"

WEIGHT_GROWTH_LIMIT = 1e4
"""A checkpoint is saved (and called good) only while the largest absolute weight is at most this
many times its value at the start of the run (at least 1): finite but exploded weights (a
learning rate of 1e25) cannot be resumed from, whatever the learning rate."""


class TrainingDivergedError(RuntimeError):
    """The loss, the gradient norm or the weights became NaN or infinite, or the weights
    exploded (see :data:`WEIGHT_GROWTH_LIMIT`); nothing bad was saved."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        output_dir: the run directory (``config.yaml``, ``metrics.jsonl``, ``checkpoints/``).
        final_dir: the exported ``from_pretrained`` directory (EMA weights + tokenizer).
        checkpoint: the last checkpoint written.
        step: optimizer steps done.
        train_loss: mean training loss over the last logging window.
        validation: the last validation metrics (None without a validation split).
    """

    output_dir: Path
    final_dir: Path
    checkpoint: Path | None
    step: int
    train_loss: float | None
    validation: dict[str, float] | None


def _fresh_accelerate_state() -> None:
    """Forget the mixed precision and accumulation of an earlier ``train`` call in this process.

    Accelerate keeps them in process-wide singletons and refuses a second ``Accelerator`` with a
    different ``mixed_precision``; the process group (``PartialState``) is kept.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _cpu_only_distributed() -> bool:
    """True for a multi-process launch (torchrun) on a machine without GPUs.

    Accelerate only sets up CPU DDP (gloo) when told to use the CPU; ``accelerate launch --cpu``
    does so through ``ACCELERATE_USE_CPU``, torchrun does not.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    xpu = getattr(torch, "xpu", None)
    has_xpu = xpu is not None and xpu.is_available()
    return not (torch.cuda.is_available() or has_xpu)


def _flat(config: TrainConfig) -> dict[str, Any]:
    return {
        f"{s}.{k}": (str(v) if isinstance(v, (list, dict)) else v)
        for s, section in config_to_dict(config).items()
        for k, v in section.items()
    }


def _on_main(partial: Any, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the main process only; if it raises, every process raises."""
    error: BaseException | None = None
    if partial.is_main_process:
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - re-raised below, on every process
            error = err
    if partial.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [None if error is None else (isinstance(error, ProsecoError), error)]
        broadcast_object_list(box, from_process=0)
        if box[0] is not None and error is None:
            user_error, remote = box[0]
            error = remote if user_error else RuntimeError(f"the main process failed: {remote}")
    if error is not None:
        raise error


def _open_run_dir(lock: RunLock, output_dir: Path) -> None:
    refuse_foreign(inspect_run_dir(output_dir), output_dir)  # before creating the lock file
    lock.acquire()


def train(
    config: TrainConfig | str | Path | dict,
    output_dir: str | Path,
    resume: bool = False,
    *,
    overrides: dict[str, Any] | list[str] | None = None,
) -> TrainResult:
    """Train a model; see the module docstring for what one step does.

    Nothing is written to ``output_dir`` before the config, the data and the model have been
    checked; a directory holding other files is never written to; a second run into the same
    directory is refused while the first one lives (an OS lock on ``OUTPUT/.proseco.lock``).

    Args:
        config: a :class:`TrainConfig`, a recipe path or shipped recipe name, or a dict.
        output_dir: where ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and ``final/`` go.
        resume: continue from the newest loadable checkpoint in ``output_dir`` (start fresh if
            none). Only the settings in
            :data:`~proseco.training.checkpoint.RESUMABLE_FIELDS` may change; changes are saved
            in ``config.yaml`` and recorded in ``resume_log.jsonl``.
        overrides: dotted overrides (``{"optim.lr": 1e-3}`` or ``["--optim.lr", "1e-3"]``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError / DataError / FileNotFoundError: bad config or data, found before anything
            is written.
        OutputError: ``output_dir`` is in use by another run, is a file or a foreign non-empty
            directory, or cannot be written (read-only, full disk).
        ModelLoadError: no checkpoint can be loaded, or a random state cannot be restored
            (see ``train.allow_inexact_resume``).
        TrainingDivergedError: a non-finite loss, gradient norm or weights; the last good
            checkpoint is left intact.
        TrainingInterrupted: SIGTERM or SIGINT (Ctrl-C) arrived; the step in progress was
            finished and checkpointed, so ``resume=True`` continues exactly from it.
    """
    from accelerate import PartialState

    config = apply_overrides(load_config(config), overrides)
    output_dir = Path(output_dir).expanduser()
    cpu = _cpu_only_distributed()
    _fresh_accelerate_state()
    partial = PartialState(cpu=cpu)
    lock = RunLock(output_dir)
    _on_main(partial, lambda: _open_run_dir(lock, output_dir))
    try:
        plan = plan_resume(config, output_dir, resume)
        return _train(config, output_dir, plan, partial.num_processes, cpu)
    finally:
        lock.release()


def _train(
    config: TrainConfig, output_dir: Path, plan: ResumePlan, num_processes: int, cpu: bool
) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    micro, accum = batch_plan(
        config.train.global_batch_size, config.train.micro_batch_size, num_processes
    )
    accelerator = Accelerator(
        cpu=cpu,
        gradient_accumulation_steps=accum,
        mixed_precision=config.train.mixed_precision,
        log_with=tracker_names(config.train.tensorboard, config.train.wandb_project) or None,
        project_dir=str(output_dir),
    )
    _warn_if_not_sharded(accelerator)
    set_seed(config.train.seed)
    tokenizer = build_tokenizer(
        config.data.tokenizer, mask_token=config.data.mask_token,
        trust_remote_code=config.model.trust_remote_code,
    )  # fmt: skip
    with accelerator.main_process_first():
        train_data, val_data = build_splits(config.data, tokenizer)
    if config.train.global_batch_size > len(train_data):
        raise DataError(
            f"train.global_batch_size={config.train.global_batch_size} is larger than the "
            f"training split ({len(train_data)} sequences of {train_data.length} tokens); lower "
            f"train.global_batch_size to at most {len(train_data)} or add data"
        )
    model = build_model(config, tokenizer)
    optim = config.optim
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],  # LoRA: the adapters only
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    _configure_deepspeed(accelerator, micro, accum, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    install_state_hooks(accelerator)
    bare = accelerator.unwrap_model(model)
    ema = EMA(bare.named_parameters(), config.train.ema_decay) if config.train.ema_decay else None
    state: dict[str, Any] = {"step": 0, "tokens_seen": 0}
    resumed = None
    if plan.candidates:
        resumed = load_resume_checkpoint(
            accelerator,
            plan.candidates,
            ema=ema,
            model=model,
            allow_inexact=config.train.allow_inexact_resume,
        )
        state = resumed.state
        accelerator.step = 0  # checkpoints sit on optimizer-step boundaries
        if resumed.inexact is not None:  # a fresh, step-dependent RNG stream instead
            set_seed((config.train.seed * 1_000_003 + int(state["step"])) % 2**32, True)
        for group in optimizer.param_groups:  # the loaded state carries the saved value
            group["weight_decay"] = optim.weight_decay
    # everything is checked: the first writes
    if accelerator.is_main_process:
        with writing(output_dir / "config.yaml", "the config to"):
            save_config(config, output_dir / "config.yaml")
        if resumed is not None:
            _record_resume(output_dir, resumed, plan)
    logger = MetricsLogger(
        accelerator,
        output_dir,
        resume_step=state["step"] if resumed is not None else None,
        config=_flat(config),
    )
    run = _Run(config, accelerator, model, optimizer, ema, tokenizer, logger, output_dir)
    run.setup(ModelView(model, getattr(bare, "config", None)), train_data, val_data, micro, accum)
    return run.loop(state, last_checkpoint=resumed.checkpoint if resumed is not None else None)


def _configure_deepspeed(accelerator: Any, micro: int, accum: int, config: TrainConfig) -> None:
    """Give DeepSpeed the recipe's micro-batch, accumulation and clipping (no dataloader here).

    Raises:
        ConfigError: EMA with ZeRO-3, where each process only holds placeholders of the weights.
    """
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    if plugin.zero_stage == 3 and config.train.ema_decay > 0:
        raise ConfigError(
            "train.ema_decay > 0 does not work with DeepSpeed ZeRO-3 (each process holds only "
            "placeholders of the weights); set --train.ema_decay 0 or use the fsdp config"
        )
    ds = plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = micro
    ds["gradient_accumulation_steps"] = accum
    ds["train_batch_size"] = micro * accum * accelerator.num_processes
    ds["gradient_clipping"] = config.optim.grad_clip
    accelerator.gradient_accumulation_steps = accum


def _warn_if_not_sharded(accelerator: Any) -> None:
    """Say so when an FSDP config was launched but Accelerate did not set FSDP up (CPU only)."""
    from accelerate.utils import DistributedType

    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    fallback = wanted and accelerator.distributed_type != DistributedType.FSDP
    if fallback and accelerator.is_main_process:
        log.warning(
            "proseco train: warning: the Accelerate config asks for FSDP but Accelerate set up "
            "%s (it enables FSDP only on GPUs and other accelerators); this run runs as plain "
            "data parallel, every process holding the whole model",
            accelerator.distributed_type.value,
        )


def _record_resume(output_dir: Path, resumed: Resumed, plan: ResumePlan) -> None:
    """Append the resume (and any changed settings) to ``resume_log.jsonl``; say what changed."""
    step = int(resumed.state["step"])
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "step": step,
        "checkpoint": resumed.checkpoint.name,
        "changed": {k: list(v) for k, v in plan.changes.items()},
        "skipped": {p.name: reason for p, reason in resumed.skipped},
        "inexact": resumed.inexact,
    }
    path = output_dir / RESUME_LOG
    with writing(path, "the resume log to"), path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
    if plan.changes:
        changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in plan.changes.items())
        log.warning(
            "proseco train: resuming %s at step %d with changed settings: %s",
            output_dir,
            step,
            changes,
        )
    exported = exported_step(output_dir / "final")
    if exported is not None and exported <= step:
        log.warning(
            "proseco train: %s still holds the model exported at step %d; it is replaced when "
            "this run ends",
            output_dir / "final",
            exported,
        )


@dataclass
class _Progress:
    """What the loop carries from one optimizer step to the next."""

    tokens_seen: int
    checkpoint: Path | None  # the last checkpoint written
    window: torch.Tensor  # (4,) summed loss terms since the last train record
    window_steps: int = 0
    window_time: float = 0.0  # seconds in train steps only (no eval / saving)
    train_loss: float | None = None
    validation: dict[str, float] | None = None


class _Run:
    """The state of one training run (kept in one object so the loop reads top to bottom)."""

    def __init__(self, config, accelerator, model, optimizer, ema, tokenizer, logger, output_dir):
        self.config, self.accelerator, self.model = config, accelerator, model
        self.optimizer, self.ema, self.tokenizer = optimizer, ema, tokenizer
        self.logger, self.output_dir = logger, output_dir
        self.schedule = get_schedule(config.loss.schedule)
        self.loss_config = config.loss.loss_config()
        # one rule for special ids (proseco.special_tokens); build_model made them agree
        mask = resolve_special_ids(accelerator.unwrap_model(model), tokenizer).mask
        self.mask_id = int(mask)
        self.last_good: Path | None = None  # the newest checkpoint known to be resumable
        self.last_good_lr: float | None = None  # the optim.lr that checkpoint was trained with
        self.initial_max_abs = 1.0  # max |w| at the start of the run (set by loop())

    def setup(self, view, train_data, val_data, micro: int, accum: int) -> None:
        acc = self.accelerator
        self.view, self.train_data, self.val_data = view, train_data, val_data
        self.micro, self.accum = micro, accum
        self.order = BatchOrder(
            len(train_data),
            self.config.train.global_batch_size,
            micro,
            acc.num_processes,
            acc.process_index,
            self.config.train.seed,
        )
        self.tokens_per_step = self.config.train.global_batch_size * train_data.length
        self.term_names: tuple[str, str | None] = ("mdlm_nelbo", None)  # set by each step
        loss = self.config.loss
        self.term_stats = TermStats(
            acc,
            [p for p in self.model.parameters() if p.requires_grad],
            enabled=loss.method().term_stats(self.loss_config),
            two_backward=bool(loss.two_backward),
        )

    def logs_at(self, done: int) -> bool:
        """Whether the train record is written after ``done`` optimizer steps."""
        train = self.config.train
        return done % train.log_every == 0 or done == train.max_steps

    def saves_at(self, done: int) -> bool:
        """Whether a checkpoint is written after ``done`` optimizer steps."""
        train = self.config.train
        return (bool(train.save_every) and done % train.save_every == 0) or done == train.max_steps

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (per-process means of loss terms ``[4]``, grad norm)."""
        cfg, acc = self.config, self.accelerator
        device = acc.device
        sums = torch.zeros(4, device=device)
        bad = torch.zeros(2, device=device)  # non-finite [loss, gradient norm]
        backward_fn = acc.backward if cfg.loss.two_backward else None
        self.term_stats.begin_step(self.logs_at(step + 1))
        for a in range(self.accum):
            batch = self.train_data.batch(self.order.indices(step, a), device)
            seed = micro_seed(cfg.train.seed, step, self.order.micro_index(a))
            generator = torch.Generator(device=device).manual_seed(seed)
            with acc.accumulate(self.model):
                out = batch_loss(
                    self.view,
                    batch,
                    mask_id=self.mask_id,
                    schedule=self.schedule,
                    loss_config=self.loss_config,
                    step=step,
                    generator=generator,
                    num_classes=cfg.data.num_classes,
                    cond_dropout=cfg.loss.cond_dropout,
                    backward_fn=self.term_stats.backward_fn(backward_fn),
                    objective=cfg.loss.objective,
                )
                if backward_fn is None:
                    acc.backward(out.loss)
            self.term_stats.add(out, batch, self.accum)
            err = out.proposal_error_rate
            err = torch.zeros((), device=device) if err is None else err
            terms = [out.loss.detach(), out.mdm_loss, out.corrector_loss, err]
            self.term_names = out.term_names  # what mdm_loss and corrector_loss hold
            sums += torch.stack([x.to(device).float() for x in terms]) / self.accum
            bad[0] += (~torch.isfinite(out.loss.detach())).float()
        self.term_stats.end_step()  # reads the gradients before clipping changes them
        grad_norm = torch.zeros((), device=device)
        # without clipping, an infinite max norm measures the norm and scales by exactly 1
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        norm = acc.clip_grad_norm_(self.model.parameters(), clip)
        if norm is not None:  # DeepSpeed clips inside its engine
            grad_norm = torch.as_tensor(norm, device=device).float()
        if cfg.train.mixed_precision != "fp16":  # fp16 overflows are skipped by the scaler
            bad[1] += (~torch.isfinite(grad_norm)).float()
        bad = acc.reduce(bad, reduction="sum")
        if float(bad.sum()) > 0:
            loss, at = float(sums[0]), f"at optimizer step {step + 1}"
            if float(bad[0]) > 0:
                cause = f"the loss became non-finite {at} (loss {loss})"
            else:
                cause = (
                    f"the gradient norm became non-finite {at} (grad norm {float(grad_norm)}; "
                    f"the loss was still finite: {loss:.4g})"
                )
            self._diverged(
                f"{cause}; training stopped before applying that update and nothing was saved"
            )
        try:
            self.optimizer.step()
        except RuntimeError as err:  # e.g. a learning rate too large for the weights' dtype
            if "overflow" not in str(err):
                raise
            self._diverged(
                f"the optimizer update overflowed at optimizer step {step + 1} ({err}); "
                "nothing was saved"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        return sums, grad_norm

    def _advice(self) -> str:
        """A ``proseco train`` command that resumes with a ten times lower learning rate (than
        this run's, or than the one the last good checkpoint was trained with, if lower)."""
        optim, out = self.config.optim, self.output_dir
        lr = min(optim.lr, self.last_good_lr or optim.lr) / 10
        words = ["proseco", "train", str(out / "config.yaml"), "--output-dir", str(out)]
        words += ["--resume", "--optim.lr", f"{lr:g}"]
        if optim.min_lr > float(f"{lr:g}"):
            words += ["--optim.min_lr", f"{lr / 10:g}"]
        if optim.grad_clip == 0:
            words += ["--optim.grad_clip", "1.0"]
        if self.config.train.mixed_precision == "fp16":
            words += ["--train.mixed_precision", "no"]
        return shlex.join(words)

    def _diverged(self, what: str) -> None:
        last = self.last_good
        if last is not None:
            where = (
                f"the last good checkpoint is {last}; to resume from it with a lower learning "
                f"rate run: {self._advice()}"
            )
        else:
            where = (
                "no checkpoint had been written yet; to start again with a lower learning rate "
                f"run: {self._advice()}"
            )
        self.logger.close()
        raise TrainingDivergedError(f"{what}; {where}")

    def _weights(self) -> dict[str, torch.Tensor]:
        """The model's weights and the EMA shadows (this process's shards)."""
        tensors = {n: p.detach() for n, p in self.model.named_parameters()}
        if self.ema is not None:
            tensors.update({f"ema.{n}": t for n, t in self.ema.shadow.items()})
        return tensors

    def _max_abs(self, tensors: dict[str, torch.Tensor]) -> float:
        """The largest absolute floating-point weight over all processes."""
        acc = self.accelerator
        local = max(
            (float(t.abs().max()) for t in tensors.values() if t.is_floating_point() and t.numel()),
            default=0.0,
        )
        if acc.num_processes == 1:
            return local
        return float(acc.gather(torch.tensor([local], device=acc.device)).max())

    def _check_weights(self, step: int) -> None:
        """Stop (without saving) if any model or EMA weight is NaN or infinite, or the weights
        grew past :data:`WEIGHT_GROWTH_LIMIT` times their size at the start of the run."""
        tensors = self._weights()
        bad = non_finite_tensors(tensors)
        flag = torch.tensor(float(bool(bad)), device=self.accelerator.device)
        if float(self.accelerator.reduce(flag, reduction="sum")) > 0:
            names = ", ".join(bad[:3]) if bad else "on another process"
            self._diverged(
                f"the weights became non-finite after optimizer step {step} ({names}) although "
                "the loss and gradient norm were finite (the learning rate is far too large); "
                "they were not saved"
            )
        largest, start = self._max_abs(tensors), self.initial_max_abs
        if largest > WEIGHT_GROWTH_LIMIT * max(start, 1.0):
            self._diverged(
                f"the weights exploded by optimizer step {step}: max |w| = {largest:.3g}, more "
                f"than {WEIGHT_GROWTH_LIMIT:g} times their size at the start of the run "
                f"({start:.3g}); the loss and weights were still finite, but no run resumes "
                "from such weights (the learning rate is far too large), so they were not saved"
            )

    def validate(self) -> dict[str, float] | None:
        if self.val_data is None:
            return None
        self.model.eval()
        try:
            with self.ema.swapped() if self.ema is not None else nullcontext():
                return evaluate(
                    self.view,
                    self.val_data,
                    accelerator=self.accelerator,
                    micro_batch_size=self.micro,
                    mask_id=self.mask_id,
                    schedule=self.schedule,
                    loss_config=self.loss_config,
                    seeds=lambda b: eval_seed(self.config.train.seed, b),
                    max_batches=self.config.train.eval_batches,
                    objective=self.config.loss.objective,
                )
        finally:
            self.model.train()

    def loop(self, state: dict[str, Any], last_checkpoint: Path | None) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, acc = self.config.train, self.accelerator
        start, tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        self.last_good = last_checkpoint
        self.last_good_lr = state.get("lr") if last_checkpoint is not None else None
        self.initial_max_abs = float(
            state.get("initial_max_abs") or self._max_abs(self._weights())
        )  # a checkpoint written before this was recorded: its own weights
        bar = tqdm(
            total=cfg.max_steps,
            initial=start,
            unit="step",
            dynamic_ncols=True,
            disable=not (cfg.progress_bar and acc.is_main_process),
        )
        run = _Progress(tokens_seen, last_checkpoint, torch.zeros(4, device=acc.device))
        self.model.train()
        with StopRequests() as stops:
            for step in range(start, cfg.max_steps):
                self.one_step(step, run, bar)
                stopped_by = stops.requested(acc)
                if stopped_by is not None:
                    bar.close()
                    self.stop(stopped_by, step + 1, run)
        bar.close()
        if run.validation is None and start >= cfg.max_steps:
            run.validation = self.validate()
        lora = self.config.model.lora
        final = export_pretrained(
            acc, self.model, self.ema, self.tokenizer, self.output_dir / "final",
            lora_save=lora.save if lora is not None else "merged", step=cfg.max_steps,
        )  # fmt: skip
        self.logger.close()
        return TrainResult(
            self.output_dir, final, run.checkpoint, cfg.max_steps, run.train_loss, run.validation
        )

    def stop(self, signal_name: str, done: int, run: _Progress) -> None:
        """Checkpoint step ``done`` (unless just written) and raise :class:`TrainingInterrupted`."""
        if not self.saves_at(done):  # else one_step has just written it
            run.checkpoint = self._save(done, run.tokens_seen)
        self.logger.close()
        raise TrainingInterrupted(signal_name, done, run.checkpoint)

    def one_step(self, step: int, run: _Progress, bar: Any) -> None:
        """Optimizer step ``step`` with its logging, validation and checkpoint (updates ``run``)."""
        cfg, acc = self.config.train, self.accelerator
        lr = learning_rate(
            step,
            lr=self.config.optim.lr,
            max_steps=cfg.max_steps,
            warmup_steps=self.config.optim.warmup_steps,
            schedule=self.config.optim.lr_schedule,
            min_lr=self.config.optim.min_lr,
        )
        set_learning_rate(self.optimizer, lr)
        tic = time.perf_counter()
        sums, grad_norm = self.train_step(step)
        run.window_time += time.perf_counter() - tic
        run.window += sums
        run.window_steps += 1
        run.tokens_seen += self.tokens_per_step
        done = step + 1
        bar.update(1)
        if self.logs_at(done):
            means = (acc.reduce(run.window, reduction="mean") / run.window_steps).tolist()
            tok_s = run.window_steps * self.tokens_per_step / max(run.window_time, 1e-9)
            run.train_loss = means[0]
            self.logger.log(
                "train",
                done,
                {
                    "loss": means[0],
                    "mdm_loss": means[1],
                    "corrector_loss": means[2],
                    **{n: means[i] for i, n in enumerate(self.term_names, 1) if n},
                    "proposal_error_rate": means[3],
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": tok_s,
                    "tokens_seen": run.tokens_seen,
                    "epoch": self.order.epoch(done),
                    **self.term_stats.metrics(),
                },
            )
            bar.set_postfix(loss=f"{means[0]:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}")
            run.window.zero_()
            run.window_steps, run.window_time = 0, 0.0
        if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.max_steps:
            run.validation = self.validate()
            if run.validation is not None:
                self.logger.log("validation", done, run.validation)
        if self.saves_at(done):
            run.checkpoint = self._save(done, run.tokens_seen)

    def _save(self, step: int, tokens_seen: int) -> Path:
        self._check_weights(step)
        self.last_good = save_checkpoint(
            self.accelerator,
            self.output_dir,
            step,
            model=self.model,
            ema=self.ema,
            state={
                "tokens_seen": tokens_seen,
                "examples_seen": step * self.config.train.global_batch_size,
                "epoch": self.order.epoch(step),
                "lr": self.config.optim.lr,
                "initial_max_abs": self.initial_max_abs,
            },
            keep=self.config.train.keep_checkpoints,
        )
        self.last_good_lr = self.config.optim.lr
        return self.last_good
