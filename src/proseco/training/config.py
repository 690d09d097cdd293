"""Training configuration: one frozen dataclass per section of a recipe.

A recipe is a plain serialised :class:`TrainConfig` (no interpolation, no class paths)::

    model: {preset: cpu-tiny, dropout: 0.1}
    data: {kind: text, source: corpus.txt, tokenizer: char, max_length: 64}
    loss: {sc_weight: 1.0, t_min: 0.1}
    optim: {lr: 1.0e-3, warmup_steps: 100, lr_schedule: cosine}
    train: {max_steps: 2000, global_batch_size: 128}

Each section checks its values when built; reading YAML, dotted overrides and unknown-field
errors live in :mod:`proseco.training.config_io`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from proseco.errors import ConfigError
from proseco.losses import LossConfig
from proseco.methods import TrainingMethod, get_method

__all__ = [
    "LoraSection",
    "ModelSection",
    "DataSection",
    "LossSection",
    "OptimSection",
    "TrainSection",
    "TrainConfig",
    "SECTIONS",
]


def _finite(section: str, obj: Any) -> None:
    """Reject NaN and infinite values in every float field (and float tuple) of ``obj``."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{section}.{f.name} must be a finite number, got {value!r}")


def _choice(section: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{section}.{name} must be one of {list(choices)}, got {value!r}")


def _positive(section: str, name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{section}.{name} must be {bound}, got {value}")


@dataclass(frozen=True)
class LoraSection:
    """Low-rank adapters (``peft``, ``pip install "proseco[lora]"``): ``model.lora: {r: 16}``.

    The base weights are frozen; each target ``nn.Linear`` ``W`` becomes
    ``W + (alpha / r) B A`` with trainable ``A [r, in]`` and ``B [out, r]`` (``B`` starts at 0).

    Attributes:
        r: the rank.
        alpha: the scale's numerator (default ``2 r``).
        dropout: dropout on each adapter's input.
        target_modules: names of the modules to adapt (a name matches a module whose name ends
            with it); ``[all-linear]``: every linear layer except the output head.
        save: what ``OUTPUT/final`` holds: ``merged`` (the full model with the adapters
            merged into the base weights; loads with :func:`proseco.load_pretrained`) or
            ``adapter`` (only ``adapter_config.json`` + ``adapter_model.safetensors``; load
            with :func:`proseco.training.lora.load_adapter`).
    """

    r: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("all-linear",)
    save: Literal["merged", "adapter"] = "merged"

    def __post_init__(self) -> None:
        _finite("model.lora", self)
        _positive("model.lora", "r", self.r)
        _positive("model.lora", "alpha", self.alpha)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.lora.dropout must lie in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("model.lora.target_modules is empty; list module names or all-linear")
        _choice("model.lora", "save", self.save, ("merged", "adapter"))

    @property
    def scale(self) -> float:
        """``alpha / r``: the factor of ``B A``."""
        return (2.0 * self.r if self.alpha is None else self.alpha) / self.r


ARCHITECTURE_FIELDS = ("hidden_size", "num_layers", "num_heads", "cond_dim", "dropout")
"""``model`` fields that size a network built from scratch (with ``preset``); a pretrained model
has its own."""


@dataclass(frozen=True)
class ModelSection:
    """The network. ``None`` fields keep the preset's value.

    Attributes:
        preset: a DiT size preset (``cpu-tiny``, ``cpu-small``, ``tiny``, ``small``, ``medium``).
        pretrained: a ``from_pretrained`` directory to start from instead (e.g. for SFT).
        hidden_size, num_layers, num_heads, cond_dim, dropout: architecture overrides.
        max_length: the longest sequence the model accepts (default ``data.max_length``).
        time_conditioning: feed ``t`` to the model (the paper: False).
        tie_word_embeddings: share input and output embeddings.
        lora: train low-rank adapters of ``pretrained`` instead of all weights
            (:class:`LoraSection`); None = full fine-tuning.
        adapter: how to load ``pretrained`` (``llada``, ``dream``, ``masked_lm``, ``proseco``;
            default: detected from its ``config.json``, see :mod:`proseco.models.hub`).
        trust_remote_code: allow a ``pretrained`` hub model that ships its own modelling code
            (LLaDA, Dream).
        gradient_checkpointing: recompute activations in the backward pass (less memory).
    """

    preset: str = "cpu-tiny"
    pretrained: str | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    cond_dim: int | None = None
    dropout: float | None = None
    max_length: int | None = None
    time_conditioning: bool = False
    tie_word_embeddings: bool = False
    lora: LoraSection | None = None
    adapter: str | None = None
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _finite("model", self)
        if self.lora is not None and self.pretrained is None:
            raise ConfigError(
                "model.lora adapts a pretrained model; set model.pretrained (or remove model.lora)"
            )
        if self.adapter is not None and self.pretrained is None:
            raise ConfigError("model.adapter says how to load model.pretrained; set it too")
        for name in ("hidden_size", "num_layers", "num_heads", "cond_dim", "max_length"):
            _positive("model", name, getattr(self, name))
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must lie in [0, 1), got {self.dropout}")


def _check_sft_options(cfg: DataSection) -> None:
    _choice("data", "chat_template", cfg.chat_template, ("auto", "none"))
    _choice("data", "pad_with", cfg.pad_with, ("pad", "eos"))
    if cfg.pad_with == "eos" and (cfg.kind != "sft" or not cfg.train_on_padding):
        raise ConfigError(
            "data.pad_with: eos is LLaDA's SFT padding, where the EOS padding is noised and "
            "carries loss; it needs data.kind: sft and data.train_on_padding: true"
        )
    if cfg.mix and cfg.kind != "sft":
        raise ConfigError(f"data.mix blends SFT datasets; it needs data.kind: sft, not {cfg.kind}")
    if cfg.kind == "sft" and cfg.source is not None:
        from proseco.data.sft_sources import check_sft_source, parse_mix

        try:
            for entry in cfg.mix:
                parse_mix(entry)
            check_sft_source(
                cfg.source,
                prompt_field=cfg.prompt_field,
                response_field=cfg.response_field,
                hub_config=cfg.hub_config,
                split=cfg.split,
            )
        except ValueError as err:
            raise ConfigError(str(err)) from None


@dataclass(frozen=True)
class DataSection:
    """What to train on.

    Attributes:
        kind: ``text`` (pretraining), ``sft`` (prompt/response pairs) or ``qm9`` (QM9 from
            ``qm9pack`` with its fixed 95/5 train/validation split, or, with ``source``, SMILES
            records from a file), optionally labelled for guidance.
        source: a local file, directory or glob (txt/jsonl/json/csv/parquet), or a Hugging Face
            dataset name (needs ``pip install "proseco[text]"``). Optional for ``qm9``.
        validation_source: a separate held-out source; otherwise ``validation_fraction`` of the
            records (documents, pairs or molecules) is held out.
        validation_fraction: share of records held out for validation (0 disables validation).
        split, hub_config: the split and config name of a hub dataset.
        text_field, prompt_field, response_field: record fields to read.
        tokenizer: ``char``, ``smiles``, or a tokenizer directory / hub name.
        max_length: sequence length ``L`` of a training example.
        layout: ``wrapped`` (concatenate documents with EOS, cut into ``[BOS] chunk [EOS]``) or
            ``padded`` (one example per record, padded to ``L``). SFT, QM9 and labelled records
            are always padded.
        overlong: what to do with a record longer than ``L``: ``error``, ``truncate`` or ``drop``.
        train_on_padding: padding carries loss and is noised (QM9 in the paper); otherwise it
            is excluded and hidden by an attention mask.
        label: class labels for guidance. QM9: a property (``qed`` or ``ring_count``), class 1
            when above its dataset-wide 90th percentile; files: the record field holding an
            integer class. None = unconditional.
        num_classes: number of class labels (0 = unconditional).
        max_records: use at most this many records (quick runs).
        cache_dir: where tokenized data is cached (default ``~/.cache/proseco/data``).
        seed: seed of the train/validation split.
        chat_template: SFT: ``auto`` wraps each prompt in the tokenizer's chat template (one
            user turn plus the generation prompt) when it has one; ``none`` uses
            ``[BOS] prompt``.
        pad_with: SFT: ``pad`` or ``eos``: fill the positions after the response's EOS with EOS
            tokens, LLaDA's SFT convention (needs ``train_on_padding: true``: the EOS padding
            is noised and carries loss, so the model learns where an answer ends).
        mask_token: the tokenizer token to use as the mask, e.g. ``<|mdm_mask|>`` for LLaDA
            (default: the tokenizer's own mask token, else a new ``<|mask|>``).
        mix: SFT: more hub datasets of :data:`proseco.data.sft_sources.KNOWN_SFT_DATASETS`
            (``NAME`` or ``NAME:CONFIG``), read with their own fields and appended to the
            records of ``source`` (``max_records`` applies to each); needs internet.
    """

    kind: Literal["text", "sft", "qm9"] = "text"
    source: str | None = None
    validation_source: str | None = None
    validation_fraction: float = 0.05
    split: str = "train"
    hub_config: str | None = None
    text_field: str = "text"
    prompt_field: str = "prompt"
    response_field: str = "response"
    tokenizer: str = "char"
    max_length: int = 128
    layout: Literal["wrapped", "padded"] = "wrapped"
    overlong: Literal["error", "truncate", "drop"] = "error"
    train_on_padding: bool = False
    label: str | None = None
    num_classes: int = 0
    max_records: int | None = None
    cache_dir: str | None = None
    seed: int = 42
    chat_template: Literal["auto", "none"] = "auto"
    pad_with: Literal["pad", "eos"] = "pad"
    mask_token: str | None = None
    mix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _finite("data", self)
        _check_sft_options(self)
        _choice("data", "kind", self.kind, ("text", "sft", "qm9"))
        _choice("data", "layout", self.layout, ("wrapped", "padded"))
        _choice("data", "overlong", self.overlong, ("error", "truncate", "drop"))
        if self.max_length < 3:
            raise ConfigError(
                f"data.max_length must be >= 3 (BOS, a token, EOS), got {self.max_length}"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(
                f"data.validation_fraction must lie in [0, 1), got {self.validation_fraction}"
            )
        _positive("data", "num_classes", self.num_classes, allow_zero=True)
        _positive("data", "max_records", self.max_records)
        if self.kind != "qm9" and self.source is None:
            raise ConfigError(f"data.source is required for data.kind={self.kind!r}")
        if self.label is not None and self.num_classes < 2:
            raise ConfigError(
                f"data.label={self.label!r} needs data.num_classes >= 2, got {self.num_classes}"
            )


@dataclass(frozen=True)
class LossSection:
    """The loss: the training method, its :class:`proseco.LossConfig` options and how the
    trainer applies them.

    ``sc_weight: 0`` trains plain MDLM; ``objective: ar`` trains the autoregressive baseline;
    ``objective: udlm`` trains uniform-noise diffusion (UDLM); ``objective: prism`` fine-tunes a
    quality head (PRISM).

    The section *has* a :class:`~proseco.LossConfig` (:meth:`loss_config`), built and checked
    from the option fields below, which a recipe writes flat beside the trainer's fields
    (``loss: {sc_weight: 1.0, t_min: 0.1, objective: diffusion}``). The option fields mirror
    :class:`~proseco.LossConfig`'s, with its defaults; their meaning is documented there.

    Attributes:
        proposal, corrector_input, errors_upweighted, weighted, mdm_weight, sc_weight,
        start_step, t_min, antithetic, prism_fill: the :class:`~proseco.LossConfig` options.
        schedule: noise schedule name (``loglinear``, ``linear``, ``cosine``, ``polynomial``).
        two_backward: backpropagate the MDLM term before the corrector pass (same gradient,
            about half the peak activation memory and no slower; ``benchmarks/loss_step.py``).
            Default (``None``): on for the two-pass methods (``diffusion``, ``prism``); always
            off for the one-pass ones (``ar``, ``udlm``); ``false`` keeps both passes' graphs
            for one backward.
        cond_dropout: probability that an example's class label is replaced by the null label
            ``num_classes`` (classifier-free guidance); the same label is used in both passes.
        objective: the training method, a name of :data:`proseco.methods.METHODS`:
            ``diffusion`` (the MDLM / ProSeCo loss), ``ar``: a causal model (``causal=True``)
            with the next-token loss (:func:`proseco.losses.ar_loss`); the diffusion fields are
            then unused. ``udlm``: uniform-noise diffusion (Schiff et al.) with its
            continuous-time NELBO (:func:`proseco.losses.udlm_loss`); needs
            ``model.time_conditioning: true``; ``t_min``, ``antithetic`` and ``schedule``
            apply, the corrector fields do not. ``prism``: PRISM fine-tuning
            (:func:`proseco.losses.prism_loss`) of a model with a quality head (added, newly
            initialised, to a ``model.pretrained`` MDM that lacks one): the head's BCE on
            ``prism_fill`` positions filled with the model's own samples plus ``mdm_weight``
            times the MDLM term (PRISM: 0.5); the corrector fields are unused.
        prism_backbone: ``prism`` only: train the backbone too (the public code's
            ``tune_backbone``, default); ``false`` trains the quality head alone (the denoiser
            is left exactly as it was, and the MDLM term carries no gradient).
    """

    proposal: Literal["argmax", "sample"] = LossConfig.proposal
    corrector_input: Literal["masked_only", "all_positions"] = LossConfig.corrector_input
    errors_upweighted: bool = LossConfig.errors_upweighted
    weighted: bool = LossConfig.weighted
    mdm_weight: float = LossConfig.mdm_weight
    sc_weight: float = LossConfig.sc_weight
    start_step: int = LossConfig.start_step
    t_min: float = LossConfig.t_min
    antithetic: bool = LossConfig.antithetic
    prism_fill: int = LossConfig.prism_fill
    schedule: str = "loglinear"
    two_backward: bool | None = None
    cond_dropout: float = 0.0
    objective: str = "diffusion"
    prism_backbone: bool = True

    def __post_init__(self) -> None:
        _finite("loss", self)
        try:
            options = LossConfig(**{name: getattr(self, name) for name in LossConfig.field_names()})
        except ValueError as err:
            raise ConfigError(f"loss: {err}") from None
        object.__setattr__(self, "_options", options)
        _choice("loss", "schedule", self.schedule, ("loglinear", "linear", "cosine", "polynomial"))
        try:
            method = self.method()
        except ConfigError as err:
            raise ConfigError(f"loss.objective: {err}") from None
        # resolved here, also when an override changes a resolved config (ar, udlm: always off)
        object.__setattr__(self, "two_backward", method.two_backward(self.two_backward))
        if not 0.0 <= self.cond_dropout <= 1.0:
            raise ConfigError(f"loss.cond_dropout must lie in [0, 1], got {self.cond_dropout}")
        method.check_section(self)

    def method(self) -> TrainingMethod:
        """The training method ``objective`` names (:mod:`proseco.methods`)."""
        return get_method(self.objective)

    def loss_config(self) -> LossConfig:
        """The :class:`LossConfig` of this section."""
        return self._options


@dataclass(frozen=True)
class OptimSection:
    """AdamW and the learning-rate schedule (linear warm-up, then constant or cosine decay).

    Attributes:
        grad_clip: max gradient norm (0 disables clipping).
        min_lr: the learning rate a cosine schedule decays to.
    """

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        _finite("optim", self)
        _positive("optim", "lr", self.lr)
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must lie in [0, 1), got {list(self.betas)}")
        _choice("optim", "lr_schedule", self.lr_schedule, ("constant", "cosine"))
        for name in ("eps", "weight_decay", "warmup_steps", "min_lr", "grad_clip"):
            _positive("optim", name, getattr(self, name), allow_zero=True)
        if self.min_lr > self.lr:
            raise ConfigError(f"optim.min_lr {self.min_lr} exceeds optim.lr {self.lr}")


@dataclass(frozen=True)
class TrainSection:
    """The run: steps, batch sizes, precision, EMA, evaluation, checkpoints and logging.

    Attributes:
        global_batch_size: sequences per optimizer step over all processes; gradient
            accumulation makes up the difference with ``micro_batch_size x processes``.
        micro_batch_size: sequences per forward pass per process (default: the global batch
            divided by the number of processes).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (Accelerate autocast).
        ema_decay: EMA decay (0 disables EMA); warm-up ``min(decay, (1 + k) / (10 + k))``.
        eval_every, save_every: in optimizer steps; 0 = only at the end.
        eval_batches: validation micro-batches per evaluation (0 = the whole split).
        keep_checkpoints: how many step checkpoints to keep (the newest).
        tensorboard: also log to TensorBoard (needs ``tensorboard``).
        wandb_project: also log to this Weights & Biases project (needs ``wandb``).
        allow_inexact_resume: resume from a checkpoint whose random state cannot be restored
            (with a loud warning; the run is then no longer bitwise reproducible). By default
            such a resume stops with an error.
    """

    seed: int = 0
    max_steps: int = 1000
    global_batch_size: int = 64
    micro_batch_size: int | None = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    ema_decay: float = 0.9999
    eval_every: int = 0
    eval_batches: int = 8
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    progress_bar: bool = True
    tensorboard: bool = False
    wandb_project: str | None = None
    allow_inexact_resume: bool = False

    def __post_init__(self) -> None:
        _finite("train", self)
        _choice("train", "mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        for name in ("max_steps", "global_batch_size", "micro_batch_size", "log_every"):
            _positive("train", name, getattr(self, name))
        for name in ("eval_every", "eval_batches", "save_every", "keep_checkpoints"):
            _positive("train", name, getattr(self, name), allow_zero=True)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must lie in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run; the YAML recipe is this, serialised."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=lambda: DataSection(kind="qm9"))
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)


SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "loss": LossSection,
    "optim": OptimSection,
    "train": TrainSection,
}
