"""OpenAI request bodies -> :class:`Job` (validated), and the response / chunk JSON.

Only plain Python here (no web framework), so every check is testable on its own. A bad request
raises :class:`RequestError`, which the app turns into OpenAI's error JSON::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
               "code": null}}

ProSeCo's decoding knobs are extra body fields (``openai`` clients send them with
``extra_body={...}``): ``preset``, ``steps``, ``block_length``, ``unmasking``, ``cache``,
``corrector_steps``, ``corrector_every``, ``top_k``, ``ignore_eos`` — next to the standard ``temperature``,
``top_p``, ``seed``, ``max_tokens``, ``stop``, ``n``. Each is validated by
:class:`~proseco.SamplingConfig` (or :class:`~proseco.Corrector`) and a failure names the field.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from proseco.errors import ConfigError, ProsecoError

__all__ = ["Job", "RequestError", "parse_chat", "parse_completion", "error_body", "MAX_N"]

MAX_N = 16
"""Most choices (``n``) one request may ask for."""

# request field -> SamplingConfig field
_CONFIG_FIELDS = {
    "steps": "steps",
    "block_length": "block_length",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "unmasking": "unmasking",
    "cache": "cache",
}
# accepted only at their "off" value: anything else would be silently ignored
_UNSUPPORTED = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "tools": (None, []),
    "functions": (None, []),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
}


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` with OpenAI's error JSON."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str | None = None, type: str = "invalid_request_error") -> None:  # fmt: skip
        super().__init__(message)
        self.message, self.param, self.status, self.code, self.type = (
            message, param, status, code, type
        )  # fmt: skip

    def body(self) -> dict[str, Any]:
        return error_body(self.message, param=self.param, code=self.code, type=self.type)


def error_body(message: str, *, param: str | None = None, code: str | None = None,
               type: str = "invalid_request_error") -> dict[str, Any]:  # fmt: skip
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class Job:
    """One request waiting for (or in) a batch: its rows share settings.

    ``events`` receives ``("text", row, delta)`` per block and streamed row (when ``stream``),
    then ``("done", results, None)`` or ``("error", exception, None)``; :attr:`post` is how the
    worker thread puts them (set by the app: ``loop.call_soon_threadsafe``).
    """

    kind: str  # "chat" or "completion"
    prompts: list[list[int]]  # one per row (n copies of a chat prompt; completions: per prompt)
    choices_per_prompt: int
    config: Any
    length: int
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    model: str
    ignore_eos: bool = False
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    cancelled: threading.Event = field(default_factory=threading.Event)
    post: Any = None
    key: Any = None

    def __post_init__(self) -> None:
        prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
        self.id = self.id or f"{prefix}-{uuid.uuid4().hex[:24]}"
        if self.key is None:
            # rows batch together when they decode with the same settings and length; a seeded
            # request runs alone, so that its seed alone fixes its tokens
            alone = self.id if self.seed is not None else None
            self.key = (self.config.to_json(), self.length, self.ignore_eos, alone)

    def send(self, kind: str, a: Any = None, b: Any = None) -> None:
        if self.post is not None:
            self.post((kind, a, b))


def _field(body: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise RequestError(f"'{name}' must be {what}, got {value!r}", param=name)
    return value


def _int(body: dict[str, Any], name: str, minimum: int | None = None) -> int | None:
    value = _field(body, name, (int,), "an integer")
    if value is not None and minimum is not None and value < minimum:
        raise RequestError(f"'{name}' must be >= {minimum}, got {value}", param=name)
    return value


def _check_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for name, allowed in _UNSUPPORTED.items():
        if name in body and body[name] not in allowed:
            raise RequestError(f"'{name}' is not supported by this server", param=name)
    return body


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        return tuple(s for s in stop if s)
    raise RequestError("'stop' must be a string or a list of at most 4 strings", param="stop")


def _adjust(body: dict[str, Any], ignore_eos: bool = False):
    """``config -> config`` with the request's decoding fields (each validated on its own);
    ``ignore_eos`` (as vLLM's) decodes all ``max_tokens`` positions, for benchmarks."""
    from proseco.sampling import Corrector

    changes = {k: body[k] for k in _CONFIG_FIELDS if body.get(k) is not None}
    steps, every = body.get("corrector_steps"), body.get("corrector_every")
    for name, value in (("corrector_steps", steps), ("corrector_every", every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise RequestError(f"'{name}' must be an integer, got {value!r}", param=name)

    def adjust(config: Any) -> Any:
        for name, value in changes.items():
            try:
                config = config.replace(**{_CONFIG_FIELDS[name]: value})
            except ConfigError as err:
                raise RequestError(str(err), param=name) from None
        if ignore_eos:
            config = config.replace(stop_at_eos=False)
        if steps is None and every is None:
            return config
        if steps == 0:
            return config.replace(corrector=None)
        base = config.corrector
        if base is None and steps is None:
            raise RequestError(
                "'corrector_every' needs a corrector: add 'corrector_steps'",
                param="corrector_every",
            )
        given = {k: v for k, v in (("steps", steps), ("every", every)) if v is not None}
        try:
            corrector = Corrector(**{**(base.to_dict() if base else {}), **given})
        except ConfigError as err:
            param = "corrector_steps" if steps else "corrector_every"
            raise RequestError(str(err), param=param) from None
        return config.replace(corrector=corrector)

    return adjust


def _common(body: dict[str, Any], engine: Any, prompts: list[list[int]], kind: str,
            n: int) -> Job:  # fmt: skip
    """Settings shared by both endpoints, checked against the model."""
    model = body.get("model")
    if model is not None and model != engine.name:
        raise RequestError(
            f"The model '{model}' does not exist; this server serves '{engine.name}'",
            param="model", status=404, code="model_not_found",
        )  # fmt: skip
    names = ("max_completion_tokens", "max_tokens") if kind == "chat" else ("max_tokens",)
    name = next((k for k in names if body.get(k) is not None), names[-1])
    max_tokens = _int(body, name, 1)
    preset = _field(body, "preset", (str,), "a preset name")
    seed = _int(body, "seed")
    stream = _field(body, "stream", (bool,), "true or false") or False
    options = _field(body, "stream_options", (dict,), "an object") or {}
    include_usage = bool(options.get("include_usage", False))
    stop = _stop(body)
    ignore_eos = bool(_field(body, "ignore_eos", (bool,), "true or false"))
    adjust = _adjust(body, ignore_eos)
    width = max(len(p) for p in prompts)
    try:
        config, length = engine.plan(width, max_tokens, preset, adjust)
        engine.check(config, prompts, length)
    except RequestError:
        raise
    except ConfigError as err:
        param = "preset" if "preset" in str(err) and preset is not None else None
        if param is None and "max" in str(err) and "tokens" in str(err):
            param = name if max_tokens is not None else "messages"
        raise RequestError(str(err), param=param) from None
    except ProsecoError as err:
        raise RequestError(str(err)) from None
    rows = [p for p in prompts for _ in range(n)]
    return Job(kind=kind, prompts=rows, choices_per_prompt=n, config=config, length=length,
               seed=seed, stop=stop, stream=stream,
               include_usage=include_usage, model=engine.name,
               ignore_eos=ignore_eos)  # fmt: skip


def _n(body: dict[str, Any]) -> int:
    n = _int(body, "n", 1)
    if n is not None and n > MAX_N:
        raise RequestError(f"'n' must be <= {MAX_N}, got {n}", param="n")
    return n or 1


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise RequestError(
                    f"messages[{i}].content: only text parts are supported", param="messages"
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    if content is None and message.get("role") == "assistant":
        return ""
    raise RequestError(f"messages[{i}].content must be a string", param="messages")


def parse_chat(body: Any, engine: Any) -> Job:
    """A ``POST /v1/chat/completions`` body as a :class:`Job`."""
    body = _check_body(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object", param="messages")
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise RequestError(
                f"messages[{i}].role must be system, user or assistant, got {role!r}",
                param="messages",
            )
        chat.append({"role": role, "content": _content(message, i)})
    if chat[-1]["role"] != "user":
        raise RequestError("the last message must be a user turn", param="messages")
    try:
        prompt = engine.format.chat(chat)
    except ProsecoError as err:
        raise RequestError(str(err), param="messages") from None
    except Exception as err:  # a chat template that rejects the conversation
        raise RequestError(f"the chat template cannot format these messages: {err}",
                           param="messages") from None  # fmt: skip
    return _common(body, engine, [prompt], "chat", _n(body))


def _prompts(value: Any, engine: Any) -> list[list[int]]:
    def ids(p: list[Any]) -> list[int]:
        if not p or not all(isinstance(i, int) and not isinstance(i, bool) for i in p):
            raise RequestError("token prompts must be non-empty lists of integers", param="prompt")
        return engine.format.completion(p)

    if isinstance(value, str):
        return [engine.format.completion(value)]
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            return [engine.format.completion(p) for p in value]
        if all(isinstance(p, int) and not isinstance(p, bool) for p in value):
            return [ids(value)]
        if all(isinstance(p, list) for p in value):
            return [ids(p) for p in value]
    raise RequestError(
        "'prompt' must be a string, a list of strings, a list of token ids or a list of such "
        "lists", param="prompt",
    )  # fmt: skip


def parse_completion(body: Any, engine: Any) -> Job:
    """A ``POST /v1/completions`` body as a :class:`Job` (one prompt or several)."""
    body = _check_body(body)
    prompts = _prompts(body.get("prompt"), engine)
    if len(prompts) * _n(body) > 4 * MAX_N:
        raise RequestError(f"at most {4 * MAX_N} prompts x n per request", param="prompt")
    return _common(body, engine, prompts, "completion", _n(body))


# -- responses ---------------------------------------------------------------------------------


def usage(results: list[Any]) -> dict[str, int]:
    """OpenAI ``usage`` plus ``nfe`` (model evaluations the request's rows took part in)."""
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "nfe": sum(r.nfe for r in results),
        "denoiser_nfe": sum(r.denoiser_nfe for r in results),
        "corrector_nfe": sum(r.corrector_nfe for r in results),
    }


def _prompt_usage(job: Job, results: list[Any]) -> list[Any]:
    """Results with the prompt counted once per prompt (not once per choice)."""
    n = job.choices_per_prompt
    return [r if i % n == 0 else _no_prompt(r) for i, r in enumerate(results)]


def _no_prompt(result: Any) -> Any:
    import dataclasses

    return dataclasses.replace(result, prompt_tokens=0)


def response(job: Job, results: list[Any]) -> dict[str, Any]:
    """The non-streaming response body."""
    if job.kind == "chat":
        choices = [
            {"index": i, "message": {"role": "assistant", "content": r.text},
             "finish_reason": r.finish_reason, "logprobs": None}
            for i, r in enumerate(results)
        ]  # fmt: skip
        obj = "chat.completion"
    else:
        choices = [
            {"index": i, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
            for i, r in enumerate(results)
        ]
        obj = "text_completion"
    return {"id": job.id, "object": obj, "created": job.created, "model": job.model,
            "choices": choices, "usage": usage(_prompt_usage(job, results))}  # fmt: skip


def chunk(job: Job, index: int, text: str | None, finish_reason: str | None = None,
          role: bool = False) -> dict[str, Any]:  # fmt: skip
    """One streamed chunk for choice ``index``."""
    if job.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "finish_reason": finish_reason,
                  "logprobs": None}  # fmt: skip
        obj = "text_completion"
    return {"id": job.id, "object": obj, "created": job.created, "model": job.model,
            "choices": [choice]}  # fmt: skip


def usage_chunk(job: Job, results: list[Any]) -> dict[str, Any]:
    obj = "chat.completion.chunk" if job.kind == "chat" else "text_completion"
    return {"id": job.id, "object": obj, "created": job.created, "model": job.model,
            "choices": [], "usage": usage(_prompt_usage(job, results))}  # fmt: skip
