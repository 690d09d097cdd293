"""Configuration of the native LLaDA model (:class:`LLaDAConfig`) and what it can load.

LLaDA's checkpoints (``GSAI-ML/LLaDA-8B-Base`` / ``-Instruct``, LLaDA 1.5) describe their network
with the keys of LLaDA's own ``ModelConfig`` (inherited from OLMo): ``d_model``, ``n_heads``,
``n_layers``, ``block_type``, ``rope``, ``layer_norm_type`` and so on. :class:`LLaDAConfig` reads
and writes exactly those keys, with LLaDA's own defaults for keys a ``config.json`` leaves out (so
a checkpoint means here what it means to LLaDA's code). Those defaults are GPT-2 shaped and not
LLaDA-8B's; :meth:`LLaDAConfig.from_preset` gives LLaDA-8B's layout (``"llada-8b"``) with any
sizes.

The native model implements LLaDA's ``llama`` block (separate ``q_proj`` / ``k_proj`` /
``v_proj``, a gated MLP ``ff_out(act(ff_proj(x)) * up_proj(x))``) with RoPE or learned positions,
LayerNorm or RMSNorm, optional biases, grouped-query attention and tied or untied output weights.
:func:`native_problems` names what a config asks for beyond that (ALiBi, QK-norm, block groups,
the fused ``sequential`` block ...); :func:`unknown_keys` names ``config.json`` keys that are
neither LLaDA's nor generic Hugging Face ones. Either makes the loader fall back to the
checkpoint's own modelling code (:mod:`proseco.models.llada_hub`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from transformers import PreTrainedConfig

__all__ = ["LLADA_PRESETS", "LLaDAConfig", "native_problems", "unknown_keys"]

# LLaDA-8B-Base / -Instruct (and LLaDA 1.5): the architecture keys of their config.json
# (``n_kv_heads`` 32 there, ``None`` = ``n_heads`` here, so that smaller ``n_heads`` work).
LLADA_PRESETS: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "llada-8b": MappingProxyType(
            {
                "d_model": 4096,
                "n_heads": 32,
                "n_kv_heads": None,
                "n_layers": 32,
                "mlp_ratio": 4,
                "mlp_hidden_size": 12288,
                "activation_type": "silu",
                "block_type": "llama",
                "rope": True,
                "rope_theta": 500000.0,
                "layer_norm_type": "rms",
                "rms_norm_eps": 1e-5,
                "include_bias": False,
                "include_qkv_bias": False,
                "weight_tying": False,
                "max_sequence_length": 4096,
                "vocab_size": 126464,
                "embedding_size": 126464,
                "mask_token_id": 126336,
                "eos_token_id": 126081,
                "pad_token_id": 126081,
                "attention_dropout": 0.0,
                "residual_dropout": 0.0,
                "embedding_dropout": 0.0,
                "init_fn": "mitchell",
            }  # fmt: skip
        ),
    }
)

NORM_TYPES = ("default", "low_precision", "rms", "gemma_rms")
ACTIVATIONS = ("silu", "gelu", "relu")


class LLaDAConfig(PreTrainedConfig):
    """LLaDA's model configuration (``model_type = "llada"``), key for key.

    Defaults are those of LLaDA's ``ModelConfig`` (what its code assumes for a missing key); use
    :meth:`from_preset` for LLaDA-8B's layout. The fields the native model reads:

    Args:
        d_model: hidden width ``D``; ``n_heads`` heads of ``D / n_heads`` (even, for RoPE).
        n_kv_heads: key/value heads (grouped-query attention); ``None`` = ``n_heads`` (or 1 with
            ``multi_query_attention``).
        n_layers: number of blocks.
        mlp_hidden_size: MLP width (``None``: ``mlp_ratio * d_model``).
        activation_type: the MLP gate's activation: ``silu`` (LLaDA), ``gelu`` or ``relu``.
        block_type: ``llama`` (LLaDA) is the one the native model implements.
        rope, rope_theta: rotary embeddings and their base; without RoPE (and ALiBi) a learned
            ``wpe`` table of ``max_sequence_length`` positions is added to the embeddings.
        layer_norm_type: ``default`` / ``low_precision`` (LayerNorm, eps 1e-5), ``rms`` /
            ``gemma_rms`` (RMSNorm with ``rms_norm_eps``; Gemma's scales by ``1 + weight``).
        layer_norm_with_affine: norms have a weight (and a bias, see ``bias_for_layer_norm``).
        include_bias, include_qkv_bias, bias_for_layer_norm: biases of the linear layers, of
            ``q/k/v_proj`` only, of the norms (``None``: as ``include_bias``).
        weight_tying: logits through the token embedding instead of ``transformer.ff_out``.
        scale_logits: multiply the logits by ``1 / sqrt(d_model)``.
        input_emb_norm: multiply the embeddings by ``sqrt(d_model)``.
        vocab_size, embedding_size: ids the tokenizer has, rows of the embedding and width of the
            logits (``None``: ``vocab_size``).
        attention_dropout, residual_dropout, embedding_dropout: dropout rates (training only).
        max_sequence_length: the longest input.
        mask_token_id, eos_token_id, pad_token_id: special ids (LLaDA-8B: 126336, 126081).
        init_std: std of the normal init of a model built from scratch.

    Other LLaDA keys (``init_fn``, ``precision``, ``flash_attention`` ...) are kept and saved.
    """

    model_type = "llada"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "max_sequence_length",
    }

    d_model: int = 768
    n_heads: int = 12
    n_kv_heads: int | None = None
    n_layers: int = 12
    mlp_ratio: int = 4
    mlp_hidden_size: int | None = None
    activation_type: str = "swiglu"
    block_type: str = "sequential"
    block_group_size: int = 1
    alibi: bool = False
    alibi_bias_max: float = 8.0
    rope: bool = False
    rope_full_precision: bool = True
    flash_attention: bool = False
    attention_dropout: float = 0.1
    multi_query_attention: bool | None = None
    attention_layer_norm: bool = False
    residual_dropout: float = 0.1
    embedding_dropout: float = 0.1
    input_emb_norm: bool = False
    layer_norm_type: str = "default"
    layer_norm_with_affine: bool = True
    rms_norm_eps: float = 1e-05
    attention_layer_norm_with_affine: bool = True
    max_sequence_length: int = 1024
    rope_theta: float = 10000.0
    include_qkv_bias: bool | None = False
    include_bias: bool = False
    bias_for_layer_norm: bool | None = None
    scale_logits: bool = False
    vocab_size: int = 50257
    embedding_size: int | None = 50304
    weight_tying: bool = True
    eos_token_id: int | None = 50256
    pad_token_id: int | None = 50256
    mask_token_id: int | None = 50256
    init_device: str | None = None
    init_fn: str = "normal"
    init_std: float = 0.02
    init_cutoff_factor: float | None = None
    precision: str | None = None
    use_cache: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        for name in ("d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str = "llada-8b", **overrides: Any) -> LLaDAConfig:
        """LLaDA-8B's layout (RoPE base 500000, RMSNorm, no biases, SiLU-gated MLP, untied
        output, mask id 126336), with ``overrides``: for a small model give ``d_model``,
        ``n_heads``, ``n_layers``, ``mlp_hidden_size``, ``vocab_size``, ``embedding_size`` and
        ``mask_token_id``."""
        if name not in LLADA_PRESETS:
            raise ValueError(f"unknown LLaDA preset {name!r}; valid presets: {list(LLADA_PRESETS)}")
        return cls(**{**LLADA_PRESETS[name], **overrides})

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    @property
    def effective_n_kv_heads(self) -> int:
        """Key/value heads: ``n_kv_heads``, else 1 with ``multi_query_attention``, else
        ``n_heads``."""
        if self.n_kv_heads is not None:
            return int(self.n_kv_heads)
        return 1 if self.multi_query_attention else self.n_heads

    @property
    def mlp_width(self) -> int:
        """Hidden width of the MLP: ``mlp_hidden_size`` or ``mlp_ratio * d_model``."""
        if self.mlp_hidden_size is not None:
            return int(self.mlp_hidden_size)
        return int(self.mlp_ratio * self.d_model)

    @property
    def num_embeddings(self) -> int:
        """Rows of the token embedding = width of the logits: ``embedding_size or vocab_size``."""
        return int(self.embedding_size or self.vocab_size)

    @property
    def norm_bias(self) -> bool:
        """Whether the norms have a bias (``bias_for_layer_norm``, else ``include_bias``)."""
        if not self.layer_norm_with_affine:
            return False
        return bool(
            self.include_bias if self.bias_for_layer_norm is None else self.bias_for_layer_norm
        )


def native_problems(config: LLaDAConfig) -> list[str]:
    """What ``config`` asks for that the native model does not implement (empty: nothing)."""
    problems = []
    if config.block_type != "llama":
        problems.append(f"block_type {config.block_type!r} (only 'llama' is native)")
    if config.activation_type not in ACTIVATIONS:
        problems.append(f"activation_type {config.activation_type!r} (native: {list(ACTIVATIONS)})")
    if config.layer_norm_type not in NORM_TYPES:
        problems.append(f"layer_norm_type {config.layer_norm_type!r} (native: {list(NORM_TYPES)})")
    if config.alibi:
        problems.append("alibi")
    if config.attention_layer_norm:
        problems.append("attention_layer_norm (QK-norm)")
    if config.block_group_size != 1:
        problems.append(f"block_group_size {config.block_group_size}")
    if config.d_model % config.n_heads or (config.rope and config.head_dim % 2):
        problems.append(f"d_model {config.d_model} with n_heads {config.n_heads}")
    elif config.n_heads % config.effective_n_kv_heads:
        problems.append(f"n_heads {config.n_heads} with {config.effective_n_kv_heads} kv heads")
    if config.num_embeddings < config.vocab_size:
        problems.append(f"embedding_size {config.embedding_size} < vocab_size {config.vocab_size}")
    return problems


def _generic_keys() -> frozenset[str]:
    """Keys any Hugging Face ``config.json`` may carry (this and older transformers versions)."""
    legacy = {
        "torch_dtype", "use_cache", "auto_map", "bos_token_id", "eos_token_id", "pad_token_id",
        "sep_token_id", "decoder_start_token_id", "tie_word_embeddings", "output_attentions",
        "tokenizer_class", "task_specific_params", "finetuning_task", "pruned_heads",
        "torchscript", "add_cross_attention", "tie_encoder_decoder", "is_decoder",
        "cross_attention_hidden_size", "prefix", "custom_pipelines",
    }  # fmt: skip
    return frozenset(PreTrainedConfig().to_dict()) | legacy


def unknown_keys(data: dict[str, Any]) -> list[str]:
    """Keys of a ``config.json`` dict that neither LLaDA's config nor Hugging Face's define and
    whose value is set (not ``None`` / ``False``): settings the native model cannot honour."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(LLaDAConfig)} | _generic_keys()
    known |= set(LLaDAConfig.attribute_map)
    return sorted(k for k, v in data.items() if k not in known and v is not None and v is not False)
