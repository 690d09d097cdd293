"""The bundled backbone: a diffusion transformer (DiT) as a Hugging Face masked LM.

Architecture (as in MDLM / ProSeCo): token embedding; ``num_layers`` pre-norm blocks whose
LayerNorms are modulated (adaLN-Zero) by a conditioning vector ``c``; rotary position embeddings on
``q, k``; bidirectional (or causal) ``scaled_dot_product_attention`` with an optional key padding
mask; a 4x tanh-GELU MLP; a final adaLN-modulated LayerNorm and a linear map to the vocabulary.

``c = SiLU(time_embedding(t)) + SiLU(label_embedding(y))``; without time conditioning (the paper)
the time term is a learned constant vector, and without classes the label term is absent.

With ``config.quality_head`` (PRISM) a small head -- one more adaLN DiT block on the final hidden
states, a LayerNorm and a linear map to one logit -- scores every position in the same call, and
``forward`` returns :class:`ProsecoDiTOutput` (``logits`` first, then ``quality_logits``).

Importing this module registers the model with ``AutoConfig`` and ``AutoModelForMaskedLM``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput
from transformers.utils import ModelOutput

from proseco.models.dit_config import DIT_PRESETS, ProsecoDiTConfig
from proseco.models.kv_cache import KVCache

__all__ = [
    "ProsecoDiT",
    "ProsecoDiTConfig",
    "ProsecoDiTOutput",
    "QualityHead",
    "DIT_PRESETS",
    "rotary_tables",
    "apply_rotary",
]

ROPE_BASE = 10_000.0
TIME_FREQ_DIM = 256  # width of the sinusoidal time features fed to the time MLP
TIME_MAX_PERIOD = 10_000.0
# Diffusion time t lives in [0, 1]; the sinusoid sees 1000 * t so that its frequencies (periods
# 2*pi .. 2*pi*10^4) resolve the unit interval, as DDPM-style models do with integer steps.
TIME_SCALE = 1000.0


def rotary_tables(
    length: int,
    head_dim: int,
    device: torch.device | None = None,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotary embedding, base 10000.

    ``positions`` ``[length]`` (default ``0 .. length - 1``): the absolute positions of the rows,
    for a call on a window of the sequence (the KV cache).

    Returns:
        ``(cos, sin)``, each ``[length, head_dim // 2]`` float32: ``angle[p, i] = p * 10000^(-2i/d)``.
    """
    inv_freq = ROPE_BASE ** (
        -torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    )
    if positions is None:
        positions = torch.arange(length, dtype=torch.float32, device=device)
    angles = torch.outer(positions.to(device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs ``(x[..., i], x[..., i + d/2])`` by their position's angles.

    Args:
        x: ``[B, L, heads, d]`` queries or keys.
        cos, sin: ``[L, d/2]`` from :func:`rotary_tables`.

    Returns:
        ``[B, L, heads, d]`` in ``x``'s dtype (computed in float32).
    """
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiTLayerNorm(nn.Module):
    """LayerNorm without bias, computed in float32 and returned in the input's dtype."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), (self.dim,), self.weight.float()).to(x.dtype)


class AdaLNModulation(nn.Linear):
    """``Linear(cond_dim -> k * hidden)`` producing shift/scale/gate; zero-initialised (adaLN-Zero)."""


class DiTAttention(nn.Module):
    """Multi-head self-attention with rotary ``q, k`` and no biases.

    ``past``: ``(keys, values)`` ``[B, heads, Lc, d]`` of cached positions, attended to besides
    the input's own; ``store``: a list that receives this call's ``(keys, values)``.
    """

    def __init__(self, config: ProsecoDiTConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, attn_mask, is_causal: bool, past=None, store=None):
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).unbind(2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if store is not None:
            store.append((k, v))
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k, v, attn_mask=attn_mask, is_causal=is_causal
        )
        return self.out(y.transpose(1, 2).reshape(batch, length, hidden))


class DiTMLP(nn.Module):
    """``Linear(H -> 4H) -> GELU(tanh) -> Linear(4H -> H)``."""

    def __init__(self, config: ProsecoDiTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.fc2 = nn.Linear(4 * config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block with adaLN-Zero: ``x + gate * dropout(f(modulate(norm(x))))``."""

    def __init__(self, config: ProsecoDiTConfig) -> None:
        super().__init__()
        self.norm1 = DiTLayerNorm(config.hidden_size)
        self.attn = DiTAttention(config)
        self.norm2 = DiTLayerNorm(config.hidden_size)
        self.mlp = DiTMLP(config)
        self.dropout = nn.Dropout(config.dropout)
        self.modulation = AdaLNModulation(config.cond_dim, 6 * config.hidden_size)

    def forward(self, x, c, cos, sin, attn_mask, is_causal: bool, past=None, store=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, dim=-1)
        h = self.attn(
            _modulate(self.norm1(x), shift1, scale1), cos, sin, attn_mask, is_causal, past, store
        )
        x = x + gate1 * self.dropout(h)
        h = self.mlp(_modulate(self.norm2(x), shift2, scale2))
        return x + gate2 * self.dropout(h)


class DiTConditioning(nn.Module):
    """Builds the adaLN conditioning vector ``c`` ``[B, cond_dim]`` from time and class label."""

    def __init__(self, config: ProsecoDiTConfig) -> None:
        super().__init__()
        cond = config.cond_dim
        if config.time_conditioning:
            self.time_mlp = nn.Sequential(
                nn.Linear(TIME_FREQ_DIM, cond), nn.SiLU(), nn.Linear(cond, cond)
            )
        else:
            # Plays the role of MDLM's time MLP evaluated at the constant time 0.
            self.constant = nn.Parameter(torch.zeros(cond))
        if config.num_classes > 0:
            self.label_embed = nn.Embedding(config.num_classes + 1, cond)

    def forward(
        self, batch_size: int, timesteps: torch.Tensor | None, class_labels: torch.Tensor | None
    ) -> torch.Tensor:
        if timesteps is not None:
            half = TIME_FREQ_DIM // 2
            freqs = torch.exp(
                -math.log(TIME_MAX_PERIOD)
                * torch.arange(half, dtype=torch.float32, device=timesteps.device)
                / half
            )
            args = TIME_SCALE * timesteps.float()[:, None] * freqs[None]
            c = F.silu(self.time_mlp(torch.cat((args.cos(), args.sin()), dim=-1)))
        else:
            c = F.silu(self.constant)[None].expand(batch_size, -1)
        if class_labels is not None:
            c = c + F.silu(self.label_embed(class_labels))
        return c


@dataclass
class ProsecoDiTOutput(ModelOutput):
    """Output of a DiT with a quality head: ``logits`` ``[B, L, V]`` (first, so every caller that
    reads ``.logits`` or ``[0]`` is unchanged) and ``quality_logits`` ``[B, L]`` float32:
    ``sigmoid(quality_logits[b, i])`` estimates the probability that token ``input_ids[b, i]`` is
    right given the rest of the sequence (PRISM). With ``use_cache=True`` (any DiT) it also
    carries ``past_key_values``, the :class:`~proseco.models.kv_cache.KVCache` of the call."""

    logits: torch.FloatTensor | None = None
    quality_logits: torch.FloatTensor | None = None
    past_key_values: KVCache | None = None


class QualityHead(nn.Module):
    """PRISM's per-token quality head: ``Linear(modulate(norm(block(h, c))))`` -> ``[B, L]``.

    One adaLN DiT block (zero-initialised modulation, so it starts as the identity) over the
    backbone's final hidden states ``h`` ``[B, L, H]`` and conditioning ``c`` ``[B, cond_dim]``.
    The output bias starts at 0 and the weights at ``N(0, initializer_range)``: initial scores are
    near 0 logits (probability ~0.5).
    """

    def __init__(self, config: ProsecoDiTConfig) -> None:
        super().__init__()
        self.block = DiTBlock(config)
        self.norm = DiTLayerNorm(config.hidden_size)
        self.modulation = AdaLNModulation(config.cond_dim, 2 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, 1)

    def forward(self, h, c, cos, sin, attn_mask, is_causal: bool, past=None, store=None):
        h = self.block(h, c, cos, sin, attn_mask, is_causal, past, store)
        shift, scale = self.modulation(c)[:, None].chunk(2, dim=-1)
        return self.out(_modulate(self.norm(h), shift, scale)).squeeze(-1).float()


class ProsecoDiT(PreTrainedModel):
    """The DiT backbone of MDLM / ProSeCo as a Hugging Face masked LM.

    Call it as ``model(input_ids, attention_mask=None, class_labels=None, timesteps=None)``; it
    returns a ``MaskedLMOutput`` whose ``logits`` are float32 ``[B, L, V]``.

    Initialisation: the adaLN modulation linears (in every block and in the final layer) are
    zero-initialised as in DiT, so at init every block is the identity and the final layer is a
    plain LayerNorm. Unlike MDLM we do NOT zero the output projection: MDLM's zero head makes the
    initial logits exactly 0 everywhere (uniform predictions, no signal for tests or for gradients
    into the embedding at step 1). Here it is N(0, initializer_range) (or the tied embedding), so
    initial logits depend on the input token; they start to depend on context (other positions,
    labels, time) once the adaLN weights move away from zero during training. The learned constant
    that replaces the time embedding is N(0, 1) so that ``c != 0`` and the adaLN weights receive
    gradients from the first step.
    """

    config_class = ProsecoDiTConfig
    config: ProsecoDiTConfig
    base_model_prefix = "dit"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DiTBlock"]
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
    # An MDM checkpoint loaded with ``quality_head=True`` has no head weights: they are new by
    # design (PRISM fine-tuning), so transformers should not warn about them.
    _keys_to_ignore_on_load_missing = [r"^quality_head\."]
    # The sampler's window cache (proseco.models.kv_cache): use_cache / past_key_values.
    supports_window_cache = True

    def __init__(self, config: ProsecoDiTConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.conditioning = DiTConditioning(config)
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_layers))
        self.norm_final = DiTLayerNorm(config.hidden_size)
        self.final_modulation = AdaLNModulation(config.cond_dim, 2 * config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.quality_head = QualityHead(config) if config.quality_head else None
        self.post_init()

    def add_quality_head(self) -> ProsecoDiT:
        """Give this model a freshly initialised PRISM quality head (a no-op if it has one).

        Sets ``config.quality_head = True`` so that ``save_pretrained`` records it; the head is
        created on the model's device and dtype. Returns ``self``.
        """
        if self.quality_head is None:
            ref = self.lm_head.weight
            head = QualityHead(self.config)
            head.apply(self._init_weights)
            self.quality_head = head.to(device=ref.device, dtype=ref.dtype)
            self.config.quality_head = True
        return self

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, AdaLNModulation):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, DiTLayerNorm):
            init.ones_(module.weight)
        elif isinstance(module, DiTConditioning) and hasattr(module, "constant"):
            init.normal_(module.constant, mean=0.0, std=1.0)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        class_labels: torch.LongTensor | int | None = None,
        timesteps: torch.Tensor | float | None = None,
        return_dict: bool | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
    ) -> MaskedLMOutput | ProsecoDiTOutput | tuple[torch.Tensor, ...]:
        """Logits of the clean tokens at every position (and quality logits with a head).

        Args:
            input_ids: token ids ``[B, L]`` in ``[0, vocab_size)``, ``L <= max_length``.
            attention_mask: ``[B, L]``, 1 = real token, 0 = padding (bool or 0/1 ints); padded
                positions are masked out as attention keys. None = no padding.
            class_labels: ``[B]`` labels in ``[0, num_classes]`` (``num_classes`` = null label) or
                one int for the whole batch; None = null label. Only for ``num_classes > 0``.
            timesteps: diffusion times ``[B]`` (or one float); required when
                ``config.time_conditioning``, ignored otherwise.
            return_dict: return a ``MaskedLMOutput`` (default ``config.return_dict``) or ``(logits,)``.
            position_ids: ``[L]`` absolute positions of the input's tokens (default ``0 .. L-1``);
                required with ``past_key_values`` (a window of a longer sequence).
            past_key_values: a :class:`~proseco.models.kv_cache.KVCache` of other positions of
                the same sequences (one entry per block, plus one for a quality head): the
                input's queries attend to them as well as to the input itself (bidirectional
                models only). Its ``key_mask`` says which cached keys are padding;
                ``attention_mask`` covers the input's own keys.
            use_cache: also return the keys and values of this call (``past_key_values`` of the
                output; with ``past_key_values`` given, the cached entries come first).

        Returns:
            ``MaskedLMOutput`` with float32 ``logits`` ``[B, L, V]`` (or the tuple ``(logits,)``).
            With ``config.quality_head``: :class:`ProsecoDiTOutput` with ``logits`` and float32
            ``quality_logits`` ``[B, L]`` (or ``(logits, quality_logits)``), one forward pass.
            With ``use_cache``: :class:`ProsecoDiTOutput` with ``past_key_values`` (last in the
            tuple).

        Raises:
            ValueError: on ids outside the vocabulary, sequences longer than ``max_length``,
                malformed masks, labels or timesteps.
        """
        config = self.config
        _check_input_ids(input_ids, config)
        batch, length = input_ids.shape
        device = input_ids.device
        keep = _key_padding_mask(attention_mask, input_ids)
        labels = _check_class_labels(class_labels, batch, config, device)
        times = _check_timesteps(timesteps, batch, config, device)

        past = past_key_values
        positions = None
        if past is not None or use_cache or position_ids is not None:
            positions = self._check_cache_args(position_ids, past, use_cache, batch, length)

        c = self.conditioning(batch, times, labels)
        x = self.embed_tokens(input_ids)
        if positions is None:
            cos, sin = rotary_tables(length, config.head_dim, device)
        else:
            cos, sin = rotary_tables(length, config.head_dim, device, positions=positions)
        if past is None:
            attn_mask, is_causal = _attention_mask(keep, length, config.causal, device)
        else:
            attn_mask, is_causal = _window_attention_mask(past.key_mask, keep, batch, length), False
        store: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if use_cache else None
        for i, block in enumerate(self.blocks):
            layer = None if past is None else (past.keys[i], past.values[i])
            x = block(x, c, cos, sin, attn_mask, is_causal, layer, store)
        shift, scale = self.final_modulation(c)[:, None].chunk(2, dim=-1)
        logits = self.lm_head(_modulate(self.norm_final(x), shift, scale)).float()
        quality = None
        if self.quality_head is not None:
            layer = None if past is None else (past.keys[-1], past.values[-1])
            quality = self.quality_head(x, c, cos, sin, attn_mask, is_causal, layer, store)
        cache = None
        if use_cache:
            cache = _new_cache(store, past, positions, keep)

        return_dict = return_dict if return_dict is not None else config.return_dict
        if not return_dict:
            out = (logits,) if quality is None else (logits, quality)
            return out if cache is None else (*out, cache)
        if cache is not None:
            return ProsecoDiTOutput(logits=logits, quality_logits=quality, past_key_values=cache)
        if quality is None:
            return MaskedLMOutput(logits=logits)
        return ProsecoDiTOutput(logits=logits, quality_logits=quality)

    def _check_cache_args(
        self,
        position_ids: torch.Tensor | None,
        past: KVCache | None,
        use_cache: bool,
        batch: int,
        length: int,
    ) -> torch.Tensor:
        """``[L]`` long positions of the input, after checking the cache arguments."""
        config = self.config
        device = self.embed_tokens.weight.device
        if (past is not None or use_cache) and config.causal:
            raise ValueError(
                "the window KV cache (past_key_values / use_cache) is for bidirectional models; "
                "this DiT is causal (config.causal=True)"
            )
        if past is not None:
            if not isinstance(past, KVCache):
                raise ValueError(
                    f"past_key_values must be a proseco.models.kv_cache.KVCache, got "
                    f"{type(past).__name__}"
                )
            layers = config.num_layers + (self.quality_head is not None)
            if len(past.keys) != layers or len(past.values) != layers:
                raise ValueError(
                    f"past_key_values has {len(past.keys)} layers but this model needs {layers}"
                )
            if past.batch_size != batch:
                raise ValueError(
                    f"past_key_values holds {past.batch_size} rows but input_ids has {batch}"
                )
            if position_ids is None:
                raise ValueError(
                    "pass position_ids [L] (the input's absolute positions) with past_key_values"
                )
        if position_ids is None:
            return torch.arange(length, device=device)
        positions = torch.as_tensor(position_ids, device=device)
        if positions.dim() == 2 and positions.shape[0] == 1:
            positions = positions[0]
        if positions.shape != (length,) or not _is_integer(positions.dtype):
            raise ValueError(
                f"position_ids must be [L] = [{length}] integer positions, got "
                f"{tuple(positions.shape)} {positions.dtype}"
            )
        if bool(((positions < 0) | (positions >= config.max_length)).any()):
            raise ValueError(
                f"position_ids must lie in [0, {config.max_length}) (the model's max_length)"
            )
        return positions.long()


def _check_input_ids(input_ids: torch.Tensor, config: ProsecoDiTConfig) -> None:
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids must be a LongTensor [B, L], got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape [B, L], got shape {tuple(input_ids.shape)}")
    if not _is_integer(input_ids.dtype):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    batch, length = input_ids.shape
    if batch == 0 or length == 0:
        raise ValueError(f"input_ids must be non-empty, got shape {tuple(input_ids.shape)}")
    if length > config.max_length:
        raise ValueError(
            f"input length {length} exceeds the model's max_length {config.max_length}; "
            "shorten the input or build the model with a larger max_length"
        )
    bad = (input_ids < 0) | (input_ids >= config.vocab_size)
    if bool(bad.any()):
        value = int(input_ids[bad][0])
        raise ValueError(
            f"token id {value} is outside the model's vocabulary of {config.vocab_size} "
            f"(valid ids 0..{config.vocab_size - 1})"
        )


def _key_padding_mask(
    attention_mask: torch.Tensor | None, input_ids: torch.Tensor
) -> torch.Tensor | None:
    """``[B, L]`` bool, True at real tokens; None when there is no padding at all."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else None
        raise ValueError(
            f"attention_mask must be a tensor of the same shape as input_ids "
            f"{tuple(input_ids.shape)}, got {shape or type(attention_mask).__name__}"
        )
    if attention_mask.dtype != torch.bool:
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must contain only 0 (padding) and 1 (real token)")
        attention_mask = attention_mask != 0
    if bool(attention_mask.all()):
        return None  # identical to passing no mask, and keeps the fast SDPA path
    return attention_mask.to(input_ids.device)


def _check_class_labels(
    class_labels: torch.Tensor | int | None,
    batch: int,
    config: ProsecoDiTConfig,
    device: torch.device,
) -> torch.Tensor | None:
    """``[B]`` long labels (None becomes the null label), or None for unconditional models."""
    if config.num_classes == 0:
        if class_labels is not None:
            raise ValueError(
                "class_labels were given but the model is unconditional (num_classes=0); "
                "drop class_labels or build the model with num_classes > 0"
            )
        return None
    if class_labels is None:
        class_labels = config.null_label
    if isinstance(class_labels, int) and not isinstance(class_labels, bool):
        class_labels = torch.full((batch,), class_labels, dtype=torch.long, device=device)
    if not isinstance(class_labels, torch.Tensor) or not _is_integer(class_labels.dtype):
        raise ValueError(
            f"class_labels must be an int or an integer tensor [B], got {class_labels!r}"
        )
    if class_labels.dim() == 0:
        class_labels = class_labels.expand(batch)
    if class_labels.shape != (batch,):
        raise ValueError(
            f"class_labels must have shape [B] = [{batch}], got {tuple(class_labels.shape)}"
        )
    if bool(((class_labels < 0) | (class_labels > config.num_classes)).any()):
        raise ValueError(
            f"class_labels must be in [0, {config.num_classes}] ({config.num_classes} = null label), "
            f"got values {class_labels.unique().tolist()}"
        )
    return class_labels.long().to(device)


def _check_timesteps(
    timesteps: torch.Tensor | float | None,
    batch: int,
    config: ProsecoDiTConfig,
    device: torch.device,
) -> torch.Tensor | None:
    """``[B]`` float times for time-conditioned models; None otherwise (timesteps are ignored)."""
    if not config.time_conditioning:
        return None
    if timesteps is None:
        raise ValueError(
            "this model is time-conditioned (config.time_conditioning=True): pass timesteps [B]"
        )
    timesteps = torch.as_tensor(timesteps, dtype=torch.float32, device=device)
    if timesteps.dim() == 0:
        timesteps = timesteps.expand(batch)
    if timesteps.shape != (batch,):
        raise ValueError(f"timesteps must have shape [B] = [{batch}], got {tuple(timesteps.shape)}")
    if not bool(torch.isfinite(timesteps).all()):
        raise ValueError("timesteps contain NaN or inf")
    return timesteps


def _attention_mask(
    keep: torch.Tensor | None, length: int, causal: bool, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """Boolean SDPA mask ``[B, 1, L, L]`` (True = may attend) and the ``is_causal`` flag.

    A query whose every key is masked (a padded position in front of all real tokens in the causal
    case, or a fully padded row) may attend to itself, so that SDPA never sees an empty row (which
    would give NaN). This only changes outputs at padded positions, which no real position reads.
    """
    if keep is None:
        return None, causal
    allowed = keep[:, None, None, :]  # [B, 1, 1, L] over keys
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    else:
        allowed = allowed.expand(-1, -1, length, -1)
    empty = ~allowed.any(dim=-1, keepdim=True)
    eye = torch.eye(length, dtype=torch.bool, device=device)
    return allowed | (empty & eye), False


def _window_attention_mask(
    cached: torch.Tensor | None, keep: torch.Tensor | None, batch: int, length: int
) -> torch.Tensor | None:
    """Boolean SDPA mask ``[B, 1, 1 or L, Lc + L]`` over cached keys then the input's keys
    (True = may attend), or None when nothing is padding. A row with no key to attend may
    attend to its own positions (as :func:`_attention_mask`), so that SDPA never sees an empty
    row."""
    if cached is None and keep is None:
        return None
    device = (cached if cached is not None else keep).device
    if cached is None:
        cached = torch.ones(batch, 0, dtype=torch.bool, device=device)
    if keep is None:
        keep = torch.ones(batch, length, dtype=torch.bool, device=device)
    allowed = torch.cat((cached.to(device=device, dtype=torch.bool), keep.to(device)), dim=1)
    allowed = allowed[:, None, None, :]
    empty = ~allowed.any(dim=-1)  # [B, 1, 1]
    if bool(empty.any()):
        eye = torch.eye(length, dtype=torch.bool, device=device)
        own = torch.cat((eye.new_zeros(length, allowed.shape[-1] - length), eye), dim=1)
        allowed = allowed.expand(-1, -1, length, -1) | (empty[..., None] & own)
    return allowed


def _new_cache(
    store: list[tuple[torch.Tensor, torch.Tensor]],
    past: KVCache | None,
    positions: torch.Tensor,
    keep: torch.Tensor | None,
) -> KVCache:
    """The :class:`KVCache` of a call: its keys and values after ``past``'s, if any."""
    keys = [k for k, _ in store]
    values = [v for _, v in store]
    mask = keep
    if past is not None:
        keys = [torch.cat((p, k), dim=2) for p, k in zip(past.keys, keys)]
        values = [torch.cat((p, v), dim=2) for p, v in zip(past.values, values)]
        positions = torch.cat((past.positions.to(positions.device), positions))
        if past.key_mask is not None or keep is not None:
            batch = keys[0].shape[0]
            old = past.key_mask
            if old is None:
                old = torch.ones(batch, past.length, dtype=torch.bool, device=positions.device)
            new = keep
            if new is None:
                new = torch.ones(batch, len(positions) - past.length, dtype=torch.bool,
                                 device=positions.device)  # fmt: skip
            mask = torch.cat((old.to(new.device), new), dim=1)
    return KVCache(keys, values, positions, mask)


def _register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForMaskedLM`` know ``proseco-dit`` (idempotent)."""
    AutoConfig.register(ProsecoDiTConfig.model_type, ProsecoDiTConfig, exist_ok=True)
    AutoModelForMaskedLM.register(ProsecoDiTConfig, ProsecoDiT, exist_ok=True)


_register_auto_classes()
