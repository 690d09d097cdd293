"""Regenerate ``docs/results/text_kjv.md``: unconditional text on the KJV at CPU scale, ProSeCo
against MDLM, ReMDM and PRISM at equal NFE (the paper's Table 2 question), with a gate that says
whether the models are past the point where samplers can differ at all.

Models: the ``text-*-cpu`` recipes (cpu-tiny DiT, 1,024-token BPE, length 128, wrapped layout).
Every point draws ``--num-samples`` sequences of 128 tokens with the same seed, nucleus top-p 0.9
and float64 draws, for every T in ``--steps``:

* MDLM model: MDLM (ancestral) and ReMDM (``loop``, eta 0.02); PRISM's fine-tuned head if given;
* ProSeCo model: no corrector, and corrector budgets S=1 every 1 and every 4 steps (argmax);
* AR model (left to right, 127 tokens after BOS) and a data row of 128-token training chunks.

**Framing** (``--framing``): ``research`` (default) scores the whole 128-token window as the
research code does for OpenWebText: nothing is cut at EOS (in the wrapped layout EOS only
separates chapters), so every sample and the data row have the same length and entropies are
comparable; ``eos-cut`` cuts each sample at its first EOS (the earlier page's rule). Metrics:
gen-PPL under SmolLM2-135M (numbers compare within this study only), MAUVE against held-out
chunks on SmolLM2 features, per-sample unigram entropy (nats, all 128 ids) and distinct-2/3 of
the model's own ids. Every metric has a 95 % bootstrap interval (``--draws`` resamples of the
samples; :mod:`proseco.eval.intervals`); the verdict rules are in ``benchmarks/text_verdict.py``.

Usage::

    python benchmarks/text.py [--mdlm runs/text-mdlm/final] [--proseco runs/text-proseco/final]
        [--ar runs/text-ar/final] [--prism runs/text-prism/final] [--steps 16 32 64]
        [--num-samples 500] [--methods LABEL ...] [--rows-out FILE] [--out docs/results]
    python benchmarks/text.py --from-json A.json [B.json ...]   # the page from saved rows only

``--quick`` (24 samples, T in {8, 16}, 50 draws) is a smoke test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_verdict import (  # noqa: E402
    AR,
    DATA,
    GATE_MAUVE,
    MDLM,
    PRISM,
    PROSECO_PLAIN,
    REMDM,
    UDLM,
    comparisons,
    gate,
    is_proseco_sampling,
    verdict,
)

REPO = Path(__file__).resolve().parents[1]
DATA_SOURCE, VALIDATION_FRACTION, SPLIT_SEED, LENGTH = "corpus:kjv", 0.05, 42, 128
EVALUATOR_LABEL = "SmolLM2-135M gen-PPL"
OPTIONAL_MODELS = ("prism", "udlm")  # used when their checkpoints exist
BUDGETS = ((1, 1), (1, 4))  # (S, omega): corrector steps, fired every omega steps
METRICS = ("gen_ppl", "mauve", "entropy", "distinct2", "distinct3")
PAGE, ROWS, SUMMARY = "text_kjv.md", "text_kjv_rows.json", "text_summary.json"
RUN_LOGS = "text_runs"


def proseco_method(steps: int, every: int) -> str:
    return f"ProSeCo S={steps} every={every}"


@dataclass(frozen=True)
class Setting:
    """One point: a row label, which model, and its decoding settings."""

    method: str
    model: str
    config: Any  # proseco.SamplingConfig


def corrector_steps(steps: list[int], s: int, every: int) -> list[int]:
    """The T of a corrector budget whose NFE (``T + S * ceil(T / every)``) lies within the
    baselines' range ``[min(steps), max(steps)]``, from ``steps`` and their halves: every such
    point can be judged at equal NFE, and none is sampled only to be left out."""
    candidates = sorted(set(steps) | {t // 2 for t in steps if t >= 2})
    low, high = min(steps), max(steps)
    return [t for t in candidates if low <= t + s * -(-t // every) <= high]


def settings(steps: list[int]) -> list[Setting]:
    """The grid, method-major: the baselines and ProSeCo without a corrector at every T of
    ``steps``; each corrector budget at the T whose NFE the baselines cover."""
    from proseco.sampling import Corrector, ReMDM, SamplingConfig, get_unmasking

    grid: list[Setting] = []
    base = {"top_p": 0.9, "float64": True}
    for t in steps:
        c = SamplingConfig(steps=t, **base)
        grid.append(Setting(MDLM, "mdlm", c))
        grid.append(Setting(REMDM, "mdlm", c.replace(unmasking=ReMDM("loop", eta=0.02))))
        grid.append(Setting(PRISM, "prism", c.replace(unmasking=get_unmasking("prism"))))
        grid.append(Setting(UDLM, "udlm", c))
        grid.append(Setting(PROSECO_PLAIN, "proseco", c))
    for s, every in BUDGETS:
        for t in corrector_steps(steps, s, every):
            config = SamplingConfig(steps=t, corrector=Corrector(steps=s, every=every), **base)
            grid.append(Setting(proseco_method(s, every), "proseco", config))
    order = list(dict.fromkeys(g.method for g in grid))
    return sorted(grid, key=lambda g: (order.index(g.method), g.config.steps))


# ------------------------------------------------------------------ data
def corpus_rows(tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train [N, 128], validation [M, 128])``: the recipes' split in the wrapped layout."""
    from proseco.data.text import encode_pretraining, read_records, split_records

    train, val = split_records(read_records(DATA_SOURCE), VALIDATION_FRACTION, SPLIT_SEED)

    def encode(docs):
        return encode_pretraining([d["text"] for d in docs], tokenizer, max_length=LENGTH)

    return encode(train)["input_ids"], encode(val)["input_ids"]


