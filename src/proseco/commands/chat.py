"""``proseco chat MODEL_DIR``: a conversation on the terminal, one user turn per input line.

Each line read from stdin is a user turn; the answer streams to stdout as blocks finish and the
conversation so far is the next prompt (laid out as SFT trained the model, see
``proseco generate``). When the conversation no longer fits the model's length, the oldest turns
are dropped. Commands: ``/reset`` forgets the conversation, ``/exit`` (or end of input) quits.
``--system TEXT`` opens the conversation with a system message. Every flag of
``proseco generate`` applies::

    proseco chat runs/sft-tiny/final --preset fast --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import sys

from proseco.commands.generate import Session, _check, add_answer_arguments, add_model_arguments
from proseco.errors import ProsecoError
from proseco.serving.engine import DEFAULT_MAX_TOKENS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_answer_arguments(parser)
    parser.add_argument("--system", default=None, help="a system message opening the chat")


def _fit(session: Session, messages: list[dict[str, str]]) -> list[int]:
    """Prompt ids of ``messages``, dropping the oldest turns until the answer has room."""
    engine = session.engine
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    while True:
        ids = engine.format.chat(system + turns)
        room = engine.room(len(ids))
        wanted = session.args.max_new_tokens or max(
            1, min(DEFAULT_MAX_TOKENS, (engine.max_length or 4) // 4)
        )
        if room is None or room >= wanted or len(turns) <= 1:
            return ids
        turns = turns[2:] if len(turns) > 2 else turns[-1:]


def run(args: argparse.Namespace) -> int:
    _check(args)
    session = Session(args)
    interactive = sys.stdin.isatty()
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = []
    if interactive:
        print(f"[{session.engine.name}: prompts as {session.engine.format.name}; /reset, /exit]",
              file=sys.stderr)  # fmt: skip
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() == "/exit":
            return 0
        if text.strip() == "/reset":
            history = []
            print("[conversation reset]", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        try:
            answer = session.answer(_fit(session, system + history))
        except ProsecoError as err:  # a turn that cannot be answered does not end the chat
            history.pop()
            if not interactive:
                raise
            print(f"proseco chat: error: {err}", file=sys.stderr)
            continue
        history.append({"role": "assistant", "content": answer})
