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
    export OUTPUT/final (EMA weights + tokenizer)
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from proseco.schedules import get_schedule
from proseco.training.batches import BatchOrder, batch_plan, eval_seed, micro_seed
from proseco.training.build import build_model, build_tokenizer
from proseco.training.checkpoint import (
    export_pretrained,
    install_state_hooks,
    latest_checkpoint,
    load_checkpoint,
    resume_point,
    save_checkpoint,
)
from proseco.training.config import TrainConfig
from proseco.training.config_io import apply_overrides, config_to_dict, load_config, save_config
from proseco.training.ema import EMA
from proseco.training.lr import learning_rate, set_learning_rate
from proseco.training.metrics import MetricsLogger, tracker_names
from proseco.training.splits import build_splits
from proseco.training.step import ModelView, batch_loss, evaluate

__all__ = ["train", "TrainResult", "TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; training stopped before the update."""


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
        f"{s}.{k}": (str(v) if isinstance(v, list) else v)
        for s, section in config_to_dict(config).items()
        for k, v in section.items()
    }


def train(
    config: TrainConfig | str | Path | dict,
    output_dir: str | Path,
    resume: bool = False,
    *,
    overrides: dict[str, Any] | list[str] | None = None,
) -> TrainResult:
    """Train a model; see the module docstring for what one step does.

    Args:
        config: a :class:`TrainConfig`, a recipe path or shipped recipe name, or a dict.
        output_dir: where ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and ``final/`` go.
        resume: continue from the newest checkpoint in ``output_dir`` (start fresh if none).
        overrides: dotted overrides (``{"optim.lr": 1e-3}`` or ``["--optim.lr", "1e-3"]``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError / FileNotFoundError: bad config or data, found before any training step.
        TrainingDivergedError: a non-finite loss; the last good checkpoint is left intact.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import set_seed

    config = apply_overrides(load_config(config), overrides)
    output_dir = Path(output_dir).expanduser()
    ckpt = resume_point(config, output_dir, resume)
    cpu = _cpu_only_distributed()
    _fresh_accelerate_state()
    micro, accum = batch_plan(
        config.train.global_batch_size,
        config.train.micro_batch_size,
        PartialState(cpu=cpu).num_processes,
    )
    accelerator = Accelerator(
        cpu=cpu,
        gradient_accumulation_steps=accum,
        mixed_precision=config.train.mixed_precision,
        log_with=tracker_names(config.train.tensorboard, config.train.wandb_project) or None,
        project_dir=str(output_dir),
    )
    set_seed(config.train.seed)
    tokenizer = build_tokenizer(config.data.tokenizer)
    with accelerator.main_process_first():
        train_data, val_data = build_splits(config.data, tokenizer)
    model = build_model(config, tokenizer)
    if accelerator.is_main_process:
        save_config(config, output_dir / "config.yaml")
    optim = config.optim
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    install_state_hooks(accelerator)
    bare = accelerator.unwrap_model(model)
    ema = EMA(bare.named_parameters(), config.train.ema_decay) if config.train.ema_decay else None
    state: dict[str, Any] = {"step": 0, "tokens_seen": 0}
    if ckpt is not None:
        state = load_checkpoint(accelerator, ckpt, ema=ema)
        accelerator.step = 0  # checkpoints sit on optimizer-step boundaries
    logger = MetricsLogger(
        accelerator,
        output_dir,
        resume_step=state["step"] if ckpt is not None else None,
        config=_flat(config),
    )
    run = _Run(config, accelerator, model, optimizer, ema, tokenizer, logger, output_dir)
    run.setup(ModelView(model, getattr(bare, "config", None)), train_data, val_data, micro, accum)
    return run.loop(state, last_checkpoint=ckpt)


class _Run:
    """The state of one training run (kept in one object so the loop reads top to bottom)."""

    def __init__(self, config, accelerator, model, optimizer, ema, tokenizer, logger, output_dir):
        self.config, self.accelerator, self.model = config, accelerator, model
        self.optimizer, self.ema, self.tokenizer = optimizer, ema, tokenizer
        self.logger, self.output_dir = logger, output_dir
        self.schedule = get_schedule(config.loss.schedule)
        self.loss_config = config.loss.loss_config()
        self.mask_id = int(tokenizer.mask_token_id)

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

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (per-process means of loss terms ``[4]``, grad norm)."""
        cfg, acc = self.config, self.accelerator
        device = acc.device
        sums = torch.zeros(4, device=device)
        bad = torch.zeros((), device=device)
        backward_fn = acc.backward if cfg.loss.two_backward else None
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
                    backward_fn=backward_fn,
                )
                if backward_fn is None:
                    acc.backward(out.loss)
            err = out.proposal_error_rate
            err = torch.zeros((), device=device) if err is None else err
            terms = [out.loss.detach(), out.mdm_loss, out.corrector_loss, err]
            sums += torch.stack([x.to(device).float() for x in terms]) / self.accum
            bad += (~torch.isfinite(out.loss.detach())).float()
        grad_norm = torch.zeros((), device=device)
        if cfg.optim.grad_clip > 0:
            norm = acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            if norm is not None:  # DeepSpeed clips inside its engine
                grad_norm = torch.as_tensor(norm, device=device).float()
            if cfg.train.mixed_precision != "fp16":  # fp16 overflows are skipped by the scaler
                bad += (~torch.isfinite(grad_norm)).float()
        if float(acc.reduce(bad, reduction="sum")) > 0:
            self._diverged(step, sums)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        return sums, grad_norm

    def _diverged(self, step: int, sums: torch.Tensor) -> None:
        last = latest_checkpoint(self.output_dir)
        where = (
            f"the last good checkpoint is {last} (resume with --resume after lowering optim.lr, "
            "enabling optim.grad_clip or using train.mixed_precision: no)"
            if last is not None
            else "no checkpoint had been written yet"
        )
        self.logger.close()
        raise TrainingDivergedError(
            f"the loss became non-finite at optimizer step {step + 1} (loss {float(sums[0])}); "
            f"training stopped before applying that update and nothing was saved; {where}"
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
                )
        finally:
            self.model.train()

    def loop(self, state: dict[str, Any], last_checkpoint: Path | None) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, acc = self.config.train, self.accelerator
        start, tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        bar = tqdm(
            total=cfg.max_steps,
            initial=start,
            unit="step",
            dynamic_ncols=True,
            disable=not (cfg.progress_bar and acc.is_main_process),
        )
        window = torch.zeros(4, device=acc.device)
        window_steps, window_time = 0, 0.0  # time spent in train steps only (no eval/saving)
        train_loss, validation = None, None
        self.model.train()
        for step in range(start, cfg.max_steps):
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
            window_time += time.perf_counter() - tic
            window += sums
            window_steps += 1
            tokens_seen += self.tokens_per_step
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.max_steps:
                means = (acc.reduce(window, reduction="mean") / window_steps).tolist()
                tok_s = window_steps * self.tokens_per_step / max(window_time, 1e-9)
                train_loss = means[0]
                self.logger.log(
                    "train",
                    done,
                    {
                        "loss": means[0],
                        "mdm_loss": means[1],
                        "corrector_loss": means[2],
                        "proposal_error_rate": means[3],
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "tokens_per_s": tok_s,
                        "tokens_seen": tokens_seen,
                        "epoch": self.order.epoch(done),
                    },
                )
                bar.set_postfix(loss=f"{means[0]:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}")
                window.zero_()
                window_steps, window_time = 0, 0.0
            if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.max_steps:
                validation = self.validate()
                if validation is not None:
                    self.logger.log("validation", done, validation)
            if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.max_steps:
                last_checkpoint = self._save(done, tokens_seen)
        bar.close()
        if validation is None and start >= cfg.max_steps:
            validation = self.validate()
        final = export_pretrained(
            acc, self.model, self.ema, self.tokenizer, self.output_dir / "final"
        )
        self.logger.close()
        return TrainResult(
            self.output_dir, final, last_checkpoint, cfg.max_steps, train_loss, validation
        )

    def _save(self, step: int, tokens_seen: int) -> Path:
        return save_checkpoint(
            self.accelerator,
            self.output_dir,
            step,
            model=self.model,
            ema=self.ema,
            state={
                "tokens_seen": tokens_seen,
                "examples_seen": step * self.config.train.global_batch_size,
                "epoch": self.order.epoch(step),
            },
            keep=self.config.train.keep_checkpoints,
        )
