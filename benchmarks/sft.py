"""Table 1 of the paper at small scale: vanilla SFT vs ProSeCo SFT, 3 seeds, 1000 problems a task.

Models (``benchmarks/sft_train.py`` trains and exports them; committed under
``docs/results/sft_models/TASK-OBJECTIVE-seedS/``): for each task of issue 19's study
(:data:`proseco.data.synthetic.STUDY_TASKS`: ``chain``, running sums mod 10, one right answer;
``fill``, 4x4 sudoku with 10 blanks, any valid completion) and each of 3 training seeds, a vanilla
SFT model (``sft-synth-vanilla-cpu``, ``loss.sc_weight 0``) and a ProSeCo SFT model
(``sft-synth-proseco-cpu``, ``sc_weight 1``): same data, budget and seed, only the corrector term
differs. Both use ``t_min 0.1`` (corrector weight ``1/t <= 10``).

Each model answers the task's first 1000 test problems (``generate_synthetic(0, 1000, seed=0)``,
the same split training held out) under every setting below, greedily (temperature 0, LLaDA
confidence unmasking), the whole answer + EOS as one block (``L`` = 16 for chain, 11 for fill)::

    k tok/step            k = 1, 2, 4, 8 tokens revealed per step (ceil(L / k) steps), no corrector
    k tok/step + S=s      the same with a corrector loop of up to s calls before every step
                          (early exit at a fixed point), s = 1, 3
    k tok/step + S=1 + F=1  (k = 4, 8) S=1 and one more corrector call on the finished answer
                          (``Corrector(final_steps=1)``; not in the paper's Algorithm 2)

An answer is right iff its text up to the first EOS solves the prompt
(:func:`proseco.data.synthetic.check_answer`). NFEs are the sampler's exact per-answer model calls.
Corrector diagnostics (:class:`proseco.CorrectorChanges`): tokens the corrector changed, fixed
(wrong -> right) and broke (right -> wrong); for ``fill`` a digit is right iff some valid completion
of the puzzle has it in that cell.

Statistics (fixed before the run). Accuracy = mean over seeds and problems; tasks pooled with equal
weight. 95 % intervals from a paired hierarchical bootstrap (2000 resamples: the 3 seeds, then the
problems, both with replacement, the same draws for every arm of a comparison). Three comparisons
at equal NFE: the *training effect* (ProSeCo vs vanilla model, both without corrector, same k), the
*sampling effect* (ProSeCo model with a corrector vs the same model without one, at the no-corrector
row with the fewest NFEs that are >= the corrector row's), and the *paper's comparison* (ProSeCo model
with a corrector vs the vanilla model without one, matched the same way). Verdicts on the pooled
rows; *ProSeCo* = any setting of the ProSeCo model, *vanilla* = the vanilla model without corrector:

(a) *ProSeCo beats vanilla at equal NFE*: at every vanilla row, the best ProSeCo row with at most its
    NFEs is better, with the interval of the difference above 0.
(b) *ProSeCo reaches vanilla's best accuracy with at most half its NFEs*: ``v*`` = vanilla's best row
    (``n*`` NFEs); some ProSeCo row with ``<= n* / 2`` NFEs has the interval of its difference to
    ``v*`` above -1 point (non-inferiority margin 1 point).

Run from the repository root::

    python benchmarks/sft.py                      # all models: docs/results/sft.md, .png, _rows.json,
                                                  # sft_summary.json (about 40 min on 2 cores)
    python benchmarks/sft.py --limit 50 --out /tmp/sft.md     # quick look
    python benchmarks/sft.py --from-json docs/results/sft_rows.json   # re-render only
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from proseco.data.synthetic import STUDY_TASKS, check_answer, generate_synthetic, latin_completions
from proseco.data.synthetic import _fill as fill_completions
from proseco.sampling import Corrector, SamplingConfig, sample
from proseco.sampling.inputs import model_device

PAGE_TASKS = ("fill", "latin")  # the tasks with committed models
OBJECTIVES = ("vanilla", "proseco")
LABELS = {"vanilla": "vanilla SFT", "proseco": "ProSeCo SFT"}
SEEDS = (0, 1, 2)
N_TEST = 1000
TOKENS_PER_STEP = (1, 2, 4, 8)
CORRECTOR_STEPS = (1, 3)
FINAL_STEPS = 1  # the F=1 rows: Corrector(final_steps=1), one more loop over the finished answer
MODELS_DIR = "docs/results/sft_models"
BOOTSTRAP = 2000
MARGIN_B = 0.01  # non-inferiority margin of verdict (b), as a fraction
HELD, NOT_HELD, NOT_TESTABLE = "held", "did not hold", "not testable"


# --------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One decoding setting: ``k`` tokens per step, corrector loop of ``s`` calls (0 = none)."""

    tokens_per_step: int
    corrector_steps: int = 0
    final_steps: int = 0

    @property
    def name(self) -> str:
        base = f"{self.tokens_per_step} tok/step"
        if self.corrector_steps:
            base += f" + S={self.corrector_steps}"
        return base + (f" + F={self.final_steps}" if self.final_steps else "")

    @property
    def uses_corrector(self) -> bool:
        return self.corrector_steps > 0

    def config(self, length: int) -> SamplingConfig:
        """The :class:`~proseco.SamplingConfig` for answers of ``length`` tokens (EOS included)."""
        corrector = None
        if self.corrector_steps:
            corrector = Corrector(steps=self.corrector_steps, every=1, final_steps=self.final_steps)
        return SamplingConfig(
            steps=math.ceil(length / self.tokens_per_step),
            unmasking="confidence",
            temperature=0.0,
            block_length=length,
            corrector=corrector,
        )


