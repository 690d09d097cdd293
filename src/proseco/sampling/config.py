"""Decoding settings as one object: :class:`SamplingConfig`.

Like transformers' ``GenerationConfig``: a frozen dataclass holding every setting of
:func:`proseco.sample` that is not about *which* sequences to fill (batch, length, prompt) or *how to
run* (generator, history, progress bar). It is validated on construction — each error names the
field and the fix — converts names to strategy objects through the registries
(``unmasking="confidence"``, ``corrector={"steps": 2, "update": "argmax"}``), round-trips through
JSON, and is saved beside a model as ``sampling_config.json`` so that a checkpoint carries the
settings it is meant to be sampled with::

    config = SamplingConfig(steps=32, corrector=Corrector(steps=2, every=1), top_p=0.9)
    config.save_pretrained("runs/q/final")
    SamplingConfig.from_pretrained("runs/q/final") == config        # True
    proseco.sample(model, config, steps=64)                         # overrides win
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from proseco.errors import ConfigError, ModelLoadError
from proseco.fileio import atomic_open
from proseco.registry import closest
from proseco.sampling.correctors import Corrector
from proseco.sampling.guidance import Guidance
from proseco.sampling.processors import LogitsProcessor
from proseco.sampling.unmasking import UNMASKING, Ancestral, UnmaskingStrategy, get_unmasking
from proseco.schedules import SCHEDULES, Schedule, get_schedule

__all__ = ["SamplingConfig", "SAMPLING_CONFIG_NAME", "CACHE_MODES"]

SAMPLING_CONFIG_NAME = "sampling_config.json"

CACHE_MODES = ("none", "prefix", "dual")
"""Values of :attr:`SamplingConfig.cache`."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingConfig:
    """Every decoding setting of :func:`proseco.sample`.

    Attributes:
        steps: unmasking steps ``T`` in total, split evenly across blocks (``None`` = one step per
            generated token).
        unmasking: which masks a step reveals: a strategy object or a registered name / spec
            string (``"ancestral"`` = MDLM, ``"confidence"`` = LLaDA, ``"threshold"`` =
            Fast-dLLM, ``"remdm"`` = ReMDM; ``"threshold:threshold=0.8"``).
        corrector: :class:`~proseco.Corrector` (ProSeCo loops), or ``None`` for none.
        guidance: :class:`~proseco.Guidance` (classifier-free guidance), or ``None``.
        temperature: softmax temperature, finite and ``>= 0`` (``0`` = greedy).
        top_p: nucleus mass in ``(0, 1]`` (``1`` = off).
        top_k: keep the ``top_k`` most likely tokens (``0`` = off).
        float64: float64 softmax and Gumbel noise (recommended for text metrics).
        block_length: semi-autoregressive blocks (LLaDA); when it does not divide the generated
            length the last block is shorter (``steps`` must split evenly across blocks).
        eos_id: end-of-sequence id (for ``stop_at_eos``; also the default ``pad_id``).
        stop_at_eos: whether a row stops at EOS. ``True``: in block mode, a row whose block
            ends with ``eos_id`` stops there (the masked sampler), a row stops at the first EOS
            it draws (the AR sampler); needs ``eos_id``. ``False``: every row generates every
            position. ``None`` (default): the sampler's natural default, :meth:`stops_at_eos`:
            the masked and UDLM samplers do not stop, the AR sampler stops at ``eos_id``, else
            the model config's EOS. The one place this setting lives: no sampler takes it as
            an argument of its own.
        pad_id: id used to left-pad list prompts (default ``eos_id``, else 0).
        schedule: noise schedule of the time grid: a registered name or a schedule object.
        eps: last time of the grid ``t_k = linspace(1, eps, steps_per_block + 1)``, in ``(0, 1)``.
        conditioning: extra keyword arguments for every model call (e.g.
            ``{"class_labels": 1}`` for a class-conditional model without guidance).
        cache: keys and values reused within a block (Fast-dLLM), for models with the window
            cache (the bundled DiT). ``"none"`` (default): every call runs the whole sequence.
            ``"prefix"``: at each block's first call the whole sequence runs once and the keys
            and values of the positions before the block (prompt, finished blocks) are kept;
            later calls of the block run the block and everything after it. ``"dual"``: those
            of the positions after the block are kept too, and later calls run the block only.
            An approximation (cached entries do not see the block's later changes); a corrector
            then revises the current block only, earlier blocks being committed. NFEs count the
            same (a call on a window is one evaluation).
    """

    steps: int | None = None
    unmasking: UnmaskingStrategy = field(default_factory=Ancestral)
    corrector: Corrector | None = None
    guidance: Guidance | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    float64: bool = False
    block_length: int | None = None
    eos_id: int | None = None
    stop_at_eos: bool | None = None
    pad_id: int | None = None
    schedule: str | Schedule = "loglinear"
    eps: float = 1e-5
    conditioning: dict[str, Any] | None = None
    cache: str = "none"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "unmasking", get_unmasking(self.unmasking))
        corrector = self.corrector
        if isinstance(corrector, dict):
            corrector = Corrector.from_dict(corrector)
        if corrector is not None and not isinstance(corrector, Corrector):
            raise ConfigError(
                f"corrector must be a proseco.Corrector or None, got {type(corrector).__name__}; "
                "e.g. corrector=proseco.Corrector(steps=2, every=1)"
            )
        set_(self, "corrector", corrector)
        guidance = self.guidance
        if isinstance(guidance, dict):
            guidance = Guidance(**guidance)
        if guidance is not None and not isinstance(guidance, Guidance):
            raise ConfigError(
                f"guidance must be a proseco.Guidance or None, got {type(guidance).__name__}; "
                "e.g. guidance=proseco.Guidance(gamma=2.0, condition=1)"
            )
        set_(self, "guidance", guidance)
        schedule = "loglinear" if self.schedule is None else self.schedule
        if isinstance(schedule, dict):
            schedule = get_schedule(
                schedule.get("name"), **{k: v for k, v in schedule.items() if k != "name"}
            )
        elif isinstance(schedule, str):
            get_schedule(schedule)  # validates the name
        elif not isinstance(schedule, Schedule):
            raise ConfigError(
                f"schedule must be one of {SCHEDULES.names()} or a proseco.Schedule, "
                f"got {schedule!r}"
            )
        set_(self, "schedule", schedule)
        self._check_numbers()
        if self.stop_at_eos and self.eos_id is None:
            raise ConfigError("stop_at_eos=True needs eos_id: pass eos_id=<the EOS token id>")
        if self.cache not in CACHE_MODES:
            raise ConfigError(
                f"cache must be one of {list(CACHE_MODES)}, got {self.cache!r}; e.g. "
                "cache='dual' (block decoding with keys and values of the context reused)"
            )
        if self.conditioning is not None and not isinstance(self.conditioning, dict):
            raise ConfigError(
                "conditioning must be a dict of extra model keyword arguments, "
                f"e.g. {{'class_labels': 1}}; got {type(self.conditioning).__name__}"
            )

    def _check_numbers(self) -> None:
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 1):
            raise ConfigError(
                f"steps must be an int >= 1 (or None = one per token), got {self.steps!r}"
            )
        t = self.temperature
        if not _is_number(t) or not math.isfinite(t) or t < 0:
            raise ConfigError(
                f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}; e.g. 1.0"
            )
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}; e.g. 0.9")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ConfigError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if self.block_length is not None and (
            not _is_int(self.block_length) or self.block_length < 1
        ):
            raise ConfigError(
                f"block_length must be an int >= 1 (or None = one block), got {self.block_length!r}"
            )
        for name in ("eos_id", "pad_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ConfigError(f"{name} must be a token id (an int >= 0) or None, got {value!r}")
        if not _is_number(self.eps) or not 0.0 < self.eps < 1.0:
            raise ConfigError(f"eps must be in (0, 1), got {self.eps!r}; e.g. 1e-5")
        if not isinstance(self.float64, bool):
            raise ConfigError(f"float64 must be True or False, got {self.float64!r}")
        if self.stop_at_eos is not None and not isinstance(self.stop_at_eos, bool):
            raise ConfigError(
                f"stop_at_eos must be True, False or None (the sampler's default), "
                f"got {self.stop_at_eos!r}"
            )
        if self.guidance is not None:
            gamma = self.guidance.gamma
            if not _is_number(gamma) or not math.isfinite(gamma):
                raise ConfigError(f"guidance gamma must be a finite number, got {gamma!r}")

    # -- derived objects ------------------------------------------------------------------------
    def stops_at_eos(self, natural: bool) -> bool:
        """:attr:`stop_at_eos` with ``None`` read as the sampler's ``natural`` default (the
        masked and UDLM samplers: ``False``; the AR sampler: ``True``)."""
        return natural if self.stop_at_eos is None else self.stop_at_eos

    def processor(self) -> LogitsProcessor:
        """The :class:`LogitsProcessor` of these settings (temperature, top-k, top-p, float64)."""
        return LogitsProcessor(self.temperature, self.top_k, self.top_p, self.float64)

    def schedule_object(self) -> Schedule:
        """The schedule as an object."""
        return get_schedule(self.schedule)

    def replace(self, **changes: Any) -> SamplingConfig:
        """A copy with ``changes`` applied (validated); unknown names are an error."""
        known = [f.name for f in dataclasses.fields(self)]
        for name in changes:
            if name not in known:
                hint = closest(name, known)
                if name == "remasking":
                    hint = " (ReMDM is an unmasking strategy now: unmasking=proseco.ReMDM(...))"
                raise ConfigError(
                    f"unknown sampling setting {name!r}{hint}; the settings are {known}"
                )
        return dataclasses.replace(self, **changes)

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings; strategy objects as ``{"name": ..., **fields}`` (``cache`` only
        when set, so that configs written before it existed read back the same)."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "cache" and value == "none":
                continue
            if f.name == "unmasking":
                value = UNMASKING.to_dict(value)
            elif f.name == "corrector" and value is not None:
                value = value.to_dict()
            elif f.name == "guidance" and value is not None:
                value = _guidance_dict(value)
            elif f.name == "schedule" and isinstance(value, Schedule):
                value = SCHEDULES.to_dict(value)
            elif f.name == "conditioning" and value is not None:
                value = _plain(value, "conditioning")
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the closest field."""
        if not isinstance(data, dict):
            raise ConfigError(f"a sampling config must be a JSON object, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k != "proseco_version"}
        return cls().replace(**data)

    def to_json(self) -> str:
        """The settings as an indented JSON string."""
        from proseco._version import __version__

        return json.dumps({**self.to_dict(), "proseco_version": __version__}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SamplingConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/sampling_config.json`` atomically; returns its path."""
        path = Path(directory) / SAMPLING_CONFIG_NAME
        with atomic_open(path) as f:
            f.write(self.to_json())
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SamplingConfig:
        """Read ``directory/sampling_config.json`` (or a path to the JSON file itself)."""
        path = Path(directory)
        if path.is_dir():
            path = path / SAMPLING_CONFIG_NAME
        if not path.is_file():
            raise ModelLoadError(
                f"{path} does not exist; save one with SamplingConfig.save_pretrained"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"cannot read sampling config {path}: {e}") from None
        except RecursionError:
            raise ModelLoadError(
                f"cannot read sampling config {path}: it is nested too deeply"
            ) from None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def exists(cls, directory: str | os.PathLike) -> bool:
        """Whether ``directory`` holds a ``sampling_config.json``."""
        return (Path(directory) / SAMPLING_CONFIG_NAME).is_file()


def _guidance_dict(guidance: Guidance) -> dict[str, Any]:
    data = {f.name: getattr(guidance, f.name) for f in dataclasses.fields(guidance)}
    data["condition"] = _plain(data["condition"], "guidance condition")
    return data


def _plain(value: Any, what: str) -> Any:
    """``value`` if it is JSON-ready (ints, floats, strings, lists, dicts), else a clear error."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return value.item()
        raise ConfigError(
            f"{what} holds a tensor of shape {tuple(value.shape)}, which cannot be saved as JSON; "
            "save an int label, or pass the tensor at sampling time instead"
        )
    if isinstance(value, dict):
        return {str(k): _plain(v, what) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"{what} holds a {type(value).__name__}, which cannot be saved as JSON")


def resolve_config(config: SamplingConfig | None, overrides: dict[str, Any]) -> SamplingConfig:
    """``config`` (default ``SamplingConfig()``) with keyword ``overrides`` applied; anything
    that is not a ``SamplingConfig`` is refused."""
    if config is None:
        config = SamplingConfig()
    elif not isinstance(config, SamplingConfig):
        raise ConfigError(
            f"config must be a proseco.SamplingConfig, got {type(config).__name__}; pass other "
            "settings as keywords, e.g. sample(model, steps=8)"
        )
    return config.replace(**overrides) if overrides else config
