"""``proseco generate MODEL_DIR "prompt"``: answer one prompt, streaming the text as blocks finish.

The prompt is laid out exactly as SFT trained the model (:class:`proseco.serving.PromptFormat`:
the tokenizer's chat template when it has one, else ``[BOS] prompt``; ``--chat-template none``
forces the latter). Decoding settings are those of ``proseco sample`` — the model's saved
``sampling_config.json`` (or ``--config``) < ``--preset`` < flags — with the tokenizer's EOS
filled in and ``--stop-at-eos`` on by default. Text goes to stdout block by block; the last line
(stderr) gives the model evaluations (NFE) and tokens/s::

    proseco generate runs/sft-tiny/final "What is 7 + 10?" --preset fast --max-new-tokens 32

``--show-steps`` prints, after each block, every denoising step of it: revealed tokens as
``[x]``, corrector rewrites as ``{old>new}``, re-masked ones as ``<x>`` (colours on a terminal).
ProSeCo's corrector may rewrite text of earlier blocks after it was printed; the final answer is
then printed again after a ``[revised by the corrector]`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, TextIO

from proseco.errors import ConfigError

__all__ = ["add_arguments", "add_answer_arguments", "add_model_arguments", "run", "Session"]

# groups of `proseco sample`'s parser that generate, chat and serve share (matched by title)
_SHARED_GROUPS = ("decoding", "ProSeCo corrector", "guidance and conditioning", "runtime")
_SHARED_OPTIONS = ("mask_id", "config", "seed")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL_DIR and the decoding / runtime flags of ``proseco sample`` (the same actions, so
    the spelling and meaning of every flag stay the same), plus ``--chat-template``."""
    from proseco.commands import sample

    parser.add_argument("model_dir", help="a save_pretrained model directory (or a hub name)")
    source = argparse.ArgumentParser(add_help=False)
    sample.add_arguments(source)
    for action in source._actions:
        if action.dest in _SHARED_OPTIONS:
            if action.dest == "config":
                action.help = (
                    "a sampling_config.json, or a samples .jsonl of `proseco sample`, "
                    "to start from (default: MODEL_DIR's own sampling_config.json)"
                )
            parser._add_action(action)
    for group in source._action_groups:
        if not any(str(group.title).startswith(t) for t in _SHARED_GROUPS):
            continue
        target = parser.add_argument_group(group.title, group.description)
        for action in group._group_actions:
            if action.dest not in ("output", "num_samples", "batch_size", "length"):
                target._add_action(action)
    if "--chat-template" not in parser._option_string_actions:
        parser.add_argument(
            "--chat-template", default=None, choices=["auto", "none"],
            help="how prompts are laid out: auto = the tokenizer's chat template if it has one, "
            "none = [BOS] prompt (default: what the SFT run used, read from its config.yaml, "
            "else auto)",
        )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    add_answer_arguments(parser)


def add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("answer")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens to generate (default: 256, or what the model's length leaves)")  # fmt: skip
    g.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop when this text is produced (repeatable)")  # fmt: skip
    g.add_argument("--show-steps", action="store_true",
                   help="print every denoising step and corrector rewrite, block by block")  # fmt: skip
    g.add_argument("--color", action=argparse.BooleanOptionalAction, default=None,
                   help="colour --show-steps (default: when stdout is a terminal)")  # fmt: skip


def _check(args: argparse.Namespace) -> None:
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")


class Session:
    """A loaded model answering turns on a terminal (``generate`` and ``chat``)."""

    def __init__(self, args: argparse.Namespace, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:  # fmt: skip
        import torch

        from proseco.serving.engine import load_engine

        self.args = args
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.engine = load_engine(args)
        self.generator = torch.Generator(device=self.engine.device).manual_seed(args.seed)
        torch.manual_seed(args.seed)
        color = args.color
        self.color = self.out.isatty() if color is None else color

    def answer(self, prompt_ids: list[int]) -> str:
        """Generate the answer to ``prompt_ids``, streaming it; returns its final text."""
        engine, args = self.engine, self.args
        config, length = engine.plan(len(prompt_ids), args.max_new_tokens)
        engine.check(config, [prompt_ids], length)
        shown = [0]  # history records already printed

        def on_text(row: int, delta: str) -> None:
            if not args.show_steps:
                self.out.write(delta)
                self.out.flush()

        def on_steps(history: Any, width: int) -> None:
            self._print_steps(history, width, shown)

        started = time.perf_counter()
        (result,), out = engine.generate(
            [prompt_ids], config, length, generator=self.generator,
            stop=tuple(args.stop or ()), on_text=on_text,
            on_steps=on_steps if args.show_steps else None,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        if args.show_steps:
            self.out.write(result.text)
        elif result.revised:
            self.out.write(f"\n[revised by the corrector]\n{result.text}")
        else:
            self.out.write(result.unsent)
        self.out.write("\n")
        self.out.flush()
        tokens = result.completion_tokens
        rate = tokens / elapsed if elapsed > 0 else float("inf")
        print(
            f"[{tokens} tokens, NFE {result.nfe} ({result.denoiser_nfe} denoiser + "
            f"{result.corrector_nfe} corrector), {result.num_corrected} corrected, "
            f"{elapsed:.2f}s, {rate:.1f} tokens/s, {result.finish_reason}]",
            file=self.err,
        )
        return result.text

    def _print_steps(self, history: Any, width: int, shown: list[int]) -> None:
        """Print the history records not printed yet, generated positions only."""
        from proseco.sampling.output import SamplingHistory

        records = history.records[shown[0] :]
        if not records:
            return
        previous = history.records[shown[0] - 1].tokens if shown[0] else history.initial
        shown[0] = len(history.records)
        cut = [
            dataclasses.replace(
                r, tokens=r.tokens[:, width:], unmasked=r.unmasked[:, width:],
                corrected=r.corrected[:, width:], remasked=r.remasked[:, width:],
            )
            for r in records
        ]  # fmt: skip
        view = SamplingHistory(previous[:, width:], history.mask_id, 0, cut)
        tokenizer = self.engine.tokenizer
        text = view.render(lambda ids: tokenizer.decode(ids), color=self.color, mask_text="_",
                           only_changes=True)  # fmt: skip
        if text:
            self.out.write(text + "\n")
            self.out.flush()


def run(args: argparse.Namespace) -> int:
    """Answer ``args.prompt`` with ``args.model_dir``."""
    _check(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise ConfigError("the prompt is empty; pass some text (or '-' to read it from stdin)")
    session = Session(args)
    ids = session.engine.format.chat([{"role": "user", "content": prompt}])
    session.answer(ids)
    return 0