def settings() -> list[Setting]:
    """The grid, in table order: plain rows first, then corrector rows."""
    grid = [Setting(k) for k in TOKENS_PER_STEP]
    grid += [Setting(k, s) for s in CORRECTOR_STEPS for k in TOKENS_PER_STEP]
    grid += [Setting(k, 1, FINAL_STEPS) for k in TOKENS_PER_STEP if k >= 4]
    return grid


# --------------------------------------------------------------------- data and models
def test_problems(task: str, n: int = N_TEST, seed: int = 0) -> list[dict[str, str]]:
    """The first ``n`` held-out problems of ``task`` (the split training excluded, by prompt)."""
    return generate_synthetic(0, n, seed=seed, tasks=[task])[1]


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


def model_dir(task: str, objective: str, seed: int, root: str | Path = MODELS_DIR) -> Path:
    return Path(root) / f"{task}-{objective}-seed{seed}"


def load_model(path: str | Path) -> tuple[Any, Any]:
    """``(model in float32, eval mode, tokenizer)`` from a model directory (stored fp16 or fp32)."""
    from proseco.pretrained import load_pretrained

    loaded = load_pretrained(path)
    return loaded.model.float().eval(), loaded.tokenizer


# --------------------------------------------------------------------- right tokens
_ALLOWED: dict[str, list[set[str]]] = {}  # prompt -> allowed characters per answer position


def _allowed_chars(record: dict[str, str]) -> list[set[str]]:
    """Characters that are right at each answer position of ``record`` (cached by prompt)."""
    prompt = record["prompt"]
    if prompt not in _ALLOWED:
        if record["task"] in ("fill", "latin"):
            puzzle = prompt[2:]
            if record["task"] == "latin":
                found = latin_completions(puzzle)
            else:
                grids: list[list[int]] = []
                fill_completions([0 if ch == "." else int(ch) for ch in puzzle], 10**4, grids)
                found = ["".join(map(str, g)) for g in grids]
            blanks = [i for i, ch in enumerate(puzzle) if ch == "."]
            _ALLOWED[prompt] = [{sq[i] for sq in found} for i in blanks]
        else:
            _ALLOWED[prompt] = [{ch} for ch in record["response"]]
    return _ALLOWED[prompt]


def token_judge(
    tokenizer: Any, records: Sequence[dict[str, str]], prompt_length: int
) -> Callable[[int, int, int], bool]:
    """``is_right(row, position, token)`` for corrector diagnostics on ``records``' answers.

    ``chain``: the unique answer's token (EOS after it). ``fill``, ``latin``: a digit is right iff some valid
    completion of the puzzle has it in that blank; EOS after the last blank.
    """
    eos = tokenizer.eos_token_id
    ids = {ch: tokenizer.convert_tokens_to_ids(ch) for ch in "0123456789"}
    allowed = [[{ids[ch] for ch in cell} for cell in _allowed_chars(r)] for r in records]

    def is_right(row: int, position: int, token: int) -> bool:
        j = position - prompt_length
        cells = allowed[row]
        if j == len(cells):
            return token == eos
        return 0 <= j < len(cells) and token in cells[j]

    return is_right


