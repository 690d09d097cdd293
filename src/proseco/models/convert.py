"""Load the released ProSeCo / MDLM checkpoints (``kuleshov-group/proseco-owt``) into our DiT.

The official OpenWebText model is a Hugging Face "remote code" model (``model_type = "proseco"``,
class ``Proseco`` wrapping a ``DITBackbone``). Its architecture is the one of
:class:`~proseco.models.dit.ProsecoDiT`: token embedding, pre-norm adaLN-Zero blocks with
bias-free QKV / output projections, rotary embeddings (base 10,000, rotating the two halves of each
head), softmax attention without a padding mask, a 4x tanh-GELU MLP, and a final adaLN LayerNorm
plus a linear head with bias. The differences are names and one re-parametrisation:

* **time conditioning off** (as in the released model): the research code still runs its time MLP
  on ``sigma = 0``, so ``c = SiLU(mlp(emb(0)))`` is a constant. We store that constant directly:
  ``conditioning.constant = mlp(emb(0))`` (our ``c = SiLU(constant)``), computed in float32 from
  the checkpoint's ``sigma_map`` weights; the time MLP itself is dropped.
* ``rotary_emb.inv_freq`` is a buffer of the research code; it is checked and dropped (our DiT
  computes the same frequencies).
* class-conditional checkpoints (``cfg=True``): ``cond_map.embedding_table`` becomes our
  ``conditioning.label_embed`` (``cfg_num_classes + 1`` rows, the last one is the null label).

Time-conditioned official checkpoints (``time_conditioning=True``) are refused: their time MLP reads
``sigma`` without our ``1000 * t`` scaling, which our DiT does not express.

Numerics: on a GPU the research code runs the final layer under bf16 autocast and its attention in
float32 without flash attention; our forward is float32 throughout (``scaled_dot_product_attention``),
so logits agree to float32 rounding, not bit for bit with a bf16 GPU run.

Key map (after stripping the ``backbone.`` prefix of ``Proseco`` / the Lightning module)::

    vocab_embed.embedding                 -> embed_tokens.weight
    sigma_map.mlp.{0,2}.{weight,bias}     -> conditioning.constant   (evaluated at sigma = 0)
    cond_map.embedding_table.weight       -> conditioning.label_embed.weight
    blocks.i.norm1.weight                 -> blocks.i.norm1.weight
    blocks.i.attn_qkv.weight              -> blocks.i.attn.qkv.weight
    blocks.i.attn_out.weight              -> blocks.i.attn.out.weight
    blocks.i.norm2.weight                 -> blocks.i.norm2.weight
    blocks.i.mlp.0.{weight,bias}          -> blocks.i.mlp.fc1.{weight,bias}
    blocks.i.mlp.2.{weight,bias}          -> blocks.i.mlp.fc2.{weight,bias}
    blocks.i.adaLN_modulation.*           -> blocks.i.modulation.*
    output_layer.norm_final.weight        -> norm_final.weight
    output_layer.adaLN_modulation.*       -> final_modulation.*
    output_layer.linear.{weight,bias}     -> lm_head.{weight,bias}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from proseco.errors import ModelLoadError
from proseco.models.dit import ROPE_BASE, ProsecoDiT
from proseco.models.dit_config import ProsecoDiTConfig

__all__ = [
    "OFFICIAL_MODEL_TYPE",
    "OFFICIAL_REPOS",
    "is_official_config",
    "is_official_checkpoint",
    "config_from_official",
    "convert_state_dict",
    "load_official",
    "read_config",
]

OFFICIAL_MODEL_TYPE = "proseco"
# Hub names that are known to hold official checkpoints (others are detected by their config.json).
OFFICIAL_REPOS = ("kuleshov-group/proseco-owt",)
GPT2_VOCAB = 50257  # GPT-2's tokens; MDLM appends [MASK] as id 50257
GPT2_EOT = 50256  # <|endoftext|>: BOS and EOS of the OpenWebText layout
_PREFIXES = ("backbone.", "model.backbone.")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_BLOCK_KEYS = {
    "norm1.weight": "norm1.weight",
    "attn_qkv.weight": "attn.qkv.weight",
    "attn_out.weight": "attn.out.weight",
    "norm2.weight": "norm2.weight",
    "mlp.0.weight": "mlp.fc1.weight",
    "mlp.0.bias": "mlp.fc1.bias",
    "mlp.2.weight": "mlp.fc2.weight",
    "mlp.2.bias": "mlp.fc2.bias",
    "adaLN_modulation.weight": "modulation.weight",
    "adaLN_modulation.bias": "modulation.bias",
}
_TOP_KEYS = {
    "vocab_embed.embedding": "embed_tokens.weight",
    "cond_map.embedding_table.weight": "conditioning.label_embed.weight",
    "output_layer.norm_final.weight": "norm_final.weight",
    "output_layer.adaLN_modulation.weight": "final_modulation.weight",
    "output_layer.adaLN_modulation.bias": "final_modulation.bias",
    "output_layer.linear.weight": "lm_head.weight",
    "output_layer.linear.bias": "lm_head.bias",
}
_SIGMA_KEYS = ("sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias",
               "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias")  # fmt: skip
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_FREQ_DIM = 256  # the research code's sinusoidal time features


def is_official_config(config: Mapping[str, Any]) -> bool:
    """Whether a ``config.json`` (as a dict) describes an official ProSeCo / MDLM HF checkpoint."""
    return config.get("model_type") == OFFICIAL_MODEL_TYPE and "n_blocks" in config


def is_official_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an official checkpoint: a known hub name (no network is used) or a
    local directory whose ``config.json`` is the research code's ``ProsecoConfig``."""
    text = os.fspath(path)
    local = Path(text).expanduser()
    if local.is_dir():
        config = read_config(local)
        return config is not None and is_official_config(config)
    return text in OFFICIAL_REPOS


