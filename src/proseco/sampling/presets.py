"""Decoding presets named after the paper's regimes: ``fast``, ``balanced``, ``max``.

Each preset is a plain :class:`~proseco.SamplingConfig`: LLaDA-style block semi-autoregressive
decoding (blocks of 32 tokens, greedy ``confidence`` unmasking = LLaDA ``low_confidence`` at
temperature 0) with ProSeCo corrector loops (argmax updates, early exit at a fixed point). Print it,
change it with :meth:`~proseco.SamplingConfig.replace`, save it beside a model with
:meth:`~proseco.SamplingConfig.save_pretrained`::

    from proseco.sampling.presets import preset
    config = preset("balanced")                      # for 256 generated tokens
    config = preset("fast", length=64, top_p=0.9)    # another length; any field overridden
    config.save_pretrained("runs/sft/final")

Choice of settings. The paper names the regimes (its LLaDA trade-off figure: *Fast* matches the
best baseline with fewer unmasking steps, *Balanced* is better for a modest increase in compute,
*Max* scales inference compute further) but gives no numbers for them, and the research code has
no presets. Its LLaDA evaluation swept, at 256 generated tokens in blocks of 32,
``steps`` in {32, 64, 128, 256} (8/4/2/1 tokens per step), corrector frequency ``omega`` in
{1, 2, 4, 8} and budget ``S`` in {1, ..., 32}; its ``generate()`` defaults are ``S=4``,
``omega=2``. The presets are points of that grid (NFE bounds for 256 tokens; early exit usually
spends fewer; the baseline, 1 token per step without corrector, costs 256):

=========  ===============  ===  =====  =========================================
preset     tokens per step   S   omega  model calls for 256 tokens (at most)
=========  ===============  ===  =====  =========================================
fast       4                 2   2      64 + 64 = 128     (>= 2x fewer than baseline)
balanced   2                 4   2      128 + 256 = 384   (reference S and omega)
max        1                 4   1      256 + 1024 = 1280
=========  ===============  ===  =====  =========================================

``steps`` depends on how many tokens are generated, so :func:`preset` takes ``length`` (default
256, LLaDA's ``gen_length``) and splits it into ``n = ceil(length / 32)`` blocks of
``ceil(length / n)`` tokens (the last block may be a little shorter), each decoded in
``ceil(block / tokens per step)`` steps: 32-token blocks whenever 32 divides ``length``, and
about ``length / tokens per step`` steps at any length (``fast`` at 37 tokens: blocks of 19 + 18,
10 steps). ``eos_id`` / ``stop_at_eos`` are left unset: they
belong to the tokenizer (``proseco sample`` and the lm-eval model fill in the tokenizer's EOS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proseco.errors import ConfigError
from proseco.registry import closest
from proseco.sampling.config import SamplingConfig
from proseco.sampling.correctors import Corrector
from proseco.sampling.unmasking import Confidence

__all__ = [
    "BLOCK_LENGTH",
    "DEFAULT_LENGTH",
    "PRESETS",
    "PRESET_FIELDS",
    "Regime",
    "apply_preset",
    "describe",
    "preset",
]

DEFAULT_LENGTH = 256
"""Generated tokens the presets are tuned for (LLaDA's ``gen_length`` in the paper's evaluation)."""

BLOCK_LENGTH = 32
"""Block length of the paper's LLaDA evaluation; the longest block a preset uses."""


@dataclass(frozen=True)
class Regime:
    """One preset's knobs.

    Attributes:
        tokens_per_step: tokens revealed per unmasking step (``steps = length / this``).
        corrector_steps: ``S``, the most corrector calls per loop.
        corrector_every: ``omega``, a loop every ``omega`` unmasking steps.
        summary: one line for help texts.
    """

    tokens_per_step: int
    corrector_steps: int
    corrector_every: int
    summary: str


_REGIMES: dict[str, Regime] = {
    "fast": Regime(4, 2, 2, "4 tokens/step, corrector S=2 every 2 steps: >=2x fewer NFEs"),
    "balanced": Regime(2, 4, 2, "2 tokens/step, corrector S=4 every 2 steps"),
    "max": Regime(1, 4, 1, "1 token/step, corrector S=4 every step: most compute"),
}

PRESETS: tuple[str, ...] = tuple(_REGIMES)
"""The preset names, fastest first."""

PRESET_FIELDS: tuple[str, ...] = ("steps", "unmasking", "corrector", "temperature", "block_length")
"""The :class:`~proseco.SamplingConfig` fields a preset sets (:func:`apply_preset` replaces these
and keeps every other field of the config it is applied to)."""


def _block_length(length: int) -> int:
    """The block length that splits ``length`` into the fewest blocks of at most
    :data:`BLOCK_LENGTH` tokens, as even as possible (the last one may be shorter)."""
    num_blocks = -(-length // BLOCK_LENGTH)  # ceil
    return -(-length // num_blocks)


def preset(name: str, *, length: int = DEFAULT_LENGTH, **overrides: Any) -> SamplingConfig:
    """The :class:`~proseco.SamplingConfig` of preset ``name`` for ``length`` generated tokens.

    Args:
        name: one of :data:`PRESETS` (``"fast"``, ``"balanced"``, ``"max"``).
        length: tokens to generate (sets ``steps`` and ``block_length``; default 256).
        **overrides: any :class:`~proseco.SamplingConfig` field, applied last (``top_p=0.9``,
            ``corrector=None``, ``eos_id=2, stop_at_eos=True`` ...).

    Raises:
        proseco.errors.ConfigError: an unknown name (the message suggests the closest), a bad
            ``length`` or an unknown field.
    """
    if name not in _REGIMES:
        raise ConfigError(
            f"unknown decoding preset {name!r}{closest(str(name), list(PRESETS))}; "
            f"choose one of {list(PRESETS)}"
        )
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"preset length must be an int >= 1 (tokens to generate), got {length!r}")
    regime = _REGIMES[name]
    block = _block_length(length)
    steps_per_block = max(1, -(-block // regime.tokens_per_step))  # ceil
    config = SamplingConfig(
        steps=-(-length // block) * steps_per_block,
        unmasking=Confidence(),
        corrector=Corrector(steps=regime.corrector_steps, every=regime.corrector_every),
        temperature=0.0,
        block_length=block,
    )
    return config.replace(**overrides) if overrides else config


def apply_preset(
    config: SamplingConfig, name: str, *, length: int = DEFAULT_LENGTH
) -> SamplingConfig:
    """``config`` with the :data:`PRESET_FIELDS` of preset ``name`` (for ``length`` tokens).

    The other fields (``eos_id``, ``stop_at_eos``, ``pad_id``, guidance, conditioning, schedule,
    top-p ...) belong to the model rather than to the regime and are kept. This is how
    ``proseco sample --preset`` combines a preset with a model's saved ``sampling_config.json``.
    """
    chosen = preset(name, length=length)
    return config.replace(**{field: getattr(chosen, field) for field in PRESET_FIELDS})


def describe() -> str:
    """One line per preset, ``name: summary``, for help texts."""
    return "; ".join(f"{name}: {regime.summary}" for name, regime in _REGIMES.items())
