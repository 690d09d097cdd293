"""Layers of the native LLaDA model: its norms, rotary embeddings and its ``llama`` block.

Parameter names are LLaDA's (``attn_norm``, ``q_proj``, ``k_proj``, ``v_proj``, ``attn_out``,
``ff_norm``, ``ff_proj``, ``up_proj``, ``ff_out``), so a block's ``state_dict`` is the one in
LLaDA's safetensors. The arithmetic follows LLaDA's code where it matters for equality: RMSNorm
in float32, RoPE in float32 on the "rotate half" pairs ``(i, i + d/2)``, attention scaled by
``1 / sqrt(head_dim)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from proseco.models.llada_config import LLaDAConfig

__all__ = ["LLaDALlamaBlock", "LLaDANorm", "apply_rotary", "rotary_tables"]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "relu": F.relu,
}


class LLaDANorm(nn.Module):
    """LLaDA's norm of ``config.layer_norm_type``: LayerNorm (``default`` / ``low_precision``,
    eps 1e-5) or RMSNorm (``rms``: ``weight * x / rms(x)``; ``gemma_rms``: ``(1 + weight) * ...``,
    eps ``rms_norm_eps``, normalised in float32 and cast back before the weight).

    Parameters: ``weight`` ``[D]`` (with ``layer_norm_with_affine``) and ``bias`` ``[D]`` (with
    :attr:`LLaDAConfig.norm_bias`).
    """

    def __init__(self, config: LLaDAConfig, size: int | None = None) -> None:
        super().__init__()
        self.size = size or config.d_model
        self.kind = config.layer_norm_type
        self.rms = self.kind in ("rms", "gemma_rms")
        self.eps = float(config.rms_norm_eps) if self.rms else 1e-5
        if config.layer_norm_with_affine:
            self.weight = nn.Parameter(torch.ones(self.size))
        else:
            self.register_parameter("weight", None)
        if config.norm_bias:
            self.bias = nn.Parameter(torch.zeros(self.size))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[..., D]`` -> normalised ``[..., D]``."""
        if not self.rms:
            return F.layer_norm(x, (self.size,), self.weight, self.bias, self.eps)
        with torch.autocast(x.device.type, enabled=False):
            y = x.float()
            y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        if self.weight is None:
            return y
        y = (self.weight if self.kind == "rms" else 1 + self.weight) * y
        return y if self.bias is None else y + self.bias


def rotary_tables(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of RoPE at ``positions``.

    Args:
        positions: ``[B, L]`` (or ``[1, L]``) integer positions.
        head_dim: ``d``, the width of one head (even).
        theta: the base (``rope_theta``; LLaDA-8B: 500000).

    Returns:
        ``(cos, sin)``, each float32 ``[B, 1, L, d]``: angle ``p * theta^(-2i/d)`` in columns
        ``i`` and ``i + d/2``.
    """
    device = positions.device
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    )
    angles = positions.float()[..., None] * inv_freq  # [B, L, d/2]
    angles = torch.cat((angles, angles), dim=-1)[:, None]  # [B, 1, L, d]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, heads, L, d]`` by ``(cos, sin)`` ``[B or 1, 1, L, d]`` in float32; the
    result is in ``x``'s dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


class LLaDALlamaBlock(GradientCheckpointingLayer):
    """LLaDA's ``llama`` block: ``x + attn_out(attention(attn_norm(x)))``, then
    ``x + ff_out(act(ff_proj(h)) * up_proj(h))`` with ``h = ff_norm(x)``.

    Attention is bidirectional ``scaled_dot_product_attention`` over the cached keys (``past``)
    and the input's own, with a boolean key mask. Gradient checkpointing: Hugging Face's
    (``gradient_checkpointing_enable``) or LLaDA's ``set_activation_checkpointing``
    (:class:`~proseco.models.llada.LLaDAModel`), both through this layer.
    """

    def __init__(self, config: LLaDAConfig, layer_id: int = 0) -> None:
        super().__init__()
        self.layer_id = layer_id
        d, hd = config.d_model, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.n_heads,
            config.effective_n_kv_heads,
            hd,
        )
        bias, qkv_bias = (
            bool(config.include_bias),
            bool(config.include_bias or config.include_qkv_bias),
        )
        self.attn_norm = LLaDANorm(config)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_norm = LLaDANorm(config)
        self.ff_proj = nn.Linear(d, config.mlp_width, bias=bias)
        self.up_proj = nn.Linear(d, config.mlp_width, bias=bias)
        self.ff_out = nn.Linear(config.mlp_width, d, bias=bias)
        self.act = _ACTIVATIONS[config.activation_type]
        self.dropout = nn.Dropout(config.residual_dropout)
        self.attention_dropout = float(config.attention_dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None,
        sin: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        store: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """One block.

        Args:
            x: hidden states ``[B, L, D]``.
            cos, sin: RoPE tables ``[B or 1, 1, L, d]`` (:func:`rotary_tables`), or ``None``
                (learned positions).
            attn_mask: boolean ``[B, 1, 1, Lc + L]`` (True = may attend), or ``None``.
            past: cached ``(keys, values)`` ``[B, kv_heads, Lc, d]``, attended to before the
                input's own.
            store: receives this call's ``(keys, values)`` ``[B, kv_heads, L, d]`` (after RoPE).

        Returns:
            ``[B, L, D]``.
        """
        b, n, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if cos is not None:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if store is not None:
            store.append((k, v))
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        if self.n_kv_heads != self.n_heads:
            groups = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        p = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        x = x + self.dropout(self.attn_out(y.transpose(1, 2).reshape(b, n, -1)))
        h = self.ff_norm(x)
        return x + self.dropout(self.ff_out(self.act(self.ff_proj(h)) * self.up_proj(h)))
