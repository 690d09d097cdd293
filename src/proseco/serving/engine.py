"""What ``proseco generate``, ``proseco chat`` and ``proseco serve`` share: one loaded model that
formats prompts the way SFT trained it, resolves decoding settings and streams text per block.

* :class:`PromptFormat`: the prompt layout of :func:`proseco.data.text.encode_sft` — the
  tokenizer's chat template applied to the conversation with the generation prompt when it has
  one (``chat_template='auto'``, the SFT default), else ``[BOS] prompt``
  (:func:`proseco.data.text.prompt_ids` for one user turn); ``--chat-template``, else the SFT
  run's ``data.chat_template`` (:func:`proseco.commands.options.chat_template`), chooses.
* :class:`Engine`: the model, its tokenizer and the decoding settings: saved
  ``sampling_config.json`` (or ``--config``) < ``--preset`` < decoding flags < per-request
  fields, with EOS / pad ids resolved by :mod:`proseco.special_tokens` (tokenizer first) and
  ``stop_at_eos`` on. :meth:`Engine.generate` samples a batch of ragged prompts (left-padded by
  the sampler) and reports text per row as each block completes (:class:`RowText`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from proseco.errors import ConfigError
from proseco.special_tokens import resolve_special_ids, tokenizer_special_ids

__all__ = ["DEFAULT_MAX_TOKENS", "Engine", "GenerationResult", "PromptFormat", "RowText"]

DEFAULT_MAX_TOKENS = 256
"""New tokens when a request names none (capped by what the model's length leaves)."""


class PromptFormat:
    """Token ids of a prompt laid out as SFT trained the model (:func:`encode_sft`).

    Args:
        tokenizer: the model's tokenizer.
        chat_template: ``"auto"`` uses the tokenizer's chat template when it has one, ``"none"``
            never does (``[BOS] prompt``).
    """

    def __init__(self, tokenizer: Any, chat_template: str = "auto") -> None:
        from proseco.commands.options import CHAT_TEMPLATES

        if chat_template not in CHAT_TEMPLATES:
            raise ConfigError(
                f"--chat-template must be one of {list(CHAT_TEMPLATES)}, got {chat_template!r}"
            )
        self.tokenizer, self.chat_template = tokenizer, chat_template
        self.ids = tokenizer_special_ids(tokenizer).as_dict()
        self.uses_template = chat_template == "auto" and bool(
            getattr(tokenizer, "chat_template", None)
        )

    @property
    def name(self) -> str:
        return "chat template" if self.uses_template else "[BOS] prompt"

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def completion(self, prompt: str | Sequence[int]) -> list[int]:
        """``[BOS] prompt`` for a raw completion (ids are taken as given, BOS added if missing)."""
        ids = self._encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        bos = self.ids["bos"]
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The conversation ``messages`` (``{"role", "content"}``, ending with a user turn) with
        the generation prompt.

        With a chat template this is exactly SFT's prompt for one user turn, and the template's
        own multi-turn layout for longer conversations. Without one, SFT saw ``[BOS] prompt
        response [EOS]``; earlier turns are laid out that way one after the other
        (``[BOS] u1 a1 [EOS] u2 a2 [EOS] ... un``) and system messages open the first user turn.
        """
        if len(messages) == 1 and messages[0]["role"] == "user":
            from proseco.data.text import prompt_ids

            return prompt_ids(self.tokenizer, messages[0]["content"], self.chat_template)
        if self.uses_template:
            out = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True
            )
            return list(out["input_ids"] if hasattr(out, "keys") else out)
        bos, eos = self.ids["bos"], self.ids["eos"]
        ids: list[int] = [] if bos is None else [bos]
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        first_user = True
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "system":
                continue
            if role == "user":
                if first_user and system:
                    content = f"{system}\n\n{content}"
                first_user = False
                ids += self._encode(content)
            else:  # assistant
                ids += self._encode(content)
                if eos is not None:
                    ids.append(eos)
        return ids


@dataclasses.dataclass
class GenerationResult:
    """One row of a generation: final text and counts."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    nfe: int
    denoiser_nfe: int
    corrector_nfe: int
    num_corrected: int
    revised: bool  # the corrector rewrote text that had already been streamed
    unsent: str = ""  # the end of ``text`` not streamed yet ("" when revised)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class RowText:
    """Incremental text of one row: what is new since the last block, cut at the first EOS and at
    stop strings; a stop string's possible beginning and an unfinished character are held back.

    Later corrector steps may still rewrite positions of earlier blocks (ProSeCo corrects every
    unmasked position); a stream cannot take text back, so :attr:`revised` records it and the
    final text (:meth:`finish`) is the one to keep.
    """

    def __init__(self, tokenizer: Any, eos_id: int | None, bos_id: int | None, length: int,
                 stop: Sequence[str] = ()) -> None:  # fmt: skip
        self.tokenizer, self.eos_id, self.length = tokenizer, eos_id, length
        self.bos_id = bos_id if bos_id == eos_id else None
        self.stop = tuple(s for s in stop if s)
        self.emitted = ""
        self.stopped = False  # a stop string was produced: the row is done
        self.revised = False

    def _cut(self, row: Sequence[int]) -> tuple[list[int], bool]:
        from proseco.eval.text import cut_at_eos

        row = list(row[: self.length])
        ids = cut_at_eos(row, self.eos_id, bos_id=self.bos_id)
        return ids, len(ids) < len(row) and self.eos_id in row

    def _text(self, ids: list[int]) -> tuple[str, bool]:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        hits = [text.index(s) for s in self.stop if s in text]
        if hits:
            return text[: min(hits)], True
        return text, False

    def update(self, row: Sequence[int]) -> str:
        """New text after a block: ``row`` is the row's generated ids so far."""
        if self.stopped:
            return ""
        ids, _ = self._cut(row)
        text, self.stopped = self._text(ids)
        if not self.stopped:
            text = text.rstrip("\ufffd")  # an unfinished multi-byte character
            hold = max(
                (k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])),
                default=0,
            )
            text = text[: len(text) - hold]
        if not text.startswith(self.emitted):
            self.revised = True
        delta = text[len(self.emitted) :] if len(text) > len(self.emitted) else ""
        self.emitted += delta
        return delta

    def finish(self, row: Sequence[int]) -> tuple[str, list[int], str]:
        """``(text, ids, finish_reason)`` of the final generated ids ``row``."""
        ids, ended = self._cut(row)
        text, stopped = self._text(ids)
        if not text.startswith(self.emitted):
            self.revised = True
        return text, ids, "stop" if (ended or stopped) else "length"

    def rest(self, text: str) -> str:
        """What is left to stream of the final ``text`` (after everything :meth:`update` sent)."""
        if text.startswith(self.emitted):
            return text[len(self.emitted) :]
        return ""