def shuffled(rows: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    return rows[perm[:n]]


# ------------------------------------------------------------------ sampling
def generate(model: Any, setting: Setting, n: int, batch_size: int, seed: int) -> dict[str, Any]:
    """``n`` samples in batches; NFE per sample (batch-weighted means) and total wall time."""
    from proseco.sampling.dispatch import sampler_for

    _, sample = sampler_for(model)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    tokens, nfe, corrector_nfe = [], 0.0, 0.0
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        b = min(batch_size, n - first)
        with torch.inference_mode():
            out = sample(model, setting.config, batch_size=b, length=LENGTH, generator=generator)
        tokens.append(out.tokens.cpu())
        nfe += out.nfe * b
        corrector_nfe += out.corrector_nfe * b
    return {"tokens": torch.cat(tokens), "nfe": nfe / n, "corrector_nfe": corrector_nfe / n,
            "seconds": time.perf_counter() - start}  # fmt: skip


def generate_ar(model: Any, n: int, batch_size: int, seed: int, stop: bool) -> dict[str, Any]:
    """``n`` left-to-right samples of 127 tokens after BOS, same nucleus; ``stop`` at EOS only
    under the ``eos-cut`` framing (the wrapped layout continues past a chapter's EOS)."""
    from proseco.sampling import SamplingConfig
    from proseco.sampling.autoregressive import sample_autoregressive

    config = SamplingConfig(top_p=0.9, float64=True)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    tokens, nfe = [], 0.0
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        b = min(batch_size, n - first)
        with torch.inference_mode():
            # stop_at_eos None: the AR default, stop at the model's EOS; False: never stop
            out = sample_autoregressive(model, config, batch_size=b, length=LENGTH - 1,
                                        generator=generator,
                                        stop_at_eos=None if stop else False)  # fmt: skip
        tokens.append(out.tokens.cpu())
        nfe += out.nfe * b
    return {"tokens": torch.cat(tokens), "nfe": nfe / n, "corrector_nfe": 0.0,
            "seconds": time.perf_counter() - start}  # fmt: skip


# ------------------------------------------------------------------ metrics
class Scorer:
    """Per-sample metrics of token rows, point values and bootstrap replicates of each."""

    def __init__(self, evaluator: Any, tokenizer: Any, reference: torch.Tensor, *,
                 framing: str, mauve: bool, draws: int, seed: int, bf16: bool,
                 quantizations: int = 10) -> None:  # fmt: skip
        from proseco.eval.text import mauve_available, score_texts

        self.evaluator, self.tokenizer, self.framing = evaluator, tokenizer, framing
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.mauve, self.draws, self.seed = mauve and mauve_available(), draws, seed
        self.bf16, self.quantizations = bf16, quantizations
        self.reference = None
        if self.mauve:
            texts = self.texts(self.frame(reference))
            self.reference = score_texts(texts, evaluator, bf16=bf16, features=True)["features"]

    def frame(self, rows: torch.Tensor) -> list[list[int]]:
        """The ids every metric sees: the whole window (research) or up to the first EOS."""
        from proseco.eval.text import cut_at_eos

        if self.framing == "research":
            return [row.tolist() for row in rows]
        return [cut_at_eos(row, self.eos, bos_id=self.bos) for row in rows]

    def texts(self, framed: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(framed, skip_special_tokens=True)

    def __call__(self, rows: torch.Tensor) -> dict[str, Any]:
        from proseco.eval.intervals import (
            mauve_replicates,
            percentile_interval,
            resample_indices,
            token_weighted_ppl,
        )
        from proseco.eval.text import distinct_n, sample_entropy, score_texts

        framed = self.frame(rows)
        texts = self.texts(framed)
        scored = score_texts(texts, self.evaluator, bf16=self.bf16, features=self.mauve)
        per_sample = {
            "entropy": torch.tensor(sample_entropy(framed), dtype=torch.float64),
            "distinct2": torch.tensor(distinct_n(framed, 2), dtype=torch.float64),
            "distinct3": torch.tensor(distinct_n(framed, 3), dtype=torch.float64),
        }
        index = resample_indices(len(texts), self.draws, self.seed)
        nll = torch.stack([scored["nll"], scored["count"].double()], dim=1)  # [N, 2]
        point = {"gen_ppl": float(token_weighted_ppl(nll))}
        boot = {"gen_ppl": token_weighted_ppl(nll[index])}
        for key, values in per_sample.items():
            point[key] = float(values.mean())
            boot[key] = values[index].mean(dim=1)
        point["mauve"], boot["mauve"] = None, None
        if self.mauve:
            point["mauve"], boot["mauve"] = mauve_replicates(
                self.reference.numpy(), scored["features"].numpy(), draws=self.draws,
                seed=self.seed, quantizations=self.quantizations,
            )  # fmt: skip
        intervals = {k: percentile_interval(boot[k], center=point[k])
                     for k in METRICS if boot[k] is not None}  # fmt: skip
        for key in ("mauve", "entropy", "distinct2", "distinct3"):  # bounded metrics
            if key in intervals:
                low, high = intervals[key]
                intervals[key] = (max(low, 0.0), min(high, 1.0) if key != "entropy" else high)
        return {
            **point,
            "mean_tokens": sum(map(len, framed)) / len(framed),
            "num_samples": len(texts),
            "mauve_quantizations": self.quantizations if self.mauve else None,
            "intervals": {k: [round(v, 6) for v in iv] for k, iv in intervals.items()},
            "boot": {
                k: [float(f"{v:.6g}") for v in b.tolist()] for k, b in boot.items() if b is not None
            },  # fmt: skip
            "examples": texts[:3],
        }


def gate_inputs(mdlm: Any, train: torch.Tensor, val: torch.Tensor, mask_id: int, vocab: int):
    """``(MDLM validation NELBO, interpolated-bigram NLL, bigram weight)`` on all held-out rows."""
    from proseco.eval.ngram import best_interpolated_bigram_nll
    from proseco.eval.text import validation_nelbo

    bigram, lam = best_interpolated_bigram_nll(train, val, vocab)
    with torch.inference_mode():
        nelbo = validation_nelbo(mdlm, val, mask_id=mask_id, num_draws=4, batch_size=64)
    return nelbo["nelbo"], bigram, lam


# ------------------------------------------------------------------ report
def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def with_interval(row: dict[str, Any], key: str, digits: int) -> str:
    value = row.get(key)
    iv = row.get("intervals", {}).get(key)
    if value is None:
        return "-"
    if iv is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(iv[0], digits)}, {fmt(iv[1], digits)}]"


