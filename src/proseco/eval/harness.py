"""lm-evaluation-harness adapter: :class:`ProsecoLM`, registered as ``proseco``.

Generation tasks (``generate_until``: GSM8K, HumanEval, MBPP, Minerva) decode with
:func:`proseco.sample` under the model's :class:`~proseco.SamplingConfig` or a named preset;
log-likelihood tasks (``loglikelihood``: multiple choice) get a Monte Carlo estimate of the ELBO,
as LLaDA scores them. Every call adds NFEs, seconds and tokens/s to :attr:`ProsecoLM.stats`,
which is logged, written to ``stats_path`` (a JSON side file) and returned by
:meth:`ProsecoLM.get_model_info`, so lm-eval's own results JSON carries it under
``config.proseco``.

How lm-eval finds the class: lm-eval 0.4.13 fills its model registry from a fixed table and has no
plugin or entry-point discovery, so ``--model proseco`` works in any process that has imported
this module. From the command line use ``proseco eval lm-eval`` (lm-eval's own CLI with this
module imported); from Python import this module and call ``lm_eval.simple_evaluate(model=
"proseco", ...)`` or pass a :class:`ProsecoLM` object::

    proseco eval lm-eval --model proseco --tasks gsm8k \\
        --model_args pretrained=runs/sft/final,preset=balanced,max_gen_toks=256,batch_size=8

Model arguments (``--model_args key=value,...``): ``pretrained`` (a model directory or hub name),
``preset`` (``fast`` / ``balanced`` / ``max``; default: the model's saved sampling config),
``device``, ``dtype``, ``batch_size``, ``max_gen_toks`` (default 256; a task's own value wins),
``max_length``, ``mc_num`` (Monte Carlo draws per log-likelihood, default 128),
``mc_batch_size`` (draws per forward pass, default 32), ``check_greedy`` (also decode the
continuation greedily to fill lm-eval's ``is_greedy``, default true), ``seed``, ``stats_path``,
``add_bos`` (start prompts with BOS, as ``proseco`` SFT data does; default true),
``chat_template`` (``auto``: lay each generation prompt out as SFT did, with the tokenizer's chat
template when it has one, :func:`proseco.data.text.prompt_ids`; ``none``: ``[BOS] prompt``;
default: neither, the context as lm-eval gives it, plus BOS; lm-eval's own
``--apply_chat_template`` also works), ``trust_remote_code``, ``adapter`` (``llada``, ``dream``,
``masked_lm``, ``proseco``), ``lora`` (a LoRA adapter merged into ``pretrained``; a
``pretrained`` that is an adapter run's ``final/`` needs none), any :class:`~proseco.SamplingConfig` field (``steps``, ``block_length``,
``temperature``, ``unmasking``, ...) and the shortcuts ``corrector_steps`` /
``corrector_every`` / ``corrector_update`` / ``corrector_start``. A preset is resolved for each
answer length (its ``steps`` and ``block_length`` depend on it) and turns on ``stop_at_eos``, as
the paper's harness does (a preset's blocks are at most 32 tokens, the last one shorter when
needed, so any ``max_gen_toks`` keeps about ``length / tokens per step`` steps; a ``block_length``
that does not divide ``max_gen_toks`` also just makes the last block shorter). A task's ``temperature`` /
``do_sample`` are ignored: the sampling config decides (as in the paper's harness); its ``until``
strings and ``max_gen_toks`` are honoured. ``device=cuda...`` falls back to the CPU with a warning
when CUDA is missing (lm-eval's command line passes ``cuda:0`` unless told otherwise). ``batch_size``
and ``device`` may be given in ``--model_args`` as well as with lm-eval's own flags; the
``--model_args`` value wins.

Answers are cut at the first EOS, then at the first ``until`` string. NFE per answer is the number
of model evaluations each answer took part in (the paper's axis); tokens/s counts decoded
positions (EOS padding included) per second of sampling; ``answer_tokens_per_second`` counts only
tokens before the EOS.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own models first: its registry fills lazily when empty)
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from proseco.errors import ConfigError, DataError
from proseco.eval.likelihood import elbo_loglikelihood, stratified_mask_counts
from proseco.fileio import atomic_open
from proseco.models.protocol import model_max_length
from proseco.pretrained import load_pretrained
from proseco.sampling.config import SamplingConfig
from proseco.sampling.correctors import Corrector
from proseco.sampling.loop import sample
from proseco.special_tokens import resolve_special_ids

__all__ = ["ProsecoLM", "EvalStats", "elbo_loglikelihood", "stratified_mask_counts"]

logger = logging.getLogger(__name__)

_SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingConfig))
_CORRECTOR_SHORTCUTS = {"corrector_steps": "steps", "corrector_every": "every",
                        "corrector_update": "update", "corrector_start": "start"}  # fmt: skip


@dataclass
class EvalStats:
    """Compute spent by a :class:`ProsecoLM`, summed over all calls.

    Attributes:
        generate_requests: ``generate_until`` requests answered.
        generate_nfe: forward passes of all generation batches (a pass on any number of rows
            counts once).
        generate_row_nfe: sum over answers of the evaluations each answer took part in;
            divided by ``generate_requests`` it is the NFE per answer (the paper's NFE axis).
        generate_seconds: wall time inside :func:`proseco.sample`.
        generated_positions: positions decoded (``rows x generated length``, EOS padding included).
        answer_tokens: tokens before the first EOS of each answer.
        loglikelihood_requests: ``loglikelihood`` / rolling requests scored.
        loglikelihood_nfe: forward passes of the Monte Carlo ELBO (``mc_batch_size`` rows each)
            plus greedy checks.
        loglikelihood_seconds: wall time of scoring.
    """

    generate_requests: int = 0
    generate_nfe: int = 0
    generate_row_nfe: float = 0.0
    generate_seconds: float = 0.0
    generated_positions: int = 0
    answer_tokens: int = 0
    loglikelihood_requests: int = 0
    loglikelihood_nfe: int = 0
    loglikelihood_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The counters plus derived rates: NFE per answer, tokens/s (``None`` when undefined)."""
        data = dataclasses.asdict(self)
        n, secs = self.generate_requests, self.generate_seconds
        data["nfe_per_answer"] = self.generate_row_nfe / n if n else None
        data["tokens_per_second"] = self.generated_positions / secs if secs > 0 else None
        data["answer_tokens_per_second"] = self.answer_tokens / secs if secs > 0 else None
        return data


def _bool(value: Any) -> bool:
    """A flag from ``--model_args`` (``"False"`` / ``"0"`` are false) or Python."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _int_arg(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"model argument {name} must be an int >= {minimum}, got {value!r}")
    return value


@register_model("proseco")
class ProsecoLM(TemplateLM):
    """A proseco model directory as an lm-eval ``LM`` (see the module docstring for arguments).

    ``pretrained`` is a directory or hub name for :func:`proseco.load_pretrained`, or an already
    loaded model (then pass ``tokenizer=``; ``sampling_config=`` defaults to
    ``SamplingConfig()``).
    """

    backend = "causal"  # _encode_pair tokenises context + continuation together, then splits

    def __init__(
        self,
        pretrained: Any,
        preset: str | None = None,
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str | None = None,
        max_gen_toks: int = 256,
        max_length: int | None = None,
        mc_num: int = 128,
        mc_batch_size: int = 32,
        check_greedy: bool = True,
        seed: int = 0,
        stats_path: str | None = None,
        add_bos: bool = True,
        trust_remote_code: bool = False,
        adapter: str | None = None,
        lora: str | None = None,
        chat_template: str | None = None,
        tokenizer: Any = None,
        sampling_config: SamplingConfig | None = None,
        max_batch_size: int | None = None,
        **sampling: Any,
    ) -> None:
        super().__init__()
        del max_batch_size  # lm-eval passes it to every model; batches here are fixed-size
        self._overrides = self._split_overrides(sampling)  # bad arguments fail before loading
        if preset:
            from proseco.sampling.presets import preset as preset_config

            preset_config(preset)  # an unknown name fails here, with the closest one suggested
        device = str(device or "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            logger.warning("device %s is not available (no CUDA); using cpu", device)
            device = "cpu"
        if isinstance(pretrained, (str, Path)):
            loaded = load_pretrained(
                pretrained, device=device, dtype=dtype, trust_remote_code=_bool(trust_remote_code),
                adapter=adapter or None, lora=lora or None,
            )  # fmt: skip
            self.model = loaded.model
            tokenizer = tokenizer if tokenizer is not None else loaded.tokenizer
            saved = loaded.sampling_config
            self.pretrained_name = str(pretrained)
        else:
            self.model = pretrained.to(device).eval()
            saved = SamplingConfig()
            self.pretrained_name = type(pretrained).__name__
        if tokenizer is None:
            raise ConfigError(
                f"{self.pretrained_name} has no tokenizer; save one beside the model "
                "(tokenizer.save_pretrained(DIR)) or pass tokenizer="
            )
        self.tokenizer = tokenizer
        self._device = torch.device(device)
        self.ids = resolve_special_ids(self.model, tokenizer).as_dict()
        if self.ids["mask"] is None:
            raise ConfigError(
                f"{self.pretrained_name}: neither the model config nor the tokenizer names a mask "
                "token; set model.config.mask_token_id or add one to the tokenizer"
            )
        self.mask_id = self.ids["mask"]
        self.batch_size = self._batch_size(batch_size)
        self.max_gen_toks = _int_arg("max_gen_toks", max_gen_toks, 1)
        self._max_length = None if max_length is None else _int_arg("max_length", max_length, 2)
        self.mc_num = _int_arg("mc_num", mc_num, 1)
        self.mc_batch_size = _int_arg("mc_batch_size", mc_batch_size, 1)
        self.check_greedy = bool(check_greedy)
        self.seed = _int_arg("seed", seed, 0)
        self.stats_path = None if stats_path in (None, "") else Path(stats_path)
        self.add_bos = _bool(add_bos)
        if chat_template not in (None, "", "auto", "none"):
            raise ConfigError(
                f"model argument chat_template must be auto or none, got {chat_template!r}"
            )
        # not ``self.chat_template``: lm-eval calls ``lm.chat_template(...)`` (a method) for
        # ``--apply_chat_template``
        self.prompt_layout = chat_template or None
        self.preset = preset
        self._saved = sampling_config or saved
        self._configs: dict[int, SamplingConfig] = {}
        self._answers_by_length: dict[int, int] = {}
        self.sampling_config = self.config_for(self.max_gen_toks)  # raises on bad settings now
        self.stats = EvalStats()

    # -- setup ----------------------------------------------------------------------------------
    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict[str, Any] | None = None
    ) -> ProsecoLM:
        """lm-eval's constructor from ``--model_args``; see :meth:`create_from_arg_obj`."""
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> ProsecoLM:
        """Build from ``model_args`` and lm-eval's own settings (``batch_size``, ``device``,
        ``max_batch_size``, which its command line always passes). A setting given in both
        takes the ``model_args`` value (lm-eval's base class would raise ``TypeError: got
        multiple values``)."""
        merged = dict(arg_dict)
        for key, value in (additional_config or {}).items():
            if value is None:
                continue
            if key in merged:
                if str(merged[key]) != str(value):
                    logger.info(
                        "%s=%s from model_args is used (lm-eval's own %s is %s)",
                        key, merged[key], key, value,
                    )  # fmt: skip
                continue
            merged[key] = value
        if not merged.get("pretrained"):
            raise ConfigError(
                "the proseco model needs a model directory: add --model_args "
                "pretrained=MODEL_DIR (e.g. pretrained=runs/sft/final,preset=balanced)"
            )
        return cls(**merged)

    @staticmethod
    def _batch_size(value: Any) -> int:
        if isinstance(value, str) and value.startswith("auto"):
            raise ConfigError(
                "batch_size=auto is not supported by the proseco model; pass --batch_size N"
            )
        return _int_arg("batch_size", value, 1)

    @staticmethod
    def _split_overrides(sampling: dict[str, Any]) -> dict[str, Any]:
        """Model arguments that are sampling settings; corrector shortcuts under ``"corrector:"``."""
        sampling = dict(sampling)
        corrector = {v: sampling.pop(k) for k, v in _CORRECTOR_SHORTCUTS.items() if k in sampling}
        unknown = [k for k in sampling if k not in _SAMPLING_FIELDS]
        if unknown:
            raise ConfigError(
                f"unknown proseco model argument(s) {unknown}; use sampling settings "
                f"{list(_SAMPLING_FIELDS)}, {list(_CORRECTOR_SHORTCUTS)} or the arguments listed "
                "in proseco.eval.harness"
            )
        if corrector:
            sampling["corrector:"] = corrector
        return sampling

    def config_for(self, length: int) -> SamplingConfig:
        """The sampling config for answers of ``length`` tokens (presets depend on the length).

        Saved config (or ``sampling_config=``), then the preset's fields for ``length`` with
        ``stop_at_eos=True`` (as the paper's harness), then the model-argument overrides; EOS
        and pad ids come from the tokenizer when unset.
        """
        if length in self._configs:
            return self._configs[length]
        config = self._saved
        fill: dict[str, Any] = {}
        if config.eos_id is None:
            fill["eos_id"] = self.ids["eos"]
        if config.pad_id is None and self.ids["pad"] is not None:
            fill["pad_id"] = self.ids["pad"]
        if self.preset:
            from proseco.sampling.presets import apply_preset

            config = apply_preset(config, self.preset, length=length)
            fill["stop_at_eos"] = fill.get("eos_id", config.eos_id) is not None
        overrides = dict(self._overrides)
        corrector = overrides.pop("corrector:", None)
        if corrector:
            current = config.corrector.to_dict() if config.corrector is not None else {}
            overrides["corrector"] = Corrector.from_dict({**current, **corrector})
        config = config.replace(**{**fill, **overrides})
        self._configs[length] = config
        return config

    # -- lm-eval's tokenisation interface -------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.ids["eos"]

    @property
    def prefix_token_id(self) -> int:
        return self.ids["bos"]

    @property
    def max_length(self) -> int:
        """Longest sequence (prompt + answer) fed to the model."""
        if self._max_length is not None:
            return self._max_length
        return model_max_length(self.model) or 4096

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs
    ) -> list[int]:
        return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The tokenizer's chat template as text (lm-eval's ``--apply_chat_template``)."""
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _with_bos(self, ids: list[int]) -> list[int]:
        bos = self.ids["bos"]
        if self.add_bos and bos is not None and (not ids or ids[0] != bos):
            return [bos, *ids]
        return list(ids)

    def _prompt(self, context: str) -> list[int]:
        """A generation prompt: as SFT laid prompts out (``chat_template``), else BOS + text."""
        if self.prompt_layout is not None:
            from proseco.data.text import prompt_ids

            return prompt_ids(self.tokenizer, context, self.prompt_layout)
        return self._with_bos(self.tok_encode(context))

    def _generator(self, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)

    # -- generation -----------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Answer each ``(context, gen_kwargs)`` request; batches share stop strings and length.

        Prompts are left-padded; each answer is cut at the first EOS, then at the first ``until``
        string.
        """
        answers: list[str | None] = [None] * len(requests)
        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        prompts = []
        for i, request in enumerate(requests):
            context, gen_kwargs = request.args
            until, length = self._generation_settings(gen_kwargs)
            prompts.append(self._prompt(context))
            groups.setdefault((until, length), []).append(i)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="proseco generate")
        for (until, length), members in groups.items():
            members.sort(key=lambda i: -len(prompts[i]))  # similar lengths share a batch
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                texts = self._generate_batch([prompts[i] for i in batch], until, length)
                for i, text in zip(batch, texts):
                    answers[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(batch))
        bar.close()
        self._report("generate_until")
        return answers  # type: ignore[return-value]

    def generate(
        self,
        contexts: Sequence[str],
        until: Sequence[str] = (),
        max_gen_toks: int | None = None,
        disable_tqdm: bool = True,
    ) -> list[str]:
        """Answers to plain prompts, without lm-eval requests (same batching, cuts and stats)."""
        kwargs = {"until": list(until), "max_gen_toks": max_gen_toks or self.max_gen_toks}
        requests = [SimpleNamespace(args=(context, kwargs)) for context in contexts]
        return self.generate_until(requests, disable_tqdm=disable_tqdm)

    def _generation_settings(self, gen_kwargs: Any) -> tuple[tuple[str, ...], int]:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.get("until") or ()
        if isinstance(until, str):
            until = (until,)
        if not isinstance(until, (list, tuple)) or not all(isinstance(u, str) for u in until):
            raise ConfigError(
                f"gen_kwargs 'until' must be a string or a list of strings: {until!r}"
            )
        length = _int_arg("max_gen_toks", kwargs.get("max_gen_toks", self.max_gen_toks), 1)
        return tuple(until), length

    def _generate_batch(self, prompts: list[list[int]], until: tuple[str, ...], length: int):
        config = self.config_for(length)
        decoded = length  # a block_length that does not divide it makes the last block shorter
        room = self.max_length - decoded
        if room < 1:
            raise ConfigError(
                f"max_gen_toks={length} leaves no room for a prompt within "
                f"max_length={self.max_length}; lower max_gen_toks"
            )
        prompts = [p[-room:] for p in prompts]  # keep the end of over-long prompts
        out = sample(
            self.model,
            config,
            prompt=prompts,
            length=decoded,
            mask_id=self.mask_id,
            generator=self._generator(self.stats.generate_requests),
        )
        rows = out.generated[:, :length].tolist()
        self._answers_by_length[length] = self._answers_by_length.get(length, 0) + len(prompts)
        s = self.stats
        s.generate_requests += len(prompts)
        s.generate_nfe += int(getattr(out, "model_calls", 0) or out.nfe)
        s.generate_row_nfe += float(out.nfe) * len(prompts)  # out.nfe: per sample
        s.generate_seconds += out.wall_time
        s.generated_positions += len(prompts) * decoded
        texts = []
        eos = self.ids["eos"]
        for ids in rows:
            if eos is not None and eos in ids:
                ids = ids[: ids.index(eos)]
            s.answer_tokens += len(ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            texts.append(text)
        return texts

    # -- likelihoods ----------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        results = []
        for key, context, continuation in tqdm(
            requests, disable=disable_tqdm, desc="proseco loglikelihood"
        ):
            result = self._score(self._with_bos(list(context)), list(continuation),
                                 self.check_greedy)  # fmt: skip
            results.append(result)
            self.cache_hook.add_partial("loglikelihood", key, result)
        self._report("loglikelihood")
        return results

    def _score(self, context: list[int], target: list[int], greedy: bool) -> tuple[float, bool]:
        """ELBO estimate of ``target`` after ``context`` and whether greedy decoding gives it."""
        if len(target) >= self.max_length:
            raise DataError(
                f"a continuation of {len(target)} tokens does not fit max_length="
                f"{self.max_length}; raise max_length or score shorter continuations"
            )
        room = self.max_length - len(target)
        context = context[-room:] if len(context) > room else context  # keep the context's end
        started = time.perf_counter()
        salt = 7_919 * (self.stats.loglikelihood_requests + 1)
        value, passes = elbo_loglikelihood(
            self.model,
            context,
            target,
            mask_id=self.mask_id,
            mc_num=self.mc_num,
            mc_batch_size=self.mc_batch_size,
            generator=self._generator(salt),
            conditioning=self.sampling_config.conditioning,
        )
        is_greedy = False
        if greedy and target:
            out = sample(
                self.model,
                SamplingConfig(unmasking="confidence", temperature=0.0, steps=len(target),
                               conditioning=self.sampling_config.conditioning),
                prompt=torch.tensor([context], dtype=torch.long),
                length=len(target),
                mask_id=self.mask_id,
            )  # fmt: skip
            is_greedy = out.generated[0].tolist() == target
            passes += int(getattr(out, "model_calls", 0) or out.nfe)
        self.stats.loglikelihood_requests += 1
        self.stats.loglikelihood_nfe += passes
        self.stats.loglikelihood_seconds += time.perf_counter() - started
        return value, is_greedy

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """ELBO of whole documents, split into lm-eval's disjoint rolling windows of
        ``max_length`` tokens; each window's ELBO given the window before it, summed."""
        results = []
        for request in tqdm(requests, disable=disable_tqdm, desc="proseco rolling"):
            (string,) = request.args
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length - 1,
                context_len=1,
            )
            total = 0.0
            for context, target in map(make_disjoint_window, windows):
                total += self._score(list(context), list(target), greedy=False)[0]
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        self._report("loglikelihood_rolling")
        return results

    # -- reporting ------------------------------------------------------------------------------
    def get_model_info(self) -> dict[str, Any]:
        """Added by lm-eval to its results JSON (``config``): settings and compute spent.

        ``sampling_config`` is the config answers were decoded with, with its ``length``
        (the most common answer length when tasks asked for several; every one is in
        ``sampling_configs_by_length``); before any answer, the one for ``max_gen_toks``.
        """
        used = self.max_gen_toks
        if self._answers_by_length:
            used = max(self._answers_by_length, key=lambda n: (self._answers_by_length[n], -n))
        return {
            "proseco": {
                "pretrained": self.pretrained_name,
                "preset": self.preset,
                "chat_template": self.prompt_layout,
                "sampling_config": {**self.config_for(used).to_dict(), "length": used},
                "answers_by_length": {
                    str(n): c for n, c in sorted(self._answers_by_length.items())
                },
                "sampling_configs_by_length": {
                    str(n): c.to_dict() for n, c in sorted(self._configs.items())
                },
                "mc_num": self.mc_num,
                "stats": self.stats.to_dict(),
            }
        }

    def _report(self, what: str) -> None:
        stats = self.stats.to_dict()
        if what == "generate_until":
            logger.info(
                "proseco generate_until: %d answers, %.1f NFE/answer, %.1f tokens/s",
                stats["generate_requests"], stats["nfe_per_answer"] or 0.0,
                stats["tokens_per_second"] or 0.0,
            )  # fmt: skip
        else:
            logger.info(
                "proseco %s: %d requests, %d forward passes, %.1f s", what,
                stats["loglikelihood_requests"], stats["loglikelihood_nfe"],
                stats["loglikelihood_seconds"],
            )  # fmt: skip
        if self.stats_path is not None:
            with atomic_open(self.stats_path) as f:
                f.write(json.dumps(self.get_model_info()["proseco"], indent=2) + "\n")
