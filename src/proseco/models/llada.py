"""A native LLaDA: LLaDA's network as a ``transformers`` model, without its remote code.

:class:`LLaDAModelLM` has LLaDA's module tree and parameter names
(``model.transformer.{wte, blocks.N.*, ln_f, ff_out}``), so the safetensors of ``GSAI-ML/LLaDA-8B-*``
load into it as they are, and its logits equal those of LLaDA's own code for the same weights.
What it adds:

* a real attention mask: ``attention_mask`` ``[B, L]`` (1 = token, 0 = padding) masks padded keys
  and restarts positions after the padding, so a padded row gets the logits it has alone (LLaDA's
  code turns attention causal when given a mask);
* SDPA attention, and the sampler's window KV cache (:mod:`proseco.models.kv_cache`):
  ``use_cache=True`` returns a :class:`~proseco.models.kv_cache.KVCache`, and
  ``past_key_values=cache, position_ids=[W]`` runs a window of the sequence against it;
* gradient checkpointing both ways (``gradient_checkpointing_enable()`` and LLaDA's
  ``model.set_activation_checkpointing("whole_layer")``), FSDP wrapping per ``LLaDALlamaBlock``
  (``_no_split_modules``, the class name LLaDA's recipes give ``--fsdp_transformer_layer_cls_to_wrap``);
* ``save_pretrained`` keeps a checkpoint loadable by LLaDA's code too: the ``config.json`` keys
  are LLaDA's, and the modelling files its ``auto_map`` names are copied from where it was loaded.

Load checkpoints with :func:`proseco.load_pretrained` (which picks this model for LLaDA
directories, see :mod:`proseco.models.llada_hub`) or ``LLaDAModelLM.from_pretrained(path)``.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from proseco.models.kv_cache import KVCache
from proseco.models.llada_config import LLaDAConfig, native_problems
from proseco.models.llada_layers import LLaDALlamaBlock, LLaDANorm, rotary_tables

__all__ = ["CHECKPOINT_STRATEGIES", "LLaDAConfig", "LLaDAModel", "LLaDAModelLM", "LLaDAOutput"]

CHECKPOINT_STRATEGIES = {"whole_layer": 1, "one_in_two": 2, "one_in_three": 3, "one_in_four": 4}
"""LLaDA's activation-checkpointing strategies: every ``n``-th block (from block 0)."""


@dataclass
class LLaDAOutput(ModelOutput):
    """What :class:`LLaDAModelLM` returns: ``logits`` ``[B, L, E]`` and, with ``use_cache``,
    ``past_key_values`` (a :class:`~proseco.models.kv_cache.KVCache` of every position)."""

    logits: torch.Tensor | None = None
    past_key_values: KVCache | None = None