def plot(rows: list[dict[str, Any]], key: str, ylabel: str, path: Path, log_y: bool) -> bool:
    """``key`` against NFE with 95 % interval bars, one line per method; data/AR as lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows if r["steps"] is not None):
        pts = sorted((r["nfe"], r[key], r["intervals"].get(key)) for r in rows
                     if r["method"] == method and r.get(key) is not None)  # fmt: skip
        if pts:
            x, y, iv = zip(*pts)
            err = [[max(v - i[0], 0.0) for v, i in zip(y, iv)],
                   [max(i[1] - v, 0.0) for v, i in zip(y, iv)]]  # fmt: skip
            style = "-o" if is_proseco_sampling(method) else "--s"
            ax.errorbar(x, y, yerr=err, fmt=style, label=method, markersize=4, capsize=2)
    for ref, color in ((DATA, "black"), (AR, "tab:purple")):
        value = next((r[key] for r in rows if r["method"] == ref and r.get(key) is not None), None)
        if value is not None:
            ax.axhline(value, color=color, linestyle=":", label=ref)
    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("NFE per sample")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def validation_curves(out: Path, gate_result: dict[str, Any]) -> list[str]:
    """The validation curves of the committed run logs, with the bigram line; markdown lines."""
    logs = sorted((out / RUN_LOGS).glob("*-metrics.jsonl"))
    curves = {}
    for log in logs:
        rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]
        val = [(r["step"], r.get("nelbo", r.get("nll"))) for r in rows
               if r.get("split") == "validation" and r.get("nelbo", r.get("nll")) is not None]  # fmt: skip
        if val:
            curves[log.name.removesuffix("-metrics.jsonl")] = val
    if not curves:
        return ["No run logs under `" + RUN_LOGS + "/`."]
    names = list(curves)
    steps = sorted({step for val in curves.values() for step, _ in val})
    lines = ["| step | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    for step in steps:
        cells = [dict(curves[n]).get(step) for n in names]
        lines.append(f"| {step} | " + " | ".join(fmt(c) for c in cells) + " |")
    lines.append(f"| interpolated bigram | {fmt(gate_result['bigram_nelbo'])} (held-out NLL) |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return lines
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, val in curves.items():
        ax.plot(*zip(*val), "-o", markersize=3, label=name)
    ax.axhline(gate_result["bigram_nelbo"], color="black", linestyle=":",
               label="interpolated bigram (held-out NLL)")  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("validation NELBO / NLL (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "text_kjv_validation.png", dpi=120)
    plt.close(fig)
    return [*lines, "", "![validation curves](text_kjv_validation.png)"]


def write_report(out: Path, study: dict[str, Any], notes: str | None) -> tuple[Path, dict]:
    rows, info = study["rows"], study["info"]
    g = gate(rows, info["mdlm_nelbo"], info["bigram_nelbo"])
    comps = comparisons(rows)
    judged = verdict(g, comps)
    summary = {
        "samples_per_point": min((r["num_samples"] for r in rows), default=0),
        "bootstrap_intervals": True,
        "draws": info["draws"],
        "framing": info["framing"],
        "gate": {k: g[k] for k in ("mdlm_mauve", "mdlm_nelbo", "bigram_nelbo", "passed")},
        "verdict": judged["verdict"],
        "per_baseline": judged["per_baseline"],
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plots = []
    if plot(rows, "gen_ppl", EVALUATOR_LABEL, out / "text_kjv_genppl.png", log_y=True):
        plots.append(("gen-PPL vs NFE", "text_kjv_genppl.png"))
    if any(r.get("mauve") is not None for r in rows) and plot(
        rows, "mauve", "MAUVE (SmolLM2-135M features)", out / "text_kjv_mauve.png", log_y=False
    ):
        plots.append(("MAUVE vs NFE", "text_kjv_mauve.png"))
    framing = (
        "the whole 128-token window, nothing cut (the research code's rule: in the wrapped layout "
        "EOS only separates chapters); every sample and the data row have 128 tokens"
        if info["framing"] == "research"
        else "each sample cut at its first EOS (after a leading BOS)"
    )
    lines = [
        "# Unconditional text on the KJV at CPU scale: ProSeCo vs MDLM, ReMDM and PRISM at equal NFE",
        "",
        f"Generated by `{info['command']}` on {info['date']} ({info['platform']}). Rows with their "
        f"bootstrap replicates: `{ROWS}`; summary: `{SUMMARY}`.",
        "",
        *sources_lines(info.get("sources")),
        "## Verdict",
        "",
        (
            "**inconclusive at this scale**: the models are below the gate (or no comparison "
            "could be judged), so no ranking is drawn."
            if judged["verdict"] == "inconclusive"
            else f"**The paper's ordering {judged['verdict']}** (rules in "
            "`benchmarks/text_verdict.py`)."
        ),
        "",
        f"- Gate: MDLM MAUVE at its largest T (T={fmt(g['mdlm_T'])}) = {fmt(g['mdlm_mauve'])} "
        f"(needs >= {GATE_MAUVE}); MDLM validation NELBO {fmt(g['mdlm_nelbo'])} nats/token vs the "
        f"interpolated bigram's held-out NLL {fmt(g['bigram_nelbo'])} (weight {info['bigram_lambda']}"
        f", needs NELBO below it): **{'passed' if g['passed'] else 'not passed'}**.",
    ]
    if judged["verdict"] != "inconclusive":
        for base, t in judged["per_baseline"].items():
            lines.append(f"- vs {base}: {t['better']} better, {t['tie']} tie, {t['worse']} worse "
                         f"of {t['judged']} judged ({'held' if t['held'] else 'not held'}).")  # fmt: skip
    lines += [
        "",
        "## Setting",
        "",
        f"- Models: {info['models']}.",
        f"- {info['num_samples']} samples per point, seed {info['seed']}, nucleus top-p 0.9, "
        "float64 draws, 128 tokens per sample (BOS included).",
        f"- Framing: {framing}.",
        f"- Gen-PPL: **{EVALUATOR_LABEL}** (SmolLM2-135M-Instruct, "
        f"{info.get('evaluator_precision', 'float32')}), token-weighted; "
        "not GPT-2 Large, so the numbers compare within this page only. MAUVE: against "
        f"{info['num_reference']} held-out chunks (validation chapters) on SmolLM2 last-token "
        "features, package defaults. Entropy: mean per-sample unigram entropy of the model's own "
        "ids (nats); distinct-n: unique n-grams over all n-grams per sample, mean.",
        f"- Intervals: 95 % bootstrap over the samples of each point ({info['draws']} draws, "
        f"bias-corrected percentiles). {mauve_method(rows)} Comparisons at equal NFE read the "
        "baseline's curve linearly in log NFE, replicate by replicate.",
        "- Data row: 128-token chunks of the training chapters (the held-out chapters are the MAUVE "
        "reference; there are not enough of them for both), scored the same way.",
        f"- NFE: model calls per sample as the sampler reports them; seconds: sampling wall time of "
        f"all samples of a row ({info.get('device', 'cpu')}, {info['threads']} torch threads).",
        "",
        "## Results",
        "",
        f"| method | T | NFE | {EVALUATOR_LABEL} (lower) | MAUVE (higher) | entropy | distinct-2 "
        "| distinct-3 | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {fmt(r['steps'])} | {fmt(r['nfe'], 1)} | "
            f"{with_interval(r, 'gen_ppl', 1)} | {with_interval(r, 'mauve', 3)} | "
            f"{with_interval(r, 'entropy', 2)} | {with_interval(r, 'distinct2', 2)} | "
            f"{with_interval(r, 'distinct3', 2)} | {fmt(r['seconds'], 0)} |"
        )
    lines += ["", *[f"![{title}]({name})" for title, name in plots], ""]
    lines += ["## Comparisons at equal NFE (ProSeCo minus baseline, 95 % interval)", "",
              "| ProSeCo point | T | NFE | vs | MAUVE diff | gen-PPL diff | entropy within 5 % "
              "| outcome |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def diff(d: dict | None, digits: int) -> str:
        if d is None:
            return "not in range"
        return f"{d['diff']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"

    if not comps:
        lines[-2:] = ["No ProSeCo row was sampled, so there is nothing to compare."]
    for c in comps:
        lines.append(f"| {c['proseco']} | {fmt(c['T'])} | {fmt(c['nfe'], 1)} | {c['vs']} | "
                     f"{diff(c['mauve'], 3)} | {diff(c['gen_ppl'], 1)} | {fmt(c['entropy_ok'])} | "
                     f"{c['outcome']} |")  # fmt: skip
    lines += ["", "## Training", "", *validation_curves(out, g), ""]
    if notes:
        lines += [notes.rstrip(), ""]
    lines += ["## Example samples (first three of each method at the largest T)", ""]
    largest = max((r["steps"] for r in rows if r["steps"] is not None), default=None)
    for r in rows:
        if r["steps"] in (None, largest):
            lines += [f"**{r['method']}**" + (f" (T={r['steps']})" if r["steps"] else "") + ":", ""]
            for text in r["examples"]:
                printable = "".join(ch if ch.isprintable() else " " for ch in text)
                lines += ["> " + " ".join(printable.split())[:400], ""]
    path = out / PAGE
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path, summary


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mdlm", default="runs/text-mdlm/final")
    p.add_argument("--proseco", default="runs/text-proseco/final")
    p.add_argument("--ar", default="runs/text-ar/final")
    p.add_argument("--prism", default="runs/text-prism/final", help="PRISM fine-tune (optional)")
    p.add_argument("--udlm", default="runs/text-udlm/final", help="UDLM checkpoint (optional)")
    p.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64],
                   help="T of the baselines; corrector budgets run at the T whose NFE these cover")  # fmt: skip
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--draws", type=int, default=200, help="bootstrap resamples per point")
    p.add_argument("--mauve-quantizations", type=int, default=10,
                   help="k-means seeds MAUVE is averaged over (its intervals carry their spread)")  # fmt: skip
    p.add_argument("--framing", choices=("research", "eos-cut"), default="research")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda: models and evaluator")
    p.add_argument("--evaluator", default="smollm2-135m")
    p.add_argument("--no-mauve", action="store_true")
    p.add_argument("--bf16", action="store_true",
                   help="evaluator under bf16 autocast: faster only with bf16 units (on an AVX2-only "
                   "CPU it was 6x slower than float32)")  # fmt: skip
    p.add_argument("--methods", nargs="*", help="only these method labels (default: all)")
    p.add_argument("--no-reference-rows", action="store_true",
                   help="skip the data and AR rows (a parallel run computes them)")  # fmt: skip
    p.add_argument("--merge", nargs="*", default=[],
                   help="rows files of earlier or parallel runs: their points are reused")  # fmt: skip
    p.add_argument("--from-json", nargs="+", help="only write the page from these rows files")
    p.add_argument("--rows-out", help="where the rows go (default: OUT/" + ROWS + ")")
    p.add_argument("--out", default=str(REPO / "docs" / "results"))
    p.add_argument("--notes", help="a markdown file appended to the report (observations)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    for name in ("num_samples", "draws", "mauve_quantizations"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.quick:
        args.num_samples, args.steps, args.draws = 24, [8, 16], 50
        if args.out == p.get_default("out"):  # a smoke test never overwrites the committed page
            args.out = "runs/text-quick"
    return args


def mauve_method(rows: list[dict[str, Any]]) -> str:
    """How each row's MAUVE point and interval were computed (rows before the option: 1 seed)."""
    by_count: dict[int, list[str]] = {}
    for r in rows:
        if r.get("mauve") is not None:
            label = r["method"] + (f" T={r['steps']}" if r["steps"] else "")
            by_count.setdefault(r.get("mauve_quantizations") or 1, []).append(label)
    parts = []
    for count, labels in sorted(by_count.items()):
        which = "" if len(by_count) == 1 else f" ({', '.join(labels)})"
        if count == 1:
            parts.append(f"MAUVE{which}: the package's score at the seed; its interval resamples "
                         "the samples' cluster histogram with the k-means quantization held fixed, "
                         "so it leaves out the quantization's own spread.")  # fmt: skip
        else:
            parts.append(f"MAUVE{which}: the mean over {count} k-means seeds; its replicates "
                         "cycle through those quantizations and resample the samples' cluster "
                         "histogram under each, so the interval carries both spreads.")  # fmt: skip
    return " ".join(parts)