# --------------------------------------------------------------------- evaluation
def evaluate(
    model: Any, tokenizer: Any, records: Sequence[dict[str, str]], setting: Setting, seed: int = 0
) -> dict[str, Any]:
    """One model, one task, one setting: per-problem correctness, NFEs, corrector diagnostics."""
    prompt = encode_prompts(tokenizer, [r["prompt"] for r in records])
    length = len(records[0]["response"]) + 1
    device = model_device(model)
    started = time.perf_counter()
    out = sample(
        model, setting.config(length), mask_id=tokenizer.mask_token_id, prompt=prompt,
        length=length, generator=torch.Generator(device=device).manual_seed(seed), progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    answers = decode_answers(tokenizer, out.tokens[:, prompt.shape[1] :].cpu())
    correct = [check_answer(r, a) for r, a in zip(records, answers)]
    counts = {"changed": 0, "fixed": 0, "broken": 0}
    if len(out.corrector_changes):
        judge = token_judge(tokenizer, records, prompt.shape[1])
        counts = out.corrector_changes.counts(is_right=judge)
    return {
        "setting": setting.name,
        "k": setting.tokens_per_step,
        "S": setting.corrector_steps,
        "n": len(records),
        "acc": sum(correct) / len(records),
        "correct": "".join("1" if c else "0" for c in correct),
        "nfe": float(out.nfe_per_row.double().mean()),
        "corrector_nfe": float(out.corrector_nfe_per_row.double().mean()),
        **counts,
        "seconds": seconds,
    }


def run_study(
    root: str | Path, tasks: Sequence[str], seeds: Sequence[int], n_test: int, log=print,
    device: str = "cpu", only: Sequence[str] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every model of ``root`` under every setting: one row per (task, objective, seed, setting)."""
    rows = []
    for task in tasks:
        records = test_problems(task, n_test)
        for objective in OBJECTIVES:
            for seed in seeds:
                model, tokenizer = load_model(model_dir(task, objective, seed, root))
                model = model.to(device)
                for setting in settings():
                    if only and setting.name not in only:
                        continue
                    row = evaluate(model, tokenizer, records, setting)
                    row.update(task=task, objective=objective, seed=seed)
                    log(f"{task:5s} {objective:7s} seed {seed} {setting.name:16s} "
                        f"acc {100 * row['acc']:5.1f}  NFE {row['nfe']:5.2f}  changed "
                        f"{row['changed']:4d} fixed {row['fixed']:4d} broken {row['broken']:4d}  "
                        f"{row['seconds']:.1f} s")  # fmt: skip
                    rows.append(row)
    return rows


# --------------------------------------------------------------------- statistics
@dataclass
class Arm:
    """One (objective, setting) over tasks and seeds: correctness ``[S, N]`` per task, NFE."""

    objective: str
    setting: str
    correct: dict[str, torch.Tensor]
    nfe: float

    @property
    def acc(self) -> float:
        return sum(float(c.mean()) for c in self.correct.values()) / len(self.correct)


def arms(rows: Sequence[dict[str, Any]], tasks: Sequence[str] | None = None) -> dict[tuple, Arm]:
    """``{(objective, setting): Arm}`` pooled over ``tasks`` (default: all in ``rows``)."""
    tasks = list(tasks or dict.fromkeys(r["task"] for r in rows))
    out: dict[tuple, Arm] = {}
    for key in dict.fromkeys((r["objective"], r["setting"]) for r in rows):
        correct, nfes = {}, []
        for task in tasks:
            mine = sorted(
                (r for r in rows if (r["objective"], r["setting"]) == key and r["task"] == task),
                key=lambda r: r["seed"],
            )
            if not mine:
                break
            correct[task] = torch.tensor([[c == "1" for c in r["correct"]] for r in mine]).float()
            nfes.append(sum(r["nfe"] for r in mine) / len(mine))
        else:
            out[key] = Arm(key[0], key[1], correct, sum(nfes) / len(nfes))
    return out


class Bootstrap:
    """Shared resampling indices (seeds, then problems per task) for paired intervals."""

    def __init__(self, shapes: dict[str, tuple[int, int]], draws: int = BOOTSTRAP, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.index = {}
        for task, (s, n) in shapes.items():
            seeds = torch.randint(0, s, (draws, s), generator=g)
            problems = torch.randint(0, n, (draws, 1, n), generator=g).expand(draws, s, n)
            self.index[task] = (seeds, problems)

    def samples(self, arm: Arm) -> torch.Tensor:
        """``[draws]`` bootstrap replicates of ``arm.acc``."""
        per_task = []
        for task, correct in arm.correct.items():
            seeds, problems = self.index[task]
            per_task.append(correct[seeds].gather(2, problems).mean(dim=(1, 2)))
        return torch.stack(per_task).mean(dim=0)

    def difference(self, a: Arm, b: Arm) -> dict[str, float]:
        """``a.acc - b.acc`` with its 95 % interval (percentile), as fractions."""
        diff = self.samples(a) - self.samples(b)
        low, high = torch.quantile(diff, torch.tensor([0.025, 0.975])).tolist()
        return {"diff": a.acc - b.acc, "low": low, "high": high}

    def interval(self, a: Arm) -> tuple[float, float]:
        low, high = torch.quantile(self.samples(a), torch.tensor([0.025, 0.975])).tolist()
        return low, high


def _shapes(pooled: dict[tuple, Arm]) -> dict[str, tuple[int, int]]:
    first = next(iter(pooled.values()))
    return {task: tuple(c.shape) for task, c in first.correct.items()}


def matched_plain(arm: Arm, plain: Sequence[Arm]) -> tuple[Arm, bool]:
    """The plain row with the fewest NFEs >= ``arm.nfe`` (``True``), else the costliest (``False``)."""
    at_least = [p for p in plain if p.nfe >= arm.nfe - 1e-9]
    if at_least:
        return min(at_least, key=lambda p: p.nfe), True
    return max(plain, key=lambda p: p.nfe), False


def compare(pooled: dict[tuple, Arm], boot: Bootstrap) -> dict[str, list[dict[str, Any]]]:
    """The three comparisons (training, sampling, paper's), each a list of matched pairs."""

    def plain(objective):
        return [a for (o, _), a in pooled.items() if o == objective and "S=" not in a.setting]

    def corrected(objective):
        return [a for (o, _), a in pooled.items() if o == objective and "S=" in a.setting]

    def pair(a: Arm, b: Arm, matched: bool = True) -> dict[str, Any]:
        return {"a": a.setting, "a_acc": a.acc, "a_nfe": a.nfe, "b": b.setting, "b_acc": b.acc,
                "b_nfe": b.nfe, "matched": matched, **boot.difference(a, b)}  # fmt: skip

    vanilla_plain = {a.setting: a for a in plain("vanilla")}
    training = [pair(a, vanilla_plain[a.setting]) for a in plain("proseco")
                if a.setting in vanilla_plain]  # fmt: skip
    sampling = [pair(a, *matched_plain(a, plain("proseco"))) for a in corrected("proseco")
                if plain("proseco")]  # fmt: skip
    paper = [pair(a, *matched_plain(a, plain("vanilla"))) for a in corrected("proseco")
             if plain("vanilla")]  # fmt: skip
    return {"training": training, "sampling": sampling, "paper": paper}


def judge(pooled: dict[tuple, Arm], boot: Bootstrap) -> dict[str, Any]:
    """Verdicts (a) and (b) with the evidence behind them (see the module docstring)."""
    vanilla = sorted((a for (o, _), a in pooled.items() if o == "vanilla" and "S=" not in a.setting),
                     key=lambda a: a.nfe)  # fmt: skip
    pros = [a for (o, _), a in pooled.items() if o == "proseco"]
    if not vanilla or not pros:
        empty = {"held": False, "testable": False, "points": []}
        return {"a": empty, "b": {**empty, "best_vanilla": None, "v_acc": 0.0, "n_star": 0.0}}
    points = []
    for v in vanilla:
        within = [p for p in pros if p.nfe <= v.nfe + 1e-9]
        if not within:
            points.append({"vanilla": v.setting, "proseco": None})
            continue
        best = max(within, key=lambda p: (p.acc, -p.nfe))
        d = boot.difference(best, v)
        points.append({"vanilla": v.setting, "v_acc": v.acc, "v_nfe": v.nfe, "proseco": best.setting,
                       "p_acc": best.acc, "p_nfe": best.nfe, **d, "beats": d["low"] > 0})  # fmt: skip
    compared = [p for p in points if p["proseco"] is not None]
    a_held = bool(compared) and all(p["beats"] for p in compared)
    best_v = max(vanilla, key=lambda a: (a.acc, -a.nfe))
    cheap = [p for p in pros if p.nfe <= best_v.nfe / 2 + 1e-9]
    b_points = []
    for p in sorted(cheap, key=lambda p: -p.acc):
        d = boot.difference(p, best_v)
        b_points.append({"proseco": p.setting, "p_acc": p.acc, "p_nfe": p.nfe, **d,
                         "reaches": d["low"] > -MARGIN_B})  # fmt: skip
    b_held = any(p["reaches"] for p in b_points)
    return {
        "a": {"held": a_held, "testable": bool(compared), "points": points},
        "b": {"held": b_held, "best_vanilla": best_v.setting, "v_acc": best_v.acc,
              "n_star": best_v.nfe, "points": b_points},
    }  # fmt: skip


# --------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(d: dict[str, float]) -> str:
    return f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def results_table(
    rows: Sequence[dict[str, Any]], tasks: Sequence[str], verdict_tasks: Sequence[str]
) -> list[str]:
    """Accuracy per task (mean over seeds) and pooled over ``verdict_tasks`` with its interval;
    NFEs and corrector counts pooled over ``verdict_tasks`` too."""
    per_task = {t: arms(rows, [t]) for t in tasks}
    pooled = arms(rows, verdict_tasks)
    boot = Bootstrap(_shapes(pooled))
    rows = [r for r in rows if r["task"] in verdict_tasks]
    head = ["model", "decoding", *[f"{t} %" for t in tasks],
            f"{' + '.join(verdict_tasks)} % [95% CI]", "NFE/answer", "corr. NFE", "changed",
            "fixed", "broken"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {s.name: i for i, s in enumerate(settings())}
    for key, arm in sorted(pooled.items(), key=lambda kv: (OBJECTIVES.index(kv[0][0]),
                                                           order.get(kv[0][1], 99))):  # fmt: skip
        mine = [r for r in rows if (r["objective"], r["setting"]) == key]
        low, high = boot.interval(arm)
        cells = [LABELS[key[0]], key[1], *[_pct(per_task[t][key].acc) for t in tasks],
                 f"{_pct(arm.acc)} [{_pct(low)}, {_pct(high)}]", f"{arm.nfe:.2f}",
                 f"{sum(r['corrector_nfe'] for r in mine) / len(mine):.2f}",
                 *[str(sum(r[c] for r in mine)) for c in ("changed", "fixed", "broken")]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def comparison_lines(title: str, pairs: Sequence[dict[str, Any]], a_label: str, b_label: str):
    lines = [f"**{title}** (difference in points, 95% CI):", "",
             f"| {a_label} | NFE | {b_label} | NFE | difference |", "|---|---|---|---|---|"]  # fmt: skip
    for p in pairs:
        note = "" if p["matched"] else " (fewer NFEs: no row costs as much)"
        lines.append(f"| {p['a']} ({_pct(p['a_acc'])}%) | {p['a_nfe']:.2f} | {p['b']} "
                     f"({_pct(p['b_acc'])}%){note} | {p['b_nfe']:.2f} | {_ci(p)} |")  # fmt: skip
    return lines + [""]


def verdict_lines(verdicts: dict[str, Any]) -> list[str]:
    a, b = verdicts["a"], verdicts["b"]

    def word(held: bool) -> str:
        return HELD if held else NOT_HELD

    lines = [f"**(a) ProSeCo beats vanilla at equal NFE: "
             f"{word(a['held']) if a['testable'] else NOT_TESTABLE}.**", ""]  # fmt: skip
    for p in a["points"]:
        if p["proseco"] is None:
            lines.append(f"- vanilla {p['vanilla']}: no ProSeCo row spends that few NFEs")
            continue
        lines.append(f"- vanilla {p['vanilla']} ({_pct(p['v_acc'])}% at {p['v_nfe']:.2f} NFEs) vs "
                     f"best ProSeCo within that budget, {p['proseco']} ({_pct(p['p_acc'])}% at "
                     f"{p['p_nfe']:.2f}): {_ci(p)} -> "
                     f"{'beats it' if p['beats'] else 'not shown better'}")  # fmt: skip
    lines += ["", f"**(b) ProSeCo reaches vanilla's best accuracy with at most half its NFEs: "
              f"{word(b['held'])}.**", "",
              f"Vanilla's best: {b['best_vanilla']}, {_pct(b['v_acc'])}% at {b['n_star']:.2f} NFEs; "
              f"ProSeCo rows with <= {b['n_star'] / 2:.2f} NFEs (reaches = interval above "
              f"-{100 * MARGIN_B:.0f} point):", ""]  # fmt: skip
    for p in b["points"]:
        lines.append(f"- {p['proseco']}: {_pct(p['p_acc'])}% at {p['p_nfe']:.2f} NFEs, "
                     f"{_ci(p)} -> {'reaches' if p['reaches'] else 'does not reach'}")  # fmt: skip
    if not b["points"]:
        lines.append("- none")
    return lines


def summary(rows: Sequence[dict[str, Any]], verdicts: dict[str, Any], cmp: dict) -> dict[str, Any]:
    """``sft_summary.json``: counts for the ProSeCo model's best corrector setting (pooled)."""
    pooled = arms(rows)
    corr = [a for (o, _), a in pooled.items() if o == "proseco" and "S=" in a.setting]
    best = max(corr, key=lambda a: (a.acc, -a.nfe))
    mine = [r for r in rows if r["objective"] == "proseco" and r["setting"] == best.setting]
    return {
        "test_problems_per_task": min(r["n"] for r in rows),
        "seeds": len({r["seed"] for r in rows}),
        "tasks": sorted({r["task"] for r in rows}),
        "corrector": {
            "setting": best.setting,
            **{c: sum(r[c] for r in mine) for c in ("changed", "fixed", "broken")},
        },
        "verdicts": {"a": verdicts["a"]["held"], "b": verdicts["b"]["held"]},
        "intervals": {
            "a": [
                {k: p[k] for k in ("vanilla", "proseco", "diff", "low", "high")}
                for p in verdicts["a"]["points"]
                if p["proseco"] is not None
            ],
            "b": [
                {k: p[k] for k in ("proseco", "diff", "low", "high")}
                for p in verdicts["b"]["points"]
            ],
            **{
                name: [{k: p[k] for k in ("a", "b", "diff", "low", "high")} for p in pairs]
                for name, pairs in cmp.items()
            },
        },  # fmt: skip
    }


def plot(rows: Sequence[dict[str, Any]], tasks: Sequence[str], path: str | Path) -> None:
    """Accuracy against NFEs, one panel per task: a line per model and corrector setting, 95 % bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.6 * len(tasks), 4.4), squeeze=False)
    colors = {"vanilla": "tab:gray", "proseco": "tab:green"}
    styles = {"": ("--", "o", "no corrector")}
    for i, s in enumerate(CORRECTOR_STEPS):
        styles[f" + S={s}"] = ("-", "s^"[i % 2], f"corrector S={s}")
    styles[f" + S=1 + F={FINAL_STEPS}"] = (":", "D", f"S=1 + final loop F={FINAL_STEPS}")
    for ax, task in zip(axes[0], tasks):
        pooled = arms(rows, [task])
        boot = Bootstrap(_shapes(pooled))
        for objective in OBJECTIVES:
            for suffix, (line, marker, label) in styles.items():
                mine = sorted((a for (o, name), a in pooled.items() if o == objective
                               and name.split(" tok/step", 1)[1] == suffix),
                              key=lambda a: a.nfe)  # fmt: skip
                if not mine:
                    continue
                bars = [boot.interval(a) for a in mine]
                ys = [100 * a.acc for a in mine]
                err = [[y - 100 * lo for y, (lo, _) in zip(ys, bars)],
                       [100 * hi - y for y, (_, hi) in zip(ys, bars)]]  # fmt: skip
                ax.errorbar([a.nfe for a in mine], ys, yerr=err, fmt=line, marker=marker,
                            color=colors[objective], capsize=2,
                            label=f"{LABELS[objective]}, {label}")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFEs per answer (log scale)")
        ax.set_ylabel(f"{task}: exact match (%)")
        ax.set_title(f"{task}: vanilla vs ProSeCo SFT (3 seeds, 95% CI)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path,
                  notes: str = "") -> str:  # fmt: skip
    """``out`` (markdown), ``.png``, ``_rows.json`` and ``sft_summary.json`` next to it.

    Comparisons, verdicts and the summary pool ``meta["verdict tasks"]`` (default: every task).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = {"settings": meta, "rows": rows}  # first: the rows survive a failing report
    out.with_name(out.stem + "_rows.json").write_text(json.dumps(saved, indent=0) + "\n")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    verdict_tasks = [t for t in meta.get("verdict tasks", tasks) if t in tasks] or tasks
    pooled = arms(rows, verdict_tasks)
    boot = Bootstrap(_shapes(pooled))
    cmp, verdicts = compare(pooled, boot), judge(pooled, boot)
    png = out.with_suffix(".png")
    plot(rows, tasks, png)
    out.with_name(out.stem + "_summary.json").write_text(
        json.dumps(
            summary([r for r in rows if r["task"] in verdict_tasks], verdicts, cmp), indent=1
        )
        + "\n"  # fmt: skip
    )
    lines = [
        "# Table 1 at small scale: vanilla SFT vs ProSeCo SFT (3 seeds, 95% intervals)",
        "",
        "Generated by `python benchmarks/sft.py` from the committed models in `sft_models/` "
        "(issue 19); do not edit by hand. How the models were trained: `sft_runs/README.md`.",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        "## Settings",
        "",
        "```",
        *[f"{k}: {v}" for k, v in meta.items()],
        "```",
        "",
        "## Results (mean over 3 seeds)",
        "",
        *results_table(rows, tasks, verdict_tasks),
        "",
        f"Pooled columns (interval, NFE, corrector counts): {' + '.join(verdict_tasks)}, tasks "
        "weighted equally. `changed` / `fixed` / `broken`: tokens the corrector rewrote, wrong -> "
        "right, right -> wrong, summed over those tasks and the seeds.",
        "",
        f"![accuracy vs NFE]({png.name})",
        "",
        f"## Three comparisons at equal NFE ({' + '.join(verdict_tasks)})",
        "",
        *comparison_lines("Training effect: ProSeCo model vs vanilla model, no corrector",
                          cmp["training"], "ProSeCo SFT", "vanilla SFT"),
        *comparison_lines("Sampling effect: ProSeCo model with corrector vs without",
                          cmp["sampling"], "ProSeCo SFT + corrector", "ProSeCo SFT, no corrector"),
        *comparison_lines("Paper's comparison: ProSeCo SFT + corrector vs vanilla SFT",
                          cmp["paper"], "ProSeCo SFT + corrector", "vanilla SFT"),
        f"## Verdicts on {' + '.join(verdict_tasks)} (rules in the docstring of "
        "`benchmarks/sft.py`, fixed before the run)",
        "",
        *verdict_lines(verdicts),
        "",
    ]  # fmt: skip
    for task in tasks:
        per = arms(rows, [task])
        tb = Bootstrap(_shapes(per))
        v = judge(per, tb)
        lines.append(f"- {task} alone: (a) {HELD if v['a']['held'] else NOT_HELD}, "
                     f"(b) {HELD if v['b']['held'] else NOT_HELD}"
                     + ("" if task in verdict_tasks else " (not a verdict task)"))  # fmt: skip
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    text = "\n".join(lines) + "\n"
    out.write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------- main
def verdict_tasks(models: str | Path, tasks: Sequence[str]) -> list[str]:
    """Tasks whose chosen budget met the rule (``selection.json`` from ``sft_train.py``).

    Issue 19's rule: vanilla at 1 token/step between 30 % and 80 %, at least 10 points lost at
    8 tokens/step. Without a ``selection.json`` every task counts.
    """
    path = Path(models) / "selection.json"
    if not path.is_file():
        return list(tasks)
    chosen = json.loads(path.read_text())
    met = [t for t in tasks if chosen.get(t, {}).get("why", "").startswith("latest checkpoint")]
    return met or list(tasks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=MODELS_DIR, help="folder of TASK-OBJECTIVE-seedS dirs")
    parser.add_argument("--tasks", default=",".join(PAGE_TASKS),
                        help=f"from {list(STUDY_TASKS)}; chain's models are not committed (it did "
                        "not train, see docs/results/sft_runs/README.md)")  # fmt: skip
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--limit", type=int, default=N_TEST, help="test problems per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results/sft.md", help="markdown page to write")
    parser.add_argument("--notes", help="a markdown file appended to the page as its Notes")
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda)")
    parser.add_argument("--settings", help="evaluate only these settings (comma-separated names)")
    parser.add_argument(
        "--from-json", nargs="+",
        help="re-render from saved sft_rows.json files (no decoding; rows of several are merged)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else ""
    tasks = [t for t in args.tasks.split(",") if t]
    if args.from_json:
        parts = [(Path(p).name, json.loads(Path(p).read_text())) for p in args.from_json]
        rows = [r for _, part in parts for r in part["rows"] if r["task"] in tasks]
        if not rows:
            print(f"sft.py: error: no rows of tasks {tasks} in {args.from_json}; pass --tasks",
                  file=sys.stderr)  # fmt: skip
            return 2
        keys = {(r["task"], r["objective"], r["seed"], r["setting"]) for r in rows}
        if len(keys) != len(rows):
            print("sft.py: error: the row files overlap (a task/model/seed/setting twice)",
                  file=sys.stderr)  # fmt: skip
            return 2
        meta = dict(parts[0][1]["settings"]) if len(parts) == 1 else {
            "verdict tasks": verdict_tasks(args.models, tasks),
            **{f"rows from {name}": "; ".join(f"{k}: {v}" for k, v in part["settings"].items()
                                              if k != "verdict tasks")
               for name, part in parts},
        }  # fmt: skip
        text = write_outputs(rows, meta, Path(args.out), notes)
        print(text[text.index("## Verdicts") :])
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s]
    missing = [str(model_dir(t, o, s, args.models)) for t in tasks for o in OBJECTIVES
               for s in seeds if not (model_dir(t, o, s, args.models) / "config.json").is_file()]  # fmt: skip
    if missing:
        print(f"sft.py: error: no model in {missing[0]} ({len(missing)} missing); train them "
              "with benchmarks/sft_train.py or pass --models DIR", file=sys.stderr)  # fmt: skip
        return 2
    torch.set_num_threads(args.threads)
    meta = {
        "verdict tasks": verdict_tasks(args.models, tasks),
        "models": f"{Path(args.models).name}/TASK-OBJECTIVE-seedS, tasks {tasks}, seeds {seeds}",
        "test": f"first {args.limit} held-out problems per task (generate_synthetic seed 0)",
        "decoding": "temperature 0, confidence unmasking, one block = answer + EOS, "
        f"k tok/step in {list(TOKENS_PER_STEP)}, corrector S in {list(CORRECTOR_STEPS)} "
        "every step with early exit",
        "bootstrap": f"{BOOTSTRAP} paired resamples of seeds then problems, seed 0",
        "device / threads": f"{args.device} / {args.threads}",
        "torch": torch.__version__,
    }
    started = time.perf_counter()
    only = [n.strip() for n in args.settings.split(",")] if args.settings else None
    unknown = sorted(set(only or ()) - {s.name for s in settings()})
    if unknown:
        print(f"sft.py: error: unknown settings {unknown}; the grid: "
              f"{[s.name for s in settings()]}", file=sys.stderr)  # fmt: skip
        return 2
    rows = run_study(args.models, tasks, seeds, args.limit, device=args.device, only=only)
    meta["benchmark wall time"] = f"{time.perf_counter() - started:.0f} s"
    text = write_outputs(rows, meta, Path(args.out), notes)
    print(text[text.index("## Verdicts") :])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