class LLaDAModel(nn.Module):
    """LLaDA's ``model`` module: ``transformer`` = ``wte``, ``blocks``, ``ln_f``, ``ff_out``
    (untied) and ``wpe`` (learned positions, without RoPE)."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.num_embeddings, d),
                "emb_drop": nn.Dropout(config.embedding_dropout),
                "ln_f": LLaDANorm(config),
                "blocks": nn.ModuleList(LLaDALlamaBlock(config, i) for i in range(config.n_layers)),
            }
        )
        if not config.rope:
            self.transformer["wpe"] = nn.Embedding(config.max_sequence_length, d)
        if not config.weight_tying:
            self.transformer["ff_out"] = nn.Linear(
                d, config.num_embeddings, bias=config.include_bias
            )
        self.activation_checkpointing_strategy: str | None = None

    def set_activation_checkpointing(self, strategy: str | None) -> None:
        """LLaDA's switch: recompute every block (``"whole_layer"``), one in two, three or four
        (``"one_in_two"`` ...) in the backward pass, or none (``None``)."""
        if strategy is not None and strategy not in CHECKPOINT_STRATEGIES:
            raise ValueError(
                f"unknown activation checkpointing strategy {strategy!r}; choose one of "
                f"{[*CHECKPOINT_STRATEGIES, None]}"
            )
        from torch.utils.checkpoint import checkpoint

        every = CHECKPOINT_STRATEGIES.get(strategy or "", 0)
        for i, block in enumerate(self.transformer["blocks"]):
            block.gradient_checkpointing = bool(every) and i % every == 0
            block._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
        self.activation_checkpointing_strategy = strategy

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """``(logits [B, L, E], cache or None)``; arguments as :meth:`LLaDAModelLM.forward`."""
        config, t = self.config, self.transformer
        layout = _Layout(input_ids, attention_mask, position_ids, past_key_values, config)
        x = t["wte"](input_ids)
        if config.input_emb_norm:
            x = x * config.d_model**0.5
        cos = sin = None
        if config.rope:
            cos, sin = rotary_tables(layout.positions, config.head_dim, float(config.rope_theta))
        else:
            x = x + t["wpe"](layout.positions)
        x = t["emb_drop"](x)
        store: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if use_cache else None
        past = past_key_values
        for i, block in enumerate(t["blocks"]):
            layer = None if past is None else (past.keys[i], past.values[i])
            x = block(x, cos, sin, layout.attn_mask, past=layer, store=store)
        x = t["ln_f"](x)
        logits = F.linear(x, t["wte"].weight) if config.weight_tying else t["ff_out"](x)
        if config.scale_logits:
            logits = logits * (1.0 / math.sqrt(config.d_model))
        return logits, (layout.cache(store) if store is not None else None)


class _Layout:
    """Positions and masks of one call.

    ``absolute`` ``[L]``: the input's positions in the (padded) sequence; ``positions``
    ``[B or 1, L]``: the positions the network sees, those of the row with its padding removed
    (``absolute`` minus the padded keys before it); ``allowed`` ``[B, Lc + L]``: which keys (cached
    ones first) are tokens, or ``None`` when none is padding; ``attn_mask`` ``[B, 1, 1, Lc + L]``:
    ``allowed`` for SDPA (a row that is all padding attends to everything, so no softmax is empty;
    its outputs are padding).
    """

    def __init__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        past: KVCache | None,
        config: LLaDAConfig,
    ) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a LongTensor [B, L]")
        batch, length = input_ids.shape
        device = input_ids.device
        if input_ids.numel() and (
            int(input_ids.min()) < 0 or int(input_ids.max()) >= config.num_embeddings
        ):
            raise ValueError(
                f"input_ids must lie in [0, {config.num_embeddings}) (the embedding size)"
            )
        keep = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (batch, length):
                raise ValueError(
                    f"attention_mask must be [B, L] = [{batch}, {length}] (1 = token, 0 = padding), "
                    f"got {tuple(attention_mask.shape)}"
                )
            keep = attention_mask.to(device).bool()
            keep = None if bool(keep.all()) else keep
        self.past = past
        cached = _check_past(past, position_ids, batch, config)
        self.absolute = _absolute_positions(position_ids, length, device)
        mask = None
        if keep is not None or (past is not None and past.key_mask is not None):
            old = past.key_mask if past is not None else None
            if old is None:
                old = torch.ones(batch, cached, dtype=torch.bool, device=device)
            new = (
                keep
                if keep is not None
                else torch.ones(batch, length, dtype=torch.bool, device=device)
            )
            mask = torch.cat((old.to(device=device, dtype=torch.bool), new), dim=1)
        self.allowed = mask
        everything = (
            self.absolute if past is None else torch.cat((past.positions.to(device), self.absolute))
        )
        if mask is None:
            self.positions = self.absolute[None]
            self.attn_mask = None
        else:
            self.positions = _unpadded(everything, ~mask)[:, cached:]
            self.attn_mask = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]
        self.everything = everything
        if not config.rope and int(self.positions.max()) >= config.max_sequence_length:
            raise ValueError(
                f"positions must lie below max_sequence_length = {config.max_sequence_length}"
            )

    def cache(self, store: list[tuple[torch.Tensor, torch.Tensor]]) -> KVCache:
        """The :class:`KVCache` of this call: the cached entries, then the input's."""
        keys, values = [k for k, _ in store], [v for _, v in store]
        if self.past is not None:
            keys = [torch.cat((p, k), dim=2) for p, k in zip(self.past.keys, keys)]
            values = [torch.cat((p, v), dim=2) for p, v in zip(self.past.values, values)]
        return KVCache(keys, values, self.everything, self.allowed)


