"""Table 1 of the paper at small scale: vanilla SFT vs ProSeCo SFT on synthetic reasoning tasks.

Two models trained with the same recipe and budget, differing only in ``loss.sc_weight``
(``sft-synth-vanilla-cpu``: 0, ``sft-synth-proseco-cpu``: 1), answer the held-out problems of
:mod:`proseco.data.synthetic` (addition with carries, sorting, 4x4 sudoku). Every model is decoded
with every setting below, greedily (temperature 0, LLaDA ``low_confidence`` = ``confidence``
unmasking), each task's prompts in one batch, the generated length = answer + EOS (8 or 16)::

    k tok/step                blocks of 8, k = 1, 2, 4, 8 tokens revealed per step, no corrector
    k tok/step + corrector    the same with ProSeCo corrector loops (S=2 calls, every step)
    preset fast|balanced|max  proseco.sampling.presets.preset(name, length=8 or 16)

An answer is right iff the generated text up to the first EOS solves the prompt
(:func:`proseco.data.synthetic.check_answer`, computed from the prompt). NFEs per answer are the
sampler's exact per-row model calls, averaged over the answers of all tasks.

The verdicts (rules fixed before the run). *ProSeCo* = the ProSeCo-SFT model decoded with
corrector loops (the ``+ corrector`` and preset rows); *vanilla* = the vanilla-SFT model decoded
without them (the four ``k tok/step`` rows), as in the paper's Table 1.

(a) *Beats vanilla at equal NFEs*: for each vanilla row, the best ProSeCo accuracy among rows with
    at most that row's NFEs; held iff it is strictly higher at every vanilla row where such a
    ProSeCo row exists (at least one).
(b) *Reaches vanilla's best accuracy with fewer NFEs*: ``v*`` = vanilla's best accuracy, ``n*``
    the fewest NFEs at which vanilla reaches it; held iff some ProSeCo row has accuracy ``>= v*``
    with fewer than ``n*`` NFEs.

Run (after training both models, from the repository root)::

    python benchmarks/sft.py                       # writes docs/results/sft.md, sft.png, sft_rows.json
    python benchmarks/sft.py --limit 20 --out /tmp/sft.md   # quick look
    python benchmarks/sft.py --from-json docs/results/sft_rows.json  # re-render only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from proseco.data.synthetic import TASKS, check_answer
from proseco.sampling import Corrector, SamplingConfig, sample
from proseco.sampling.presets import PRESETS, preset

BLOCK_LENGTH = 8
TOKENS_PER_STEP = (1, 2, 4, 8)
CORRECTOR = Corrector(steps=2, every=1)
MODELS = {
    "vanilla SFT": "runs/sft-synth-vanilla/final",
    "ProSeCo SFT": "runs/sft-synth-proseco/final",
}
VANILLA, PROSECO = "vanilla SFT", "ProSeCo SFT"
HELD, NOT_HELD, NOT_TESTABLE = "held", "did not hold", "not testable"


# --------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One decoding setting; ``config(length)`` builds its SamplingConfig for ``length`` tokens.

    Attributes:
        name: how the table names it.
        kind: ``plain`` (no corrector), ``corrector`` or ``preset``.
        tokens_per_step: ``k`` of the block rows; the preset name's regime otherwise.
    """

    name: str
    kind: str
    tokens_per_step: int | None = None

    def config(self, length: int) -> SamplingConfig:
        if self.kind == "preset":
            return preset(self.name.split()[-1], length=length)
        return SamplingConfig(
            steps=length // self.tokens_per_step,
            unmasking="confidence",
            temperature=0.0,
            block_length=BLOCK_LENGTH,
            corrector=CORRECTOR if self.kind == "corrector" else None,
        )

    @property
    def uses_corrector(self) -> bool:
        return self.kind != "plain"