_DECODING_FLAGS = ("steps", "unmasking", "block_length", "temperature", "top_p", "top_k",
                   "float64", "schedule", "eps", "eos_id", "stop_at_eos", "cache",
                   "corrector_steps", "corrector_every", "corrector_start", "corrector_update",
                   "corrector_early_exit", "corrector_final", "condition", "guidance_gamma",
                   "null_label", "guidance_conditional_corrector")  # fmt: skip


def no_flags() -> argparse.Namespace:
    """A namespace of ``proseco sample``'s decoding flags, none given."""
    return argparse.Namespace(**dict.fromkeys(_DECODING_FLAGS))


class Engine:
    """A loaded model ready to answer prompts.

    Args:
        model: the network (eval mode, on its device).
        tokenizer: its tokenizer (required: prompts and answers are text).
        config: the saved (or ``--config``) :class:`~proseco.SamplingConfig`.
        mask_id: the mask token id.
        flags: ``proseco sample``-style decoding flags applied over ``config`` (and a preset).
        preset: a decoding preset applied before the flags, sized to each request's length.
        chat_template: ``"auto"`` or ``"none"`` (:class:`PromptFormat`).
        name: the model id the server reports.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        config: Any,
        *,
        mask_id: int,
        flags: argparse.Namespace | None = None,
        preset: str | None = None,
        chat_template: str = "auto",
        name: str = "proseco",
    ) -> None:
        from proseco.models.protocol import model_max_length

        if tokenizer is None:
            raise ConfigError(
                "this model directory has no tokenizer; generate, chat and serve work with text "
                "(use `proseco sample --prompt-ids` for token ids)"
            )
        self.model, self.tokenizer, self.mask_id, self.name = model, tokenizer, mask_id, name
        self.format = PromptFormat(tokenizer, chat_template)
        self.ids = resolve_special_ids(model, tokenizer).as_dict()
        self.flags = flags if flags is not None else no_flags()
        self.preset = preset
        fill: dict[str, Any] = {}
        if config.eos_id is None and self.ids["eos"] is not None:
            fill["eos_id"] = self.ids["eos"]
        if config.pad_id is None and self.ids["pad"] is not None:
            fill["pad_id"] = self.ids["pad"]
        self.base = config.replace(**fill) if fill else config
        self.max_length = model_max_length(model)
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self._configs: dict[tuple[int, str | None], Any] = {}

    # -- settings -----------------------------------------------------------------------------
    def config_for(self, length: int, preset: str | None = None) -> Any:
        """The config for ``length`` new tokens: saved < preset < flags (+ EOS stop)."""
        from proseco.commands.sample import build_config
        from proseco.sampling.presets import apply_preset

        preset = preset if preset is not None else self.preset
        key = (length, preset)
        if key not in self._configs:
            config = self.base
            if preset is not None:
                config = apply_preset(config, preset, length=length)
            config = build_config(self.flags, config)
            if self.flags.stop_at_eos is None and config.eos_id is not None:
                config = config.replace(stop_at_eos=True)
            self._configs[key] = config
        return self._configs[key]

    def room(self, prompt_length: int) -> int | None:
        """New tokens the model's maximum length leaves after a prompt (None: no maximum)."""
        return None if self.max_length is None else self.max_length - prompt_length

    def plan(
        self,
        prompt_length: int,
        max_tokens: int | None = None,
        preset: str | None = None,
        adjust: Callable[[Any], Any] | None = None,
    ) -> tuple[Any, int, int]:
        """``(config, length)`` for a prompt of ``prompt_length`` tokens.

        ``max_tokens=None`` asks for :data:`DEFAULT_MAX_TOKENS`, capped by the room the model's
        length leaves; an explicit ``max_tokens`` that does not fit is an error. ``preset``
        replaces the engine's preset; ``adjust(config) -> config`` applies a request's own
        settings last. (A block length that does not divide ``length`` leaves a shorter last
        block.)
        """
        room = self.room(prompt_length)
        if room is not None and room < 1:
            raise ConfigError(
                f"the prompt has {prompt_length} tokens and fills the model's maximum length "
                f"{self.max_length}; shorten it"
            )
        if max_tokens is None:
            length = DEFAULT_MAX_TOKENS if room is None else min(DEFAULT_MAX_TOKENS, room)
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max tokens must be an int >= 1, got {max_tokens!r}")
        elif room is not None and max_tokens > room:
            raise ConfigError(
                f"{max_tokens} new tokens after a prompt of {prompt_length} tokens exceed the "
                f"model's maximum length {self.max_length}; ask for at most {room}"
            )
        else:
            length = max_tokens
        config = self.config_for(length, preset)
        return (adjust(config) if adjust is not None else config), length

    def check(self, config: Any, prompts: list[list[int]], length: int) -> None:
        """Raise the :class:`ConfigError` sampling would raise for these settings."""
        from proseco.sampling.dispatch import sampler_for

        check, _ = sampler_for(self.model)
        check(self.model, config, mask_id=self.mask_id, length=length, prompt=prompts[:1])

    # -- generation ---------------------------------------------------------------------------
    def generate(
        self,
        prompts: list[list[int]],
        config: Any,
        length: int,
        *,
        generator: torch.Generator | None = None,
        stop: Sequence[str] | Sequence[Sequence[str]] = (),
        on_text: Callable[[int, str], None] | None = None,
        cancelled: Callable[[int], bool] | None = None,
        on_steps: Callable[[Any, int], None] | None = None,
        ignore_eos: bool = False,
    ) -> tuple[list[GenerationResult], Any]:
        """Sample ``prompts`` (ragged, left-padded) as one batch.

        Args:
            prompts: token ids per row.
            config, length: from :meth:`plan`.
            generator: the random draws.
            stop: stop strings (text is cut before the first; the row stops sampling), or a
                list of them per row.
            on_text: ``on_text(row, new_text)`` after each block, for rows with new text.
            cancelled: ``cancelled(row)`` after each block; a true row stops sampling (its client
                left).
            on_steps: ``on_steps(history, prompt_width)`` after each block with the sampling
                history so far (``--show-steps``).
            ignore_eos: keep the text after EOS (every ``length`` token counts).

        Returns:
            ``(results, SampleOutput)``.
        """
        from proseco.sampling.dispatch import sampler_for

        _, sample = sampler_for(self.model)
        width = max(len(p) for p in prompts)
        if not stop or isinstance(stop[0], str):
            stop = [tuple(stop)] * len(prompts)
        eos = None if ignore_eos else self.ids["eos"]
        streams = [RowText(self.tokenizer, eos, self.ids["bos"], length, s)
                   for s in stop]  # fmt: skip
        streaming = on_text is not None or cancelled is not None or on_steps is not None
        keywords: dict[str, Any] = {}
        if streaming and _takes_on_block(sample):

            def on_block(block: int, end: int, tokens: torch.Tensor, history: Any) -> Any:
                rows = tokens[:, width:end].tolist()
                done = []
                for i, (stream, row) in enumerate(zip(streams, rows)):
                    delta = stream.update(row)
                    if delta and on_text is not None:
                        on_text(i, delta)
                    done.append(stream.stopped or (cancelled is not None and cancelled(i)))
                if on_steps is not None and history is not None:
                    on_steps(history, width)
                return torch.tensor(done, dtype=torch.bool) if any(done) else None

            keywords["on_block"] = on_block
            keywords["return_history"] = on_steps is not None
        out = sample(self.model, config, mask_id=self.mask_id, length=length, prompt=prompts,
                     generator=generator, **keywords)  # fmt: skip
        if on_steps is not None and "on_block" not in keywords and out.history is not None:
            on_steps(out.history, width)
        results = []
        rows = out.generated.tolist()
        nfe_rows = out.nfe_per_row.tolist() if out.nfe_per_row is not None else None
        corrector_rows = (
            out.corrector_nfe_per_row.tolist() if out.corrector_nfe_per_row is not None else None
        )
        for i, (stream, row) in enumerate(zip(streams, rows)):
            text, ids, reason = stream.finish(row)
            nfe = int(nfe_rows[i]) if nfe_rows is not None else int(out.nfe)
            corr = int(corrector_rows[i]) if corrector_rows is not None else int(out.corrector_nfe)
            results.append(GenerationResult(
                text=text, token_ids=ids, finish_reason=reason, prompt_tokens=len(prompts[i]),
                nfe=nfe, denoiser_nfe=nfe - corr, corrector_nfe=corr,
                num_corrected=int(out.num_corrected[i]) if out.num_corrected is not None else 0,
                revised=stream.revised, unsent=stream.rest(text),
            ))  # fmt: skip
        return results, out


