"""The OpenAI-compatible HTTP API (FastAPI on uvicorn; ``pip install "proseco[serve]"``).

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/completions``,
``POST /v1/chat/completions`` (``stream: true`` as server-sent events: a chunk per completed
block, then ``data: [DONE]``), ``GET /health`` and ``GET /v1/proseco/stats`` (batching counters).
Errors use OpenAI's JSON shape; a bad request is a 400 and never stops the server.

Streams and ProSeCo: the corrector may rewrite text of blocks already sent. A stream cannot take
text back, so a choice whose text changed after it was streamed ends with a chunk carrying
``"proseco": {"index": i, "revised": true, "text": FINAL}``; the non-streaming response always
has the final text.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request)
import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from proseco.errors import ConfigError, ProsecoError
from proseco.serving.batcher import Batcher
from proseco.serving.protocol import (
    Job,
    RequestError,
    chunk,
    error_body,
    parse_chat,
    parse_completion,
    response,
    usage_chunk,
)

__all__ = ["create_app", "require_serve_extra"]

log = logging.getLogger("proseco.serve")

_POLL_SECONDS = 0.25  # how often a waiting non-streaming request checks its client


def require_serve_extra() -> None:
    """Raise a one-line error when FastAPI / uvicorn are missing."""
    missing = []
    for name in ("fastapi", "uvicorn"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f'proseco serve needs {" and ".join(missing)}: pip install "proseco[serve]"'
        )


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data)}\n\n"


class _Gone(Exception):
    """The client of a non-streaming request disconnected."""


def _failure(err: BaseException) -> tuple[int, dict[str, Any]]:
    """Status and body for an error raised while sampling."""
    if isinstance(err, (ProsecoError, ValueError)):
        return 400, error_body(str(err))
    return 500, error_body(f"sampling failed: {type(err).__name__}: {err}", type="server_error")


def create_app(engine: Any, *, max_batch_size: int = 16, seed: int = 0,
               batching: bool = True) -> Any:  # fmt: skip
    """The FastAPI app serving ``engine`` (:class:`~proseco.serving.engine.Engine`).

    One worker thread (:class:`~proseco.serving.batcher.Batcher`, at ``app.state.batcher``)
    owns the model; it starts here and stops when the app shuts down.
    """
    require_serve_extra()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    batcher = Batcher(engine, max_batch_size=max_batch_size, seed=seed, batching=batching)

    @asynccontextmanager
    async def lifespan(_: Any):
        yield
        batcher.close()

    app = FastAPI(title="proseco", description="OpenAI-compatible ProSeCo server",
                  lifespan=lifespan)  # fmt: skip
    app.state.engine, app.state.batcher = engine, batcher
    created = int(time.time())

    def error(status: int, body: dict[str, Any]) -> Any:
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> Any:
        return error(err.status, err.body())

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, err: HTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return error(err.status_code, error_body(str(err.detail), code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> Any:
        return error(400, error_body(str(err)))

    @app.exception_handler(Exception)
    async def _server_error(_: Request, err: Exception) -> Any:
        log.exception("request failed")
        return error(500, error_body(f"{type(err).__name__}: {err}", type="server_error"))

    def model_card() -> dict[str, Any]:
        return {"id": engine.name, "object": "model", "created": created, "owned_by": "proseco"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> Any:
        if model_id != engine.name:
            raise RequestError(f"The model '{model_id}' does not exist", param="model",
                               status=404, code="model_not_found")  # fmt: skip
        return model_card()

    @app.get("/v1/proseco/stats")
    async def stats() -> dict[str, Any]:
        return batcher.stats.to_dict()

    async def body_of(request: Request) -> Any:
        try:
            return await request.json()
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(f"the request body is not valid JSON: {err}") from None

    def submit(job: Job) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def post(event: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is gone (shutting down)
                job.cancelled.set()

        job.post = post
        batcher.submit(job)
        return events

    async def wait(job: Job, events: asyncio.Queue, request: Request) -> list[Any]:
        while True:
            try:
                kind, value, _ = await asyncio.wait_for(events.get(), _POLL_SECONDS)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancelled.set()
                    raise _Gone() from None
                continue
            if kind == "done":
                return value
            if kind == "error":
                raise value

    async def stream(job: Job, events: asyncio.Queue):
        try:
            if job.kind == "chat":
                for i in range(len(job.prompts)):
                    yield _sse(chunk(job, i, "", role=True))
            while True:
                kind, a, b = await events.get()
                if kind == "text":
                    yield _sse(chunk(job, a, b))
                elif kind == "done":
                    for i, result in enumerate(a):
                        if result.unsent:
                            yield _sse(chunk(job, i, result.unsent))
                        last = chunk(job, i, None if job.kind == "chat" else "",
                                     finish_reason=result.finish_reason)  # fmt: skip
                        if result.revised:
                            last["proseco"] = {"index": i, "revised": True, "text": result.text}
                        yield _sse(last)
                    if job.include_usage:
                        yield _sse(usage_chunk(job, a))
                    break
                else:  # error
                    yield _sse(_failure(a)[1])
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # a client that left frees its rows; harmless once done

    async def answer(job: Job, request: Request) -> Any:
        events = submit(job)
        if job.stream:
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(stream(job, events), media_type="text/event-stream",
                                     headers=headers)  # fmt: skip
        try:
            results = await wait(job, events, request)
        except _Gone:
            return error(499, error_body("client closed the request", code="client_closed"))
        except Exception as err:
            return error(*_failure(err))
        return response(job, results)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await answer(parse_chat(await body_of(request), engine), request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await answer(parse_completion(await body_of(request), engine), request)

    return app