def _check_past(past: KVCache | None, position_ids: Any, batch: int, config: LLaDAConfig) -> int:
    """The number of cached positions, after checking the cache arguments."""
    if past is None:
        return 0
    if not isinstance(past, KVCache):
        raise ValueError(
            f"past_key_values must be a proseco.models.kv_cache.KVCache, got {type(past).__name__}"
        )
    if len(past.keys) != config.n_layers or len(past.values) != config.n_layers:
        raise ValueError(
            f"past_key_values has {len(past.keys)} layers but this model has {config.n_layers}"
        )
    if past.batch_size != batch:
        raise ValueError(f"past_key_values holds {past.batch_size} rows but input_ids has {batch}")
    if position_ids is None:
        raise ValueError(
            "pass position_ids [L] (the input's absolute positions) with past_key_values"
        )
    return past.length


def _absolute_positions(position_ids: Any, length: int, device: torch.device) -> torch.Tensor:
    """``[L]`` long: ``position_ids`` (``[L]`` or ``[1, L]``) or ``0 .. L-1``."""
    if position_ids is None:
        return torch.arange(length, device=device)
    positions = torch.as_tensor(position_ids, device=device)
    if positions.dim() == 2 and positions.shape[0] == 1:
        positions = positions[0]
    if (
        positions.shape != (length,)
        or positions.dtype.is_floating_point
        or positions.dtype == torch.bool
    ):
        raise ValueError(
            f"position_ids must be [L] = [{length}] integer positions, got "
            f"{tuple(positions.shape)} {positions.dtype}"
        )
    if bool((positions < 0).any()):
        raise ValueError("position_ids must be >= 0")
    return positions.long()