def sources_lines(sources: list[dict[str, Any]] | None) -> list[str]:
    """Where the rows of a merged page were computed: one bullet per rows file."""
    if not sources:
        return []
    lines = ["The rows were computed by these runs (same settings, seed and reference set):", ""]
    for source in sources:
        lines.append(f"- `{source['command']}` ({source['date']}): {', '.join(source['rows'])}")
    return [*lines, ""]


def load_studies(paths: list[str]) -> dict[str, Any]:
    """Merge rows files: the first row of each (method, T) wins; info from the first file."""
    merged: dict[str, Any] = {"rows": [], "info": None}
    seen = set()
    sources, models = [], {}
    for path in paths:
        study = json.loads(Path(path).read_text(encoding="utf-8"))
        merged["info"] = merged["info"] or dict(study["info"])
        sources.append(
            {
                "command": study["info"]["command"],
                "date": study["info"]["date"],
                "rows": sorted(
                    {
                        r["method"] + (f" T={r['steps']}" if r["steps"] else "")
                        for r in study["rows"]
                    }
                ),  # fmt: skip
            }
        )
        models.update(dict.fromkeys(study["info"]["models"].split(", ")))
        for row in study["rows"]:
            if (row["method"], row["steps"]) not in seen:
                merged["rows"].append(row)
                seen.add((row["method"], row["steps"]))
    if len(paths) > 1:
        merged["info"]["sources"] = sources
        merged["info"]["models"] = ", ".join(models)
    return merged