def _takes_on_block(sample: Any) -> bool:
    """Whether the sampler reports blocks as they complete (the masked diffusion sampler does;
    the autoregressive one answers in one piece)."""
    import inspect

    try:
        return "on_block" in inspect.signature(sample).parameters
    except (TypeError, ValueError):
        return False


def load_engine(args: argparse.Namespace, *, name: str | None = None) -> Engine:
    """Load ``args.model_dir`` as ``proseco sample`` does and wrap it in an :class:`Engine`."""
    from proseco.commands.options import chat_template, load_model_from_args
    from proseco.commands.sample import _device, _mask_id, read_config
    from proseco.sampling import SamplingConfig
    from proseco.sampling.presets import apply_preset

    if args.preset is not None:
        apply_preset(SamplingConfig(), args.preset)  # an unknown name fails before loading
    template = chat_template(args)
    started = time.perf_counter()
    model, tokenizer, saved = load_model_from_args(args, _device(args.device))
    base = read_config(args.config) if args.config is not None else saved
    engine = Engine(
        model, tokenizer, base, mask_id=_mask_id(args, model, tokenizer), flags=args,
        preset=args.preset, chat_template=template,
        name=name or model_name(args.model_dir),
    )  # fmt: skip
    engine.load_seconds = time.perf_counter() - started
    return engine


def model_name(model_dir: str | Path) -> str:
    """The id a model is served as: a hub name as given, a directory's name (its run's for a
    ``final/`` folder)."""
    path = Path(str(model_dir).rstrip("/"))
    if not path.exists():
        return str(model_dir)
    if path.name in ("final", "") and path.parent.name:
        return path.parent.name
    return path.name or "proseco"