def _unpadded(positions: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """``[B, S]``: each position minus the padded entries at smaller positions of its row.

    Args:
        positions: ``[S]`` distinct positions, in any order (cached entries are not sorted).
        padding: ``[B, S]`` bool, True at padding.
    """
    order = torch.argsort(positions, stable=True)
    pads = padding[:, order].long()
    before_sorted = pads.cumsum(dim=1) - pads
    before = torch.empty_like(before_sorted)
    before[:, order] = before_sorted
    return (positions[None] - before).clamp(min=0)


class LLaDAModelLM(PreTrainedModel):
    """LLaDA as a ``transformers`` model, under LLaDA's names (``LLaDAModelLM.model.transformer``).

    Call it as ``model(input_ids, attention_mask=None)``; it returns an :class:`LLaDAOutput`
    whose ``logits`` ``[B, L, E]`` are in the weights' dtype (``E = embedding_size``), as LLaDA's
    code does (its output type has ``logits`` too).
    """

    config_class = LLaDAConfig
    config: LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDALlamaBlock"]
    _supports_sdpa = True
    # The sampler's window cache (proseco.models.kv_cache): use_cache / past_key_values.
    supports_window_cache = True

    def __init__(self, config: LLaDAConfig) -> None:
        problems = native_problems(config)
        if problems:
            raise ValueError(
                "the native LLaDA model does not implement " + "; ".join(problems) + "; load this "
                "checkpoint with its own modelling code (trust_remote_code=True, PROSECO_LLADA=remote)"
            )
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = float(self.config.init_std)
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, LLaDANorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer["wte"]

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer["wte"] = value

    def get_output_embeddings(self) -> nn.Linear | None:
        return None if self.config.weight_tying else self.model.transformer["ff_out"]

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> LLaDAOutput | tuple[torch.Tensor, ...]:
        """Logits of the clean tokens at every input position.

        Args:
            input_ids: ``[B, L]`` ids in ``[0, embedding_size)``.
            attention_mask: ``[B, L]``, 1 = token, 0 = padding (anywhere: left padding for
                prompts, right padding in training). Padded keys are masked for every query and
                positions skip the padding, so each row's tokens get the logits they get alone.
                ``None`` = no padding.
            position_ids: ``[L]`` positions of the input in the padded sequence (default
                ``0 .. L-1``); required with ``past_key_values`` (a window of a longer sequence).
            past_key_values: a :class:`~proseco.models.kv_cache.KVCache` of other positions of
                the same rows (its ``key_mask`` says which are padding): the input attends to
                them as well as to itself.
            use_cache: also return the keys and values of this call (after the cached ones).
            return_dict: an :class:`LLaDAOutput` (default) or the tuple ``(logits,)``
                (``(logits, cache)`` with ``use_cache``).

        Raises:
            ValueError: ids outside the embedding, malformed masks, positions or caches.
            TypeError: other arguments of LLaDA's ``forward`` that this model does not take
                (``inputs_embeds``, ``labels``, ``attention_bias`` ...).
        """
        unused = sorted(k for k, v in kwargs.items() if v is not None and v is not False)
        if unused:
            raise TypeError(f"the native LLaDA model does not take {unused}")
        logits, cache = self.model(
            input_ids, attention_mask, position_ids, past_key_values, use_cache
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (logits,) if cache is None else (logits, cache)
        return LLaDAOutput(logits=logits, past_key_values=cache)

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained``, plus the modelling files the config's
        ``auto_map`` names (LLaDA's own code, copied from where this model was loaded), so the
        directory also loads with ``trust_remote_code=True``; without them ``auto_map`` is
        dropped from the saved ``config.json``."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            keep_remote_code(self.config, str(self.name_or_path or ""), Path(save_directory))


def keep_remote_code(config: LLaDAConfig, source: str, target: Path) -> None:
    """Copy the modules of ``config.auto_map`` (and their relative imports) from ``source`` (a
    directory or a hub name in the local cache) into ``target``; drop ``auto_map`` from
    ``target/config.json`` when they cannot be found."""
    auto_map = getattr(config, "auto_map", None)
    if not isinstance(auto_map, dict) or not auto_map:
        return
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, (list, tuple)) else [v])]
    modules = {
        r.rsplit(".", 1)[0] for r in refs if isinstance(r, str) and "." in r and "--" not in r
    }
    files: dict[str, Path] = {}
    for module in sorted(modules):
        found = _code_files(source, f"{module}.py")
        if found is None:
            files = {}
            break
        files |= found
    if files:
        for name, path in files.items():
            if path.resolve() != (target / name).resolve():
                shutil.copyfile(path, target / name)
        return
    config_file = target / "config.json"
    data = json.loads(config_file.read_text(encoding="utf-8"))
    data.pop("auto_map", None)
    config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    warnings.warn(
        f"{target}: LLaDA's modelling code was not found at {source or 'the load location'}, so "
        "the saved config.json names none (it loads with proseco's native LLaDA)",
        stacklevel=3,
    )


def _code_files(source: str, name: str) -> dict[str, Path] | None:
    """``{file name: path}`` of ``name`` and the files it imports relatively, or ``None``."""
    from transformers.dynamic_module_utils import get_relative_imports

    found: dict[str, Path] = {}
    todo = [name]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = _code_file(source, name)
        if path is None:
            return None
        found[name] = path
        todo += [f"{m}.py" for m in get_relative_imports(str(path))]
    return found


def _code_file(source: str, name: str) -> Path | None:
    local = Path(source) / name
    if local.is_file():
        return local
    if not source or Path(source).exists():
        return None
    try:
        from transformers.utils import cached_file

        found = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
    except Exception:  # offline, unknown repository, no such file: nothing to copy
        return None
    return Path(found) if found else None
