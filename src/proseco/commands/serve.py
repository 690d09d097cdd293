"""``proseco serve MODEL_DIR``: an OpenAI-compatible HTTP server (``pip install "proseco[serve]"``).

FastAPI on uvicorn: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(``stream: true`` sends a server-sent event per completed block, then ``data: [DONE]``); every
response's ``usage`` adds ``nfe`` (model evaluations) to the token counts. ProSeCo's settings
are extra body fields (``preset``, ``steps``, ``block_length``, ``corrector_steps``,
``corrector_every``, ``unmasking``, ``top_k``), validated like the command line's; the decoding
flags below set the server's defaults (as for ``proseco generate``). Concurrent requests are
batched: those that arrive while a batch runs join the next one (``--max-batch-size`` rows)::

    proseco serve runs/sft-tiny/final --host 127.0.0.1 --port 8000 --preset fast

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="sft-tiny", max_tokens=32,
        messages=[{"role": "user", "content": "What is 7 + 10?"}], extra_body={"preset": "max"})

The model id is ``--model-name`` (default: the directory's name, its run's for ``final/``).
"""

from __future__ import annotations

import argparse
import sys

from proseco.commands.generate import add_model_arguments
from proseco.errors import ConfigError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    g = parser.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--model-name", default=None, help="the model id clients ask for")
    g.add_argument("--max-batch-size", type=int, default=16,
                   help="most rows (prompts x n) sampled together")  # fmt: skip
    g.add_argument("--no-batching", action="store_true",
                   help="one request per sampler call (sequential serving)")  # fmt: skip
    g.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from proseco.serving.app import create_app, require_serve_extra
    from proseco.serving.engine import load_engine

    require_serve_extra()  # before loading a model
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if args.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size must be >= 1, got {args.max_batch_size}")
    import uvicorn

    engine = load_engine(args, name=args.model_name)
    app = create_app(engine, max_batch_size=args.max_batch_size, seed=args.seed,
                     batching=not args.no_batching)  # fmt: skip
    print(
        f"serving {engine.name!r} (prompts as {engine.format.name}) on "
        f"http://{args.host}:{args.port}/v1",
        file=sys.stderr,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    except OSError as err:  # e.g. the port is taken
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {err}") from None
    return 0