def settings() -> list[Setting]:
    """The grid, in table order."""
    grid = [Setting(f"{k} tok/step", "plain", k) for k in TOKENS_PER_STEP]
    grid += [Setting(f"{k} tok/step + corrector", "corrector", k) for k in TOKENS_PER_STEP]
    grid += [Setting(f"preset {name}", "preset") for name in PRESETS]
    return grid


# --------------------------------------------------------------------- evaluation
def load_test(path: str | Path, limit: int | None = None) -> dict[str, list[dict[str, str]]]:
    """Test records grouped by task (at most ``limit`` per task), in file order."""
    groups: dict[str, list[dict[str, str]]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            group = groups.setdefault(record["task"], [])
            if limit is None or len(group) < limit:
                group.append(record)
    return {task: groups[task] for task in TASKS if task in groups}


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """``[N, P]`` ids laid out as in SFT training: ``[BOS] prompt`` (prompts of equal length)."""
    rows = [
        [tokenizer.bos_token_id, *tokenizer(p, add_special_tokens=False)["input_ids"]]
        for p in prompts
    ]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("prompts of one task must have the same length (no padding is used)")
    return torch.tensor(rows, dtype=torch.long)


def decode_answers(tokenizer: Any, generated: torch.Tensor) -> list[str]:
    """Generated ids ``[N, R]`` -> text before the first EOS (special tokens kept visible)."""
    eos = tokenizer.eos_token_id
    out = []
    for row in generated.tolist():
        row = row[: row.index(eos)] if eos in row else row
        out.append(tokenizer.decode(row))
    return out


def evaluate(
    model: Any, tokenizer: Any, groups: dict[str, list[dict[str, str]]], setting: Setting, seed: int
) -> dict[str, Any]:
    """Accuracy per task and overall, and NFEs per answer, of one model under one setting."""
    right: dict[str, int] = {}
    nfe_total, corrector_total, count, wall = 0.0, 0.0, 0, 0.0
    for task, records in groups.items():
        prompt = encode_prompts(tokenizer, [r["prompt"] for r in records])
        length = len(records[0]["response"]) + 1
        generator = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        out = sample(
            model, setting.config(length), mask_id=tokenizer.mask_token_id, prompt=prompt,
            length=length, generator=generator,
        )  # fmt: skip
        wall += time.perf_counter() - started
        answers = decode_answers(tokenizer, out.tokens[:, prompt.shape[1] :])
        right[task] = sum(check_answer(r, a) for r, a in zip(records, answers))
        nfe_total += float(out.nfe_per_row.sum())
        corrector_total += float(out.corrector_nfe_per_row.sum())
        count += len(records)
    row: dict[str, Any] = {"setting": setting.name, "kind": setting.kind}
    for task, records in groups.items():
        row[f"acc_{task}"] = right[task] / len(records)
    row["acc"] = sum(right.values()) / count
    row["n"] = count
    row["nfe"] = nfe_total / count
    row["corrector_nfe"] = corrector_total / count
    row["seconds"] = wall
    return row


def run_grid(
    models: dict[str, tuple[Any, Any]], groups: dict[str, list[dict[str, str]]], seed: int,
    grid: Sequence[Setting] | None = None, log=print,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every model under every setting: rows with ``model`` added."""
    rows = []
    for name, (model, tokenizer) in models.items():
        for setting in grid or settings():
            row = {"model": name, **evaluate(model, tokenizer, groups, setting, seed)}
            log(f"{name:12s} {setting.name:26s} acc {row['acc']:.3f}  NFE {row['nfe']:.2f}")
            rows.append(row)
    return rows


# --------------------------------------------------------------------- verdicts
def _is_proseco(row: dict[str, Any]) -> bool:
    return row["model"] == PROSECO and row["kind"] != "plain"


def _is_vanilla(row: dict[str, Any]) -> bool:
    return row["model"] == VANILLA and row["kind"] == "plain"


def judge_equal_nfe(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rule (a): ProSeCo's best accuracy within each vanilla row's NFEs, point by point."""
    pros = [r for r in rows if _is_proseco(r)]
    points = []
    for v in sorted((r for r in rows if _is_vanilla(r)), key=lambda r: r["nfe"]):
        within = [p for p in pros if p["nfe"] <= v["nfe"] + 1e-9]
        if not within:
            points.append({"vanilla": v, "proseco": None, "beats": None})
            continue
        best = max(within, key=lambda p: (p["acc"], -p["nfe"]))
        points.append({"vanilla": v, "proseco": best, "beats": best["acc"] > v["acc"]})
    compared = [p for p in points if p["beats"] is not None]
    verdict = NOT_TESTABLE if not compared else (
        HELD if all(p["beats"] for p in compared) else NOT_HELD
    )  # fmt: skip
    return {"verdict": verdict, "points": points}


def judge_fewer_nfe(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rule (b): ProSeCo reaches vanilla's best accuracy with fewer NFEs."""
    vanilla = [r for r in rows if _is_vanilla(r)]
    pros = [r for r in rows if _is_proseco(r)]
    if not vanilla or not pros:
        return {"verdict": NOT_TESTABLE, "best": None, "n_star": None, "match": None}
    best = max(r["acc"] for r in vanilla)
    n_star = min(r["nfe"] for r in vanilla if r["acc"] == best)
    reaching = [p for p in pros if p["acc"] >= best]
    match = min(reaching, key=lambda p: p["nfe"]) if reaching else None
    held = match is not None and match["nfe"] < n_star
    return {"verdict": HELD if held else NOT_HELD, "best": best, "n_star": n_star, "match": match}


# --------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> list[str]:
    head = ["model", "decoding", *[f"{t} %" for t in tasks], "all %", "NFE/answer", "corr. NFE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["setting"], *[_pct(r[f"acc_{t}"]) for t in tasks], _pct(r["acc"])]
        cells += [f"{r['nfe']:.2f}", f"{r['corrector_nfe']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Accuracy against NFEs per answer: one line per model and corrector use, presets as stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = {VANILLA: "tab:gray", PROSECO: "tab:green"}
    for model in (VANILLA, PROSECO):
        for kind, style, label in (
            ("plain", "--", "no corrector"),
            ("corrector", "-", "corrector S=2"),
        ):
            pts = sorted((r["nfe"], r["acc"]) for r in rows if r["model"] == model
                         and r["kind"] == kind)  # fmt: skip
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, [100 * y for y in ys], style, marker="o", color=colors[model],
                        label=f"{model}, {label}")  # fmt: skip
        pts = [(r["nfe"], r["acc"], r["setting"]) for r in rows
               if r["model"] == model and r["kind"] == "preset"]  # fmt: skip
        for i, (x, y, name) in enumerate(pts):
            ax.plot([x], [100 * y], "*", markersize=12, color=colors[model],
                    label=f"{model}, presets" if i == 0 else None)  # fmt: skip
            ax.annotate(name.split()[-1], (x, 100 * y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=colors[model])  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFEs per answer (log scale)")
    ax.set_ylabel("exact match, all tasks (%)")
    ax.set_title("Synthetic reasoning: vanilla SFT vs ProSeCo SFT")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def verdict_text(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = [
        f"**(a) ProSeCo SFT + ProSeCo sampling beats vanilla SFT at equal NFEs: {a['verdict']}.**",
        "",
    ]
    for p in a["points"]:
        v = p["vanilla"]
        if p["proseco"] is None:
            lines.append(f"- vanilla {v['setting']} ({_pct(v['acc'])}% at {v['nfe']:.2f} NFEs): no "
                         "ProSeCo row spends that few NFEs (not compared)")  # fmt: skip
        else:
            q = p["proseco"]
            word = "beats" if p["beats"] else "does not beat"
            lines.append(f"- vanilla {v['setting']}: {_pct(v['acc'])}% at {v['nfe']:.2f} NFEs; best "
                         f"ProSeCo within that budget, {q['setting']}: {_pct(q['acc'])}% at "
                         f"{q['nfe']:.2f} NFEs ({word} it)")  # fmt: skip
    lines += [
        "",
        f"**(b) ProSeCo reaches vanilla's best accuracy with fewer NFEs: {b['verdict']}.**",
        "",
    ]
    if b["best"] is not None:
        m = b["match"]
        reach = (f"ProSeCo first reaches it with {m['setting']} ({_pct(m['acc'])}% at "
                 f"{m['nfe']:.2f} NFEs, {b['n_star'] / m['nfe']:.2f}x fewer)" if m and
                 m["nfe"] < b["n_star"] else (f"ProSeCo reaches it only at {m['nfe']:.2f} NFEs "
                 f"({m['setting']})" if m else "no ProSeCo row reaches it"))  # fmt: skip
        lines.append(f"Vanilla's best: {_pct(b['best'])}% at {b['n_star']:.2f} NFEs; {reach}.")
    return lines


def write_report(
    rows: Sequence[dict[str, Any]], out: str | Path, meta: dict[str, Any], png_name: str
) -> str:
    """Write the markdown page; returns its text."""
    tasks = [t for t in TASKS if f"acc_{t}" in rows[0]]
    a, b = judge_equal_nfe(rows), judge_fewer_nfe(rows)
    lines = [
        "# Table 1 at small scale: vanilla SFT vs ProSeCo SFT on synthetic reasoning tasks",
        "",
        "Generated by `python benchmarks/sft.py` (issue 12, part 5); do not edit by hand.",
        "",
        "Two ~1 M-parameter DiTs trained from scratch with the same recipe, data and budget "
        "(`sft-synth-vanilla-cpu`: `loss.sc_weight: 0`; `sft-synth-proseco-cpu`: "
        "`loss.sc_weight: 1`), on the tasks of `proseco.data.synthetic`: 6-digit addition with "
        "carries (answer 7 digits), sorting 15 letters, and 4x4 sudoku with 7 blanks (answer: "
        "the 7 missing digits). Exact match on the held-out test problems (disjoint from "
        "training by prompt), greedy decoding, LLaDA confidence unmasking, blocks of 8; the "
        "generated length is the answer plus EOS. NFEs = model calls per answer (exact, "
        "averaged over all answers; sorting answers are twice as long, so cost twice as many "
        "steps). `corr. NFE` is the part spent in corrector loops (S=2 calls every step, early "
        "exit at a fixed point). Presets are `proseco.sampling.presets.preset(name, "
        "length=8 or 16)`. Training configs, metrics and logs (wall times) are in "
        "`sft_runs/`.",
        "",
        "## Settings",
        "",
        "```",
        *[f"{k}: {v}" for k, v in meta.items()],
        "```",
        "",
        "## Results",
        "",
        *table(rows, tasks),
        "",
        f"![accuracy vs NFE]({png_name})",
        "",
        "## Verdicts",
        "",
        "Rules fixed before the run (see the docstring of `benchmarks/sft.py`): *ProSeCo* = the "
        "ProSeCo-SFT model with corrector loops (corrector and preset rows); *vanilla* = the "
        "vanilla-SFT model without them.",
        "",
        *verdict_text(a, b),
        "",
        "## Observations",
        "",
        *observations(rows),
        "",
    ]
    text = "\n".join(lines)
    Path(out).write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------- main
def _load_models(paths: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    from proseco.pretrained import load_pretrained

    models = {}
    for name, path in paths.items():
        loaded = load_pretrained(path)
        models[name] = (loaded.model, loaded.tokenizer)
    return models


def _training_summary(path: str) -> str:
    run = Path(path).parent
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return path
    last = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    val = [m for m in last if m.get("split") == "validation"]
    steps = max((m.get("step", 0) for m in last), default=0)
    nelbo = ""
    if val and "nelbo" in val[-1]:
        nelbo = f", final validation NELBO {val[-1]['nelbo']:.3f}"
        if "corrector_nll" in val[-1]:
            nelbo += f", corrector NLL on argmax drafts {val[-1]['corrector_nll']:.2f}"
    batch = ""
    if (run / "config.yaml").is_file():
        import yaml

        train = yaml.safe_load((run / "config.yaml").read_text()).get("train", {})
        batch = f" x {train.get('global_batch_size')} sequences"
    return f"{path} ({steps} steps{batch}{nelbo})"


def _preset_summary(name: str) -> str:
    c = preset(name, length=8)
    return (f"{name}: steps {c.steps}, block {c.block_length}, corrector S={c.corrector.steps} "
            f"every {c.corrector.every}")  # fmt: skip


def observations(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Plain facts read off the rows: each model's best accuracy with and without correctors."""
    lines = []
    for model in (VANILLA, PROSECO):
        mine = [r for r in rows if r["model"] == model]
        plain = [r for r in mine if r["kind"] == "plain"]
        corr = [r for r in mine if r["kind"] != "plain"]
        if not plain or not corr:
            continue
        bp, bc = max(plain, key=lambda r: r["acc"]), max(corr, key=lambda r: r["acc"])
        lines.append(
            f"- {model}: best without corrector {_pct(bp['acc'])}% ({bp['setting']}, "
            f"{bp['nfe']:.2f} NFEs); best with corrector loops {_pct(bc['acc'])}% "
            f"({bc['setting']}, {bc['nfe']:.2f} NFEs)."
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vanilla", default=MODELS[VANILLA], help="vanilla-SFT model directory")
    parser.add_argument("--proseco", default=MODELS[PROSECO], help="ProSeCo-SFT model directory")
    parser.add_argument("--test", default="runs/synth/test.jsonl", help="synthetic test JSONL")
    parser.add_argument("--limit", type=int, default=None, help="test problems per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results/sft.md", help="markdown page to write")
    parser.add_argument(
        "--from-json", help="re-render the page and plot from a saved sft_rows.json (no decoding)"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        _write_outputs(saved["rows"], saved["settings"], Path(args.out))
        return 0
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    groups = load_test(args.test, args.limit)
    if not groups:
        print(f"sft.py: error: no test records in {args.test}", file=sys.stderr)
        return 2
    paths = {VANILLA: args.vanilla, PROSECO: args.proseco}
    meta = {
        "models": "; ".join(f"{k}: {_training_summary(v)}" for k, v in paths.items()),
        "test": f"{args.test}: " + ", ".join(f"{t} {len(r)}" for t, r in groups.items()),
        "decoding": f"temperature 0, confidence unmasking, block_length {BLOCK_LENGTH}, "
        f"corrector {CORRECTOR.to_dict()}",
        "presets (length 8)": "; ".join(_preset_summary(n) for n in PRESETS),
        "seed / threads": f"{args.seed} / {args.threads}",
        "torch": torch.__version__,
    }
    for k, v in meta.items():
        print(f"{k}: {v}")
    started = time.perf_counter()
    rows = run_grid(_load_models(paths), groups, args.seed)
    meta["benchmark wall time"] = f"{time.perf_counter() - started:.0f} s"
    _write_outputs(rows, meta, Path(args.out))
    return 0


def _write_outputs(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    """``out`` (markdown), its plot ``.png`` and ``_rows.json`` (rows and settings)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(rows, png)
    saved = {"settings": meta, "rows": rows}
    out.with_name(out.stem + "_rows.json").write_text(json.dumps(saved, indent=1) + "\n")
    text = write_report(rows, out, meta, png.name)
    print(text[text.index("## Verdicts") :])


if __name__ == "__main__":
    raise SystemExit(main())
