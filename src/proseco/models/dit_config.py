"""Configuration of the bundled DiT backbone (:class:`ProsecoDiTConfig`) and its size presets.

The config is a Hugging Face ``PreTrainedConfig`` (``model_type = "proseco-dit"``), so a model saved
with ``save_pretrained`` reloads through ``AutoConfig`` / ``AutoModelForMaskedLM`` once
``proseco.models.dit`` has been imported. Written against the dataclass-style configs of
transformers 5: fields are declared below and checked in ``__post_init__``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from transformers import PreTrainedConfig

__all__ = ["ProsecoDiTConfig", "DIT_PRESETS"]

# Architecture presets. Parameter counts measured with ``sum(p.numel() for p in model.parameters())``
# (untied embeddings, unconditional, no time conditioning) — see ``ProsecoDiTConfig.from_preset``.
DIT_PRESETS: MappingProxyType[str, MappingProxyType[str, int]] = MappingProxyType(
    {
        "cpu-tiny": MappingProxyType(
            {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "cond_dim": 64}
        ),
        "cpu-small": MappingProxyType(
            {"hidden_size": 256, "num_layers": 5, "num_heads": 8, "cond_dim": 128}
        ),
        "tiny": MappingProxyType(
            {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "cond_dim": 128}
        ),
        "small": MappingProxyType(
            {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "cond_dim": 128}
        ),
        "medium": MappingProxyType(
            {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "cond_dim": 128}
        ),
    }
)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_token_id(name: str, value: Any, vocab_size: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int or None, got {value!r}")
    if not 0 <= value < vocab_size:
        raise ValueError(
            f"{name} {value} is outside the vocabulary of {vocab_size} (valid ids 0..{vocab_size - 1}); "
            f"pass a smaller id or increase vocab_size"
        )


class ProsecoDiTConfig(PreTrainedConfig):
    """Configuration of :class:`~proseco.models.dit.ProsecoDiT`, the DiT of MDLM / ProSeCo.

    Defaults are the paper's "small" model on the GPT-2 vocabulary plus one mask token.

    Args:
        vocab_size: rows of the token embedding and width of the logits ``V`` (mask token included).
        hidden_size: model width ``H``.
        num_layers: number of DiT blocks.
        num_heads: attention heads; ``hidden_size / num_heads`` must be even (rotary embeddings).
        cond_dim: width of the adaLN conditioning vector ``c``.
        max_length: the longest sequence the model accepts.
        dropout: dropout after attention and MLP in every block (active in ``train()`` only).
        time_conditioning: if True, ``forward`` needs ``timesteps`` ``[B]``; if False (the paper)
            the time embedding is replaced by a learned constant.
        num_classes: number of class labels for conditional models; 0 = unconditional. When > 0 a
            label embedding with ``num_classes + 1`` rows is built; row ``num_classes`` is the null
            label used for classifier-free guidance (``config.null_label``).
        tie_word_embeddings: share the output projection's weight with the token embedding.
        causal: causal attention (position ``i`` sees positions ``<= i``), for an AR baseline.
        diffusion: the noise process the model was trained for: ``"masked"`` (MDLM / ProSeCo,
            the default, also for configs saved before this field) or ``"uniform"`` (UDLM: tokens
            are replaced by uniform draws, never masked; sample with
            :func:`proseco.sampling.uniform.sample_uniform`).
        mask_token_id: id of the mask token, if the vocabulary has one.
        initializer_range: std of the normal init of embeddings and linear layers.
        pad_token_id, bos_token_id, eos_token_id: standard special-token ids (or None).
        quality_head: add PRISM's per-token quality head (one adaLN DiT block on the final
            hidden states, then a linear map to one logit per position); ``forward`` then also
            returns ``quality_logits`` ``[B, L]`` from the same call. Configs saved before this
            field existed load with ``False``.
    """

    model_type = "proseco-dit"
    attribute_map = {
        "num_hidden_layers": "num_layers",
        "num_attention_heads": "num_heads",
        "max_position_embeddings": "max_length",
    }

    vocab_size: int = 50258
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    cond_dim: int = 128
    max_length: int = 1024
    dropout: float = 0.1
    time_conditioning: bool = False
    num_classes: int = 0
    tie_word_embeddings: bool = False
    causal: bool = False
    diffusion: str = "masked"
    mask_token_id: int | None = None
    initializer_range: float = 0.02
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    quality_head: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        self._validate()
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        for name, minimum in (
            ("vocab_size", 1),
            ("hidden_size", 1),
            ("num_layers", 1),
            ("num_heads", 1),
            ("cond_dim", 1),
            ("max_length", 1),
            ("num_classes", 0),
        ):
            _check_int(name, getattr(self, name), minimum)
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "choose num_heads that divides hidden_size"
            )
        head_dim = self.hidden_size // self.num_heads
        if head_dim % 2 != 0:
            raise ValueError(
                f"head dimension hidden_size / num_heads = {head_dim} is odd; rotary embeddings "
                "need an even head dimension"
            )
        for name in ("time_conditioning", "tie_word_embeddings", "causal", "quality_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.diffusion not in ("masked", "uniform"):
            raise ValueError(f"diffusion must be 'masked' or 'uniform', got {self.diffusion!r}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range!r}")
        for name in ("mask_token_id", "pad_token_id", "bos_token_id", "eos_token_id"):
            _check_token_id(name, getattr(self, name), self.vocab_size)

    @property
    def null_label(self) -> int | None:
        """Index of the null (unconditional) label, ``num_classes``; None for unconditional models."""
        return self.num_classes if self.num_classes > 0 else None

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``hidden_size // num_heads``."""
        return self.hidden_size // self.num_heads

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ProsecoDiTConfig:
        """Build a config from a named size preset, then apply ``overrides``.

        Presets set ``hidden_size / num_layers / num_heads / cond_dim``; everything else keeps the
        defaults (``vocab_size`` is usually overridden). Measured parameter counts (untied,
        unconditional, ``time_conditioning=False``; non-embedding = all but the token embedding
        and output projection):

        =========== ====== ====== ===== ==== ============= ===========================
        preset      hidden layers heads cond non-embedding total
        =========== ====== ====== ===== ==== ============= ===========================
        cpu-tiny    128    4      4     64   1,006,528     1,016,808 (vocab 40)
        cpu-small   256    5      8     128  4,998,272     5,018,792 (vocab 40)
        tiny        512    8      8     128  28,497,536    80,011,986 (vocab 50,258)
        small       768    12     12    128  92,331,392    169,577,938 (vocab 50,258)
        medium      1024   24     16    128  321,449,088   424,427,730 (vocab 50,258)
        =========== ====== ====== ===== ==== ============= ===========================

        The research code's "small" is ~169.6 M: the same plus its time MLP (49,408 parameters,
        built even when time conditioning is off) instead of our 128-wide learned constant.
        ``time_conditioning=True`` swaps the constant (``cond_dim``) for the time MLP
        (``258 * cond_dim + cond_dim**2``); ``num_classes=k`` adds ``(k + 1) * cond_dim``;
        ``tie_word_embeddings`` removes ``vocab_size * hidden_size``.

        Args:
            name: one of ``cpu-tiny``, ``cpu-small``, ``tiny``, ``small``, ``medium``.
            **overrides: any config field, e.g. ``vocab_size=40, mask_token_id=39``.

        Raises:
            ValueError: if ``name`` is not a preset (the message lists the valid names).
        """
        if name not in DIT_PRESETS:
            raise ValueError(
                f"unknown DiT preset {name!r}; valid presets: {', '.join(sorted(DIT_PRESETS))}"
            )
        return cls(**{**DIT_PRESETS[name], **overrides})
