"""Talking to a model: prompt formatting as SFT trained it, streaming generation, and an
OpenAI-compatible server (``proseco generate`` / ``chat`` / ``serve``).

* :mod:`proseco.serving.engine` — :class:`Engine` (model + tokenizer + decoding settings),
  :class:`PromptFormat`, :func:`load_engine`.
* :mod:`proseco.serving.protocol` — OpenAI request parsing and response JSON (no web framework).
* :mod:`proseco.serving.batcher` — the worker thread that batches concurrent requests.
* :mod:`proseco.serving.app` — :func:`create_app`, the FastAPI app (``pip install
  "proseco[serve]"``; imported only when used).
"""

from proseco.serving.engine import Engine, GenerationResult, PromptFormat, load_engine

__all__ = ["Engine", "GenerationResult", "PromptFormat", "create_app", "load_engine"]


def create_app(*args, **kwargs):
    """:func:`proseco.serving.app.create_app` (imports FastAPI on first use)."""
    from proseco.serving.app import create_app as _create_app

    return _create_app(*args, **kwargs)
