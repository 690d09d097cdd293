"""Why does the SFT corrector help? Two probes on issue 19's committed models (``sft_models/``).

1. *One-shot drafts*: every test answer decoded in a single step (all tokens at once, greedy), then
   the model called on the full draft up to 3 times, each call replacing every answer token by its
   argmax (the corrector's update, over the whole answer). Per call: wrong tokens, changed, fixed
   (wrong -> right), broken (right -> wrong), and exact-match accuracy.
2. *Rewrite vs sharpen*: a corrector loop does two things, it rewrites decoded tokens and its logits
   drive the next unmasking. Decoding at k tokens per step with ``S=1`` is run as usual and with the
   rewrites switched off (the loop's logits still drive the unmasking); the accuracy gap is what the
   rewrites alone are worth.

Run from the repository root (the committed page: ``--limit 500``, about 20 min on one core)::

    python benchmarks/sft_corrector_probe.py --limit 500 --out docs/results/sft_corrector_probe.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sft  # noqa: E402

from proseco.data.synthetic import check_answer  # noqa: E402
from proseco.models.protocol import call_model  # noqa: E402
from proseco.sampling import correctors, loop  # noqa: E402

CALLS = 3


def one_shot(model: Any, tok: Any, records: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """Probe 1 on one model: a row per corrector call (call 0 = the one-shot draft itself)."""
    length = len(records[0]["response"]) + 1
    out = sft.sample(
        model, sft.Setting(length).config(length), mask_id=tok.mask_token_id, length=length,
        prompt=sft.encode_prompts(tok, [r["prompt"] for r in records]), progress=False,
    )  # fmt: skip
    tokens, p = out.tokens.clone(), out.prompt_length
    judge = sft.token_judge(tok, records, p)

    def right() -> torch.Tensor:
        rows = [[judge(r, p + j, int(tokens[r, p + j])) for j in range(length)]
                for r in range(len(records))]  # fmt: skip
        return torch.tensor(rows)

    def accuracy() -> float:
        answers = sft.decode_answers(tok, tokens[:, p:])
        return sum(check_answer(r, a) for r, a in zip(records, answers)) / len(records)

    ok = right()
    rows = [{"call": 0, "wrong": int((~ok).sum()), "changed": 0, "fixed": 0, "broken": 0,
             "acc": accuracy()}]  # fmt: skip
    for call in range(1, CALLS + 1):
        with torch.no_grad():
            logits = call_model(model, tokens)
        logits[..., tok.mask_token_id] = float("-inf")
        new = tokens.clone()
        new[:, p:] = logits[:, p:].argmax(-1)
        changed = new != tokens
        tokens = new
        now = right()
        rows.append({"call": call, "wrong": int((~now).sum()), "changed": int(changed.sum()),
                     "fixed": int((changed[:, p:] & ~ok & now).sum()),
                     "broken": int((changed[:, p:] & ok & ~now).sum()), "acc": accuracy()})  # fmt: skip
        ok = now
    return rows


def _no_rewrites(run_corrector):
    """``run_corrector`` whose result keeps the input tokens (its logits are unchanged)."""

    def patched(*args, **kwargs):
        result = run_corrector(*args, **kwargs)
        xt = args[2]
        return correctors.CorrectorResult(xt.clone(), result.logits,
                                          torch.zeros_like(result.changed), result.calls,
                                          result.row_calls)  # fmt: skip

    return patched


def rewrite_vs_sharpen(model: Any, tok: Any, records: Sequence[dict[str, str]], k: int) -> dict:
    """Probe 2: accuracy at ``k`` tok/step without corrector, with it, and with it minus rewrites."""
    full = sft.evaluate(model, tok, records, sft.Setting(k, 1))
    with mock.patch.object(loop, "run_corrector", _no_rewrites(correctors.run_corrector)):
        sharpen = sft.evaluate(model, tok, records, sft.Setting(k, 1))
    plain = sft.evaluate(model, tok, records, sft.Setting(k))
    return {"k": k, "plain": plain["acc"], "corrector": full["acc"], "no_rewrites": sharpen["acc"],
            "nfe": full["nfe"], "changed": full["changed"]}  # fmt: skip


def _probe_descriptions() -> list[str]:
    """The docstring's numbered probe descriptions, one markdown line each."""
    text = __doc__.split("\n\n")[1].replace("\n2. ", "\n\n2. ")
    return [" ".join(part.split()) for part in text.split("\n\n")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=sft.MODELS_DIR)
    parser.add_argument("--tasks", default="fill,latin")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--limit", type=int, default=sft.N_TEST)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/results/sft_corrector_probe.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["# Why the SFT corrector helps: two probes", "",
             "Generated by `python benchmarks/sft_corrector_probe.py`; do not edit by hand.", "",
             *_probe_descriptions(), "",
             f"Models: `sft_models/`, tasks {args.tasks}, seeds {args.seeds}, first {args.limit} "
             "test problems per task; counts summed over seeds.", "",
             "## 1. One-shot drafts, then corrector calls", "",
             "| task | model | call | wrong tokens | changed | fixed | broken | exact match % |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    probe2 = ["", "## 2. Rewrites vs sharpening (S=1 before every step)", "",
              "| task | model | tok/step | no corrector % | corrector % | corrector without "
              "rewrites % | tokens rewritten |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    seeds = [int(s) for s in args.seeds.split(",")]
    for task in args.tasks.split(","):
        records = sft.test_problems(task, args.limit)
        for objective in sft.OBJECTIVES:
            totals: dict[int, dict[str, float]] = {}
            per_k: dict[int, list[dict]] = {}
            for seed in seeds:
                model, tok = sft.load_model(sft.model_dir(task, objective, seed, args.models))
                for row in one_shot(model, tok, records):
                    t = totals.setdefault(row["call"], {"wrong": 0, "changed": 0, "fixed": 0,
                                                        "broken": 0, "acc": 0.0})  # fmt: skip
                    for key in t:
                        t[key] += row[key] / (len(seeds) if key == "acc" else 1)
                if objective == "proseco":
                    for k in (4, 8):
                        per_k.setdefault(k, []).append(rewrite_vs_sharpen(model, tok, records, k))
                print(f"{task} {objective} seed {seed} done", flush=True)
            for call, t in totals.items():
                lines.append(f"| {task} | {sft.LABELS[objective]} | {call} | {t['wrong']:.0f} | "
                             f"{t['changed']:.0f} | {t['fixed']:.0f} | {t['broken']:.0f} | "
                             f"{100 * t['acc']:.1f} |")  # fmt: skip
            for k, rows in per_k.items():
                mean = {key: sum(r[key] for r in rows) / len(rows)
                        for key in ("plain", "corrector", "no_rewrites")}  # fmt: skip
                probe2.append(f"| {task} | {sft.LABELS[objective]} | {k} | "
                              f"{100 * mean['plain']:.1f} | {100 * mean['corrector']:.1f} | "
                              f"{100 * mean['no_rewrites']:.1f} | "
                              f"{sum(r['changed'] for r in rows)} |")  # fmt: skip
    text = "\n".join(lines + probe2) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