def sort_rows(rows: list[dict[str, Any]], steps: list[int]) -> None:
    order = [DATA, AR, *dict.fromkeys(g.method for g in settings(steps))]
    rows.sort(key=lambda r: (order.index(r["method"]) if r["method"] in order else len(order),
                             r["steps"] or 0))  # fmt: skip


def copy_run_logs(out: Path, model_dirs: dict[str, Path]) -> None:
    """Commit-ready copies of each run's ``config.yaml`` and ``metrics.jsonl``."""
    target = out / RUN_LOGS
    target.mkdir(parents=True, exist_ok=True)
    for name, model_dir in model_dirs.items():
        for src, suffix in (("config.yaml", "config.yaml"), ("metrics.jsonl", "metrics.jsonl")):
            path = model_dir.parent / src
            if path.is_file():
                shutil.copyfile(path, target / f"text-{name}-{suffix}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else None
    if args.from_json:
        study = load_studies(args.from_json)
        command = "python benchmarks/text.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        study["info"] = {**study["info"], "command": command, "date": now}
        sort_rows(study["rows"], sorted({r["steps"] for r in study["rows"] if r["steps"]}))
        rows_path = Path(args.rows_out) if args.rows_out else out / ROWS
        rows_path.write_text(json.dumps(study, indent=None) + "\n", encoding="utf-8")
        path, summary = write_report(out, study, notes)
        print("wrote", path, "verdict:", summary["verdict"])
        return 0
    torch.set_num_threads(args.threads)
    from proseco.data.text import special_ids
    from proseco.eval.text import load_evaluator
    from proseco.pretrained import load_pretrained

    grid = settings(args.steps)
    if args.methods:
        grid = [g for g in grid if g.method in args.methods]
    missing = [k for k in OPTIONAL_MODELS if not (Path(getattr(args, k)) / "config.json").is_file()]
    grid = [g for g in grid if g.model not in missing]
    models, tokenizer = {}, None
    for key in dict.fromkeys(["mdlm", *(g.model for g in grid)]):
        # the recipes share one tokenizer
        model, tokenizer, _ = load_pretrained(getattr(args, key), device=args.device)
        models[key] = model.eval()
    ar_path = Path(args.ar)
    with_ar = not args.no_reference_rows and (ar_path / "config.json").is_file()
    train, val = corpus_rows(tokenizer)
    print(f"settings: {len(grid)} points, {args.num_samples} samples each, seed {args.seed}, "
          f"framing {args.framing}, {args.draws} draws, threads {args.threads}, "
          f"AR: {ar_path if with_ar else 'skipped'}")  # fmt: skip
    for g in grid:
        print(f"  {g.method:32s} T={g.config.steps:4d}  {json.dumps(g.config.to_dict())}")
    ids = special_ids(tokenizer)
    mdlm_nelbo, bigram, lam = gate_inputs(models["mdlm"], train, val, ids["mask"], len(tokenizer))
    print(f"gate inputs: MDLM NELBO {mdlm_nelbo:.3f}, interpolated bigram {bigram:.3f} (lam {lam})")
    reference = shuffled(val, args.num_samples, args.seed)
    model_dirs = {k: Path(getattr(args, k)) for k in models} | ({"ar": ar_path} if with_ar else {})
    info = {
        "command": "python benchmarks/text.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": f"{platform.machine()}, torch {torch.__version__}",
        "threads": args.threads, "seed": args.seed, "draws": args.draws, "device": args.device,
        "framing": args.framing, "num_samples": args.num_samples,
        "num_reference": len(reference), "mdlm_nelbo": mdlm_nelbo, "bigram_nelbo": bigram,
        "bigram_lambda": lam, "evaluator_precision": "bf16 autocast" if args.bf16 else "float32",
        "models": ", ".join(f"{k} `{v}`" for k, v in model_dirs.items()),
    }  # fmt: skip
    study = load_studies(args.merge) if args.merge else {"rows": [], "info": None}
    study["info"] = info
    done = {(r["method"], r["steps"]) for r in study["rows"]}
    rows_path = Path(args.rows_out) if args.rows_out else out / ROWS
    evaluator = load_evaluator(args.evaluator, device=args.device)
    scorer = Scorer(evaluator, tokenizer, reference, framing=args.framing,
                    mauve=not args.no_mauve, draws=args.draws, seed=args.seed,
                    bf16=args.bf16, quantizations=args.mauve_quantizations)  # fmt: skip

    def add(method: str, steps: int | None, result: dict[str, Any]) -> None:
        start = time.perf_counter()
        row = {"method": method, "steps": steps, "nfe": result["nfe"],
               "corrector_nfe": result["corrector_nfe"], "seconds": result["seconds"],
               **scorer(result["tokens"])}  # fmt: skip
        study["rows"].append(row)
        print(f"{method:32s} T={fmt(steps):>4s} NFE={fmt(row['nfe'], 1):>7s} "
              f"ppl={with_interval(row, 'gen_ppl', 1)} mauve={with_interval(row, 'mauve', 3)} "
              f"H={fmt(row['entropy'], 2)} d2={fmt(row['distinct2'], 2)} sample "
              f"{fmt(row['seconds'], 0)}s score {time.perf_counter() - start:.0f}s", flush=True)  # fmt: skip
        rows_path.write_text(json.dumps(study, indent=None) + "\n", encoding="utf-8")

    if not args.no_reference_rows and (DATA, None) not in done:
        data = shuffled(train, args.num_samples, args.seed)
        add(DATA, None, {"tokens": data, "nfe": None, "corrector_nfe": None, "seconds": None})
    if with_ar and (AR, None) not in done:
        ar = load_pretrained(ar_path, device=args.device).model.eval()
        stop = args.framing == "eos-cut"
        add(AR, None, generate_ar(ar, args.num_samples, args.batch_size, args.seed, stop))
    for g in grid:
        if (g.method, g.config.steps) not in done:
            result = generate(models[g.model], g, args.num_samples, args.batch_size, args.seed)
            add(g.method, g.config.steps, result)
    sort_rows(study["rows"], args.steps)
    rows_path.write_text(json.dumps(study, indent=None) + "\n", encoding="utf-8")
    copy_run_logs(out, model_dirs)
    path, summary = write_report(out, study, notes)
    print("wrote", path, "verdict:", summary["verdict"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