def config_from_official(official: Mapping[str, Any]) -> ProsecoDiTConfig:
    """Our :class:`ProsecoDiTConfig` for an official ``ProsecoConfig`` dict.

    The mask token is the last id (MDLM appends ``[MASK]`` to the tokenizer); on the GPT-2
    vocabulary (50,258 = 50,257 + mask) ``<|endoftext|>`` (50256) is BOS and EOS.

    Raises:
        ModelLoadError: a time-conditioned checkpoint, or fields missing from the config.
    """
    try:
        vocab = int(official["vocab_size"])
        fields = {
            "vocab_size": vocab,
            "hidden_size": int(official["hidden_dim"]),
            "num_layers": int(official["n_blocks"]),
            "num_heads": int(official["n_heads"]),
            "cond_dim": int(official["cond_dim"]),
            "max_length": int(official.get("model_length", 1024)),
            "dropout": float(official.get("dropout", 0.1)),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(
            f"not an official ProSeCo config: field {e} is missing or malformed; expected the keys "
            "vocab_size, hidden_dim, n_blocks, n_heads, cond_dim of the research code's ProsecoConfig"
        ) from None
    if official.get("time_conditioning", False):
        raise ModelLoadError(
            "this official checkpoint is time-conditioned (time_conditioning=True); the converter "
            "supports only time_conditioning=False (the released OpenWebText model)"
        )
    num_classes = int(official.get("cfg_num_classes", -1)) if official.get("cfg") else 0
    special = {"mask_token_id": vocab - 1}
    if vocab == GPT2_VOCAB + 1:
        special.update(bos_token_id=GPT2_EOT, eos_token_id=GPT2_EOT)
    return ProsecoDiTConfig(
        **fields, time_conditioning=False, num_classes=max(num_classes, 0), **special
    )


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _time_constant(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``mlp(emb(0))`` ``[cond_dim]``: the research code's time MLP at ``sigma = 0``.

    ``emb(0) = [cos(0) * 128, sin(0) * 128] = [1, ..., 1, 0, ..., 0]``.
    """
    w1, b1, w2, b2 = (state[k].float() for k in _SIGMA_KEYS)
    if w1.shape[1] != _FREQ_DIM:
        raise ModelLoadError(
            f"sigma_map.mlp.0.weight has {w1.shape[1]} inputs, expected {_FREQ_DIM} sinusoidal "
            "time features; this is not a research-code DiT checkpoint"
        )
    half = _FREQ_DIM // 2
    features = torch.cat((torch.ones(1, half), torch.zeros(1, half)), dim=-1)
    hidden = F.silu(F.linear(features, w1, b1))
    return F.linear(hidden, w2, b2)[0]


def _check_inv_freq(inv_freq: torch.Tensor, head_dim: int) -> None:
    expected = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if inv_freq.shape != expected.shape or not torch.allclose(
        inv_freq.float(), expected, rtol=1e-5, atol=0
    ):
        raise ModelLoadError(
            "rotary_emb.inv_freq differs from the base-10000 rotary frequencies our DiT uses; "
            "this checkpoint's position encoding is not supported"
        )


def convert_state_dict(
    state: Mapping[str, torch.Tensor], config: ProsecoDiTConfig
) -> dict[str, torch.Tensor]:
    """Rename an official state dict to :class:`ProsecoDiT`'s names (see the module docstring).

    Args:
        state: the official weights, with or without the ``backbone.`` prefix.
        config: our config for it (:func:`config_from_official`); used to check the head width.

    Returns:
        A state dict that ``ProsecoDiT(config).load_state_dict(..., strict=True)`` accepts.

    Raises:
        ModelLoadError: unknown or missing keys (the message lists them).
    """
    state = _strip_prefix(state)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        block = _BLOCK_RE.match(key)
        if block and block.group(2) in _BLOCK_KEYS:
            out[f"blocks.{block.group(1)}.{_BLOCK_KEYS[block.group(2)]}"] = value
        elif key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = value
        elif key == "rotary_emb.inv_freq":
            _check_inv_freq(value, config.head_dim)
        elif key not in _SIGMA_KEYS:
            unknown.append(key)
    if unknown:
        raise ModelLoadError(
            f"unexpected keys in the official checkpoint: {sorted(unknown)[:8]}; the converter "
            "knows the research code's DITBackbone (models/hf/modeling_proseco.py) only"
        )
    missing = [k for k in _SIGMA_KEYS if k not in state]
    if missing:
        raise ModelLoadError(f"the official checkpoint lacks {missing}; it is incomplete")
    out["conditioning.constant"] = _time_constant(state).to(state[_SIGMA_KEYS[0]].dtype)
    return out


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for name in _WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt files raise many types
            raise ModelLoadError(f"cannot read {path}: {e}; re-download the checkpoint") from e
    raise ModelLoadError(
        f"{directory} has no {' or '.join(_WEIGHT_FILES)}; download the whole checkpoint "
        "(e.g. `huggingface-cli download kuleshov-group/proseco-owt --local-dir DIR`)"
    )


def _download(name: str) -> Path:
    """A hub repo's config and weights in the local hub cache (needs internet the first time)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(name, allow_patterns=["config.json", *_WEIGHT_FILES, "*.json"])
        )
    except Exception as e:
        raise ModelLoadError(
            f"cannot download the official checkpoint {name} from the Hugging Face hub ({e}); "
            "check the network, or download it elsewhere and pass the local directory"
        ) from e


def read_config(directory: str | os.PathLike) -> dict[str, Any] | None:
    """``config.json`` of a directory as a dict, or None if it has none / is unreadable."""
    path = Path(directory) / "config.json"
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_official(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> ProsecoDiT:
    """Load an official checkpoint (local directory or hub name) as our :class:`ProsecoDiT`.

    Args:
        path: a directory holding the official ``config.json`` and ``model.safetensors`` (or
            ``pytorch_model.bin``), or a hub name such as ``kuleshov-group/proseco-owt``.
        device: where to put the model.
        dtype: cast the weights to this dtype (default: float32).

    Returns:
        The model in eval mode; its ``config.mask_token_id`` is the last id.

    Raises:
        ModelLoadError: not an official checkpoint, unsupported variant, or unreadable files.
    """
    local = Path(os.fspath(path)).expanduser()
    directory = local if local.is_dir() else _download(os.fspath(path))
    official = read_config(directory)
    if official is None or not is_official_config(official):
        raise ModelLoadError(
            f"{directory}/config.json is not an official ProSeCo config (model_type 'proseco' "
            "with n_blocks); load our own checkpoints with proseco.load_pretrained instead"
        )
    config = config_from_official(official)
    state = convert_state_dict(_read_weights(directory), config)
    model = ProsecoDiT(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ModelLoadError(
            f"the official checkpoint lacks weights for {missing[:8]}; it does not match its "
            f"config.json (n_blocks={config.num_layers}, cfg={config.num_classes > 0})"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"official weights do not fit their config.json: {e}") from e
    model = model.to(device=device, dtype=dtype or torch.float32)
    return model.eval()
