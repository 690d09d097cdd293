"""Regenerate ``docs/results/text.md``: unconditional text, MDLM vs ReMDM vs ProSeCo (the paper's
Table 2 at CPU scale), from the checkpoints of the ``text-*-cpu`` recipes.

Every point samples ``--num-samples`` sequences of the training length (128) with the same seed,
nucleus ``top_p`` 0.9 and float64 draws (the paper's OWT settings), for every ``T`` in ``--steps``:

* MDLM model: MDLM sampling (ancestral), and ReMDM (``loop``, eta 0.02: the public OWT setting);
* ProSeCo model: MDLM sampling (no corrector), and ProSeCo sampling at several corrector budgets
  (``S`` corrector steps every ``omega`` unmasking steps, argmax updates);
* reference rows: held-out KJV chapters (the ``data`` row) and, when its checkpoint exists, the
  autoregressive baseline (``text-ar-cpu``, T = one step per token).

Metrics (:mod:`proseco.eval.text`), every sample cut at its first EOS: generative perplexity under
SmolLM2-135M (**not** the paper's GPT-2 Large: numbers are comparable within this report only),
mean per-sample unigram entropy of the model's own tokens, and MAUVE against other held-out chunks
on SmolLM2 features (skipped when ``mauve-text`` is not installed). NFE is what the sampler reports
per sample; wall time is the sampling time of all samples of a row. The verdict (did the paper's
ordering hold?) compares ProSeCo with MDLM and ReMDM at equal NFE (log-linear interpolation of the
baselines' curves; points outside their NFE range are not judged).

Usage::

    python benchmarks/text.py [--mdlm runs/text-mdlm/final] [--proseco runs/text-proseco/final]
        [--ar runs/text-ar/final] [--steps 16 32 64 128] [--num-samples 200] [--batch-size 50]
        [--seed 0] [--threads 2] [--out docs/results] [--no-mauve] [--quick]

``--quick`` (24 samples, T in {8, 16}, no MAUVE) is a smoke test that writes to ``--out`` too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DATA_SOURCE, VALIDATION_FRACTION, SPLIT_SEED, LENGTH = "corpus:kjv", 0.05, 42, 128
EVALUATOR_LABEL = "SmolLM2-135M gen-PPL"
MDLM, REMDM, PROSECO_PLAIN = "MDLM", "ReMDM loop (eta 0.02)", "ProSeCo model, no corrector"
PRISM, UDLM = "MDLM + PRISM (fine-tuned head)", "UDLM"
DATA, AR = "Data (held-out KJV)", "AR (left to right)"
# The diffusion baselines ProSeCo is judged against at equal NFE (AR is judged at its own NFE).
BASELINES = (MDLM, REMDM, PRISM, UDLM)
OPTIONAL_MODELS = ("prism", "udlm")  # used when their checkpoints exist
BUDGETS = ((1, 1), (1, 4))  # (S, omega): corrector steps, fired every omega steps


def proseco_method(steps: int, every: int) -> str:
    return f"ProSeCo S={steps} every={every}"


@dataclass(frozen=True)
class Setting:
    """One point: a row label, which model, and its decoding settings."""

    method: str
    model: str
    config: Any  # proseco.SamplingConfig


def settings(steps: list[int]) -> list[Setting]:
    """The grid, method-major."""
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
            corrector = Corrector(steps=s, every=every)
            grid.append(
                Setting(proseco_method(s, every), "proseco", c.replace(corrector=corrector))
            )
    order = list(dict.fromkeys(g.method for g in grid))
    return sorted(grid, key=lambda g: (order.index(g.method), g.config.steps))


# ------------------------------------------------------------------ data
def held_out_rows(tokenizer: Any, n_reference: int, n_data: int, seed: int) -> tuple:
    """Held-out chunks ``[N, 128]`` in the training layout: (MAUVE reference, data row).

    The validation chapters of the recipes' split (``split_records`` 5%, seed 42), wrapped like the
    training data, shuffled with ``seed``; the two sets do not overlap.
    """
    from proseco.data.text import encode_pretraining, read_records, split_records

    _, val = split_records(read_records(DATA_SOURCE), VALIDATION_FRACTION, SPLIT_SEED)
    rows = encode_pretraining([d["text"] for d in val], tokenizer, max_length=LENGTH)["input_ids"]
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    rows = rows[perm]
    if len(rows) < n_reference + 2:
        raise SystemExit(f"only {len(rows)} held-out chunks; lower --num-samples")
    return rows[:n_reference], rows[n_reference : n_reference + n_data]


# ------------------------------------------------------------------ sampling
def generate(model: Any, setting: Setting, n: int, batch_size: int, seed: int) -> dict[str, Any]:
    """``n`` samples in batches; NFE per sample (batch-weighted means) and total wall time."""
    from proseco.sampling.dispatch import sampler_for

    _, sample = sampler_for(model)
    generator = torch.Generator().manual_seed(seed)
    tokens, nfe, corrector_nfe = [], 0.0, 0.0
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        b = min(batch_size, n - first)
        with torch.inference_mode():
            out = sample(model, setting.config, batch_size=b, length=LENGTH, generator=generator)
        tokens.append(out.tokens.cpu())
        nfe += out.nfe * b
        corrector_nfe += out.corrector_nfe * b
    return {
        "tokens": torch.cat(tokens),
        "nfe": nfe / n,
        "corrector_nfe": corrector_nfe / n,
        "seconds": time.perf_counter() - start,
    }


def generate_ar(model: Any, n: int, batch_size: int, seed: int) -> dict[str, Any]:
    """``n`` left-to-right samples of 127 tokens after BOS (stopping at EOS), same nucleus."""
    from proseco.sampling import SamplingConfig
    from proseco.sampling.autoregressive import sample_autoregressive

    config = SamplingConfig(top_p=0.9, float64=True)
    generator = torch.Generator().manual_seed(seed)
    tokens, nfe = [], 0.0
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        b = min(batch_size, n - first)
        with torch.inference_mode():
            out = sample_autoregressive(
                model, config, batch_size=b, length=LENGTH - 1, generator=generator
            )
        tokens.append(out.tokens.cpu())
        nfe += out.nfe * b
    return {
        "tokens": torch.cat(tokens),
        "nfe": nfe / n,
        "corrector_nfe": 0.0,
        "seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------------ metrics
class Scorer:
    """Gen-PPL, entropy and MAUVE of token rows, with the reference features computed once."""

    def __init__(self, evaluator: Any, tokenizer: Any, reference: torch.Tensor, *, mauve: bool):
        from proseco.eval.text import evaluator_features, mauve_available

        self.evaluator, self.tokenizer = evaluator, tokenizer
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.mauve = mauve and mauve_available()
        self.reference_texts = self.texts(reference)
        self.reference_features = (
            evaluator_features(self.reference_texts, evaluator, bf16=True).numpy()
            if self.mauve
            else None
        )

    def cut(self, rows: torch.Tensor) -> list[list[int]]:
        from proseco.eval.text import cut_at_eos

        return [cut_at_eos(row, self.eos, bos_id=self.bos) for row in rows]

    def texts(self, rows: torch.Tensor) -> list[str]:
        return self.tokenizer.batch_decode(self.cut(rows), skip_special_tokens=True)

    def __call__(self, rows: torch.Tensor, seed: int) -> dict[str, Any]:
        from proseco.eval.text import evaluator_features, text_metrics

        texts = self.texts(rows)
        out = text_metrics(
            texts,
            self.evaluator,
            token_ids=rows,
            eos_id=self.eos,
            bos_id=self.bos,
            mauve=False,
            bf16=True,
        )
        out["mauve"] = None
        if self.mauve:
            import mauve

            q = evaluator_features(texts, self.evaluator, bf16=True).numpy()
            result = mauve.compute_mauve(
                p_features=self.reference_features, q_features=q, seed=seed, verbose=False
            )
            out["mauve"] = float(result.mauve)
        out["examples"] = texts[:3]
        return out


# ------------------------------------------------------------------ verdict
def interpolate(points: list[tuple[float, float]], nfe: float) -> float | None:
    """A baseline's metric at ``nfe``: linear in log(NFE) between its two nearest points."""
    points = sorted(p for p in points if p[1] is not None)
    if not points or nfe < points[0][0] * 0.999 or nfe > points[-1][0] * 1.001:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= nfe <= x1:
            if x1 == x0:
                return y0
            w = (math.log(nfe) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0)
    return points[0][1]


def verdict(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every ProSeCo-sampling point against each diffusion baseline at its NFE, and ProSeCo's
    curves at the AR row's NFE.

    Returns the comparisons and a summary: wins on gen-PPL (lower) and MAUVE (higher) out of the
    judged comparisons, overall and per baseline (``per_baseline[name]``), and the largest
    entropy drop of ProSeCo below the data row.
    """
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    data_entropy = next((r["entropy"] for r in rows if r["method"] == DATA), None)
    proseco = [r for r in rows if r["method"].startswith("ProSeCo S=")]
    comparisons = []
    for row in proseco:
        for base in BASELINES:
            if base not in by_method:
                continue
            entry = {"proseco": row["method"], "T": row["steps"], "nfe": row["nfe"], "vs": base}
            for key in ("gen_ppl", "mauve"):
                pts = [(r["nfe"], r[key]) for r in by_method[base]]
                entry[f"{key}_base"] = interpolate(pts, row["nfe"])
                entry[key] = row[key]
            comparisons.append(entry)
    for ar in by_method.get(AR, []):  # ProSeCo's curves at the AR row's NFE
        for method in dict.fromkeys(r["method"] for r in proseco):
            mine = by_method[method]
            entry = {"proseco": method, "T": None, "nfe": ar["nfe"], "vs": AR}
            for key in ("gen_ppl", "mauve"):
                entry[f"{key}_base"] = ar[key]
                entry[key] = interpolate([(r["nfe"], r[key]) for r in mine], ar["nfe"])
            comparisons.append(entry)

    def wins(group: list[dict[str, Any]]) -> dict[str, int]:
        ppl = [c for c in group if c["gen_ppl_base"] is not None and c["gen_ppl"] is not None]
        mauve = [c for c in group if c["mauve_base"] is not None and c["mauve"] is not None]
        return {
            "ppl_wins": sum(c["gen_ppl"] < c["gen_ppl_base"] for c in ppl),
            "ppl_judged": len(ppl),
            "mauve_wins": sum(c["mauve"] > c["mauve_base"] for c in mauve),
            "mauve_judged": len(mauve),
        }

    summary = {
        **wins([c for c in comparisons if c["vs"] in (MDLM, REMDM)]),
        "per_baseline": {
            base: wins([c for c in comparisons if c["vs"] == base])
            for base in (*BASELINES, AR)
            if any(c["vs"] == base for c in comparisons)
        },
        "data_entropy": data_entropy,
        "min_proseco_entropy": min((r["entropy"] for r in proseco), default=None),
    }
    return comparisons, summary


# ------------------------------------------------------------------ report
def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def plot(rows: list[dict[str, Any]], key: str, ylabel: str, path: Path, log_y: bool) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["steps"] is not None))
    for method in methods:
        pts = sorted(
            (r["nfe"], r[key]) for r in rows if r["method"] == method and r[key] is not None
        )
        if pts:
            style = "-o" if method.startswith("ProSeCo S=") else "--s"
            ax.plot(*zip(*pts), style, label=method, markersize=4)
    for ref, color in ((DATA, "black"), (AR, "tab:purple")):
        value = next((r[key] for r in rows if r["method"] == ref and r[key] is not None), None)
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


def write_report(out: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> Path:
    comparisons, summary = verdict(rows)
    has_mauve = any(r["mauve"] is not None for r in rows)
    plots = []
    if plot(rows, "gen_ppl", EVALUATOR_LABEL, out / "text_genppl_vs_nfe.png", log_y=True):
        plots.append(("gen-PPL vs NFE", "text_genppl_vs_nfe.png"))
    if has_mauve and plot(
        rows, "mauve", "MAUVE (SmolLM2-135M features)", out / "text_mauve_vs_nfe.png", log_y=False
    ):
        plots.append(("MAUVE vs NFE", "text_mauve_vs_nfe.png"))
    lines = [
        "# Unconditional text: ProSeCo vs MDLM, ReMDM, PRISM, UDLM and AR on the KJV "
        "(the paper's Table 2 at CPU scale)",
        "",
        f"Generated by `{info['command']}` on {info['date']} ({info['platform']}, "
        f"torch threads: {info['threads']}). Raw rows: `text_rows.json`.",
        "",
        "## Setting",
        "",
        f"- Models: `{info['mdlm']}` and `{info['proseco']}` (recipes `text-mdlm-cpu`, "
        "`text-proseco-cpu`: the same 2.06 M-parameter DiT, 4,096-token byte-level BPE, length 128, "
        f"wrapped layout, {info['budget']} on the KJV; ProSeCo with `errors_upweighted`). "
        + (
            f"AR: `{info['ar']}`."
            if info["ar"]
            else f"AR: no checkpoint at `{info['ar_path']}`, row skipped."
        ),
        f"- End of training: MDLM {info['validation']['mdlm']}; ProSeCo "
        f"{info['validation']['proseco']} (the MDLM term of its loss).",
        *[f"- {line}" for line in info.get("baseline_models", [])],
        f"- {info['num_samples']} samples per point, seed {info['seed']}, batch {info['batch_size']}, "
        "nucleus top-p 0.9, float64 draws, 128 tokens (the whole sequence, BOS included, is generated).",
        "- Every sample is cut at its first EOS (after a leading BOS) before every metric.",
        f"- Gen-PPL: **{EVALUATOR_LABEL}** (SmolLM2-135M-Instruct, bf16 autocast) - not GPT-2 Large, "
        "so the numbers compare within this report only. Entropy: mean per-sample unigram entropy "
        "of the model's own token ids (nats). MAUVE: against "
        f"{info['num_reference']} other held-out chunks on SmolLM2 last-token features"
        + ("." if has_mauve else " - **skipped** (mauve-text not installed or --no-mauve)."),
        "- The data row is held-out chunks (validation chapters, never trained on) scored the same way.",
        f"- NFE: model evaluations per sample as the sampler reports them; seconds: sampling wall "
        f"time of all {info['num_samples']} samples of a row on a CPU shared with other jobs.",
        "",
        "## Results",
        "",
        "| method | T | NFE | corrector NFE | "
        + EVALUATOR_LABEL
        + " (lower) | MAUVE (higher) | entropy | tokens/sample | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {fmt(r['steps'])} | {fmt(r['nfe'], 1)} | {fmt(r['corrector_nfe'], 1)} | "
            f"{fmt(r['gen_ppl'], 1)} | {fmt(r['mauve'])} | {fmt(r['entropy'], 2)} | "
            f"{fmt(r['mean_tokens'], 1)} | {fmt(r['seconds'], 1)} |"
        )
    lines += ["", *[f"![{title}]({name})" for title, name in plots], ""]
    lines += ["## Did the paper's ordering hold at this scale?", ""]
    s = summary
    ppl_ok = s["ppl_judged"] > 0 and s["ppl_wins"] == s["ppl_judged"]
    mauve_ok = s["mauve_judged"] > 0 and s["mauve_wins"] == s["mauve_judged"]
    drop = (
        s["data_entropy"] - s["min_proseco_entropy"]
        if s["data_entropy"] is not None and s["min_proseco_entropy"] is not None
        else None
    )
    entropy_ok = drop is not None and drop <= 0.05 * s["data_entropy"]
    lines.append(
        f"- Gen-PPL: ProSeCo sampling beat the baseline at equal NFE in **{s['ppl_wins']} of "
        f"{s['ppl_judged']}** judged comparisons (MDLM and ReMDM curves interpolated at "
        "ProSeCo's NFE)."
    )
    if has_mauve:
        lines.append(
            f"- MAUVE: ProSeCo higher in **{s['mauve_wins']} of {s['mauve_judged']}** judged "
            "comparisons."
        )
    for base, w in s.get("per_baseline", {}).items():
        how = "ProSeCo's curves interpolated at the AR row's NFE" if base == AR else "at equal NFE"
        text = (
            f"- vs **{base}** ({how}): ProSeCo lower gen-PPL in {w['ppl_wins']} of "
            f"{w['ppl_judged']}"
        )
        if has_mauve:
            text += f", higher MAUVE in {w['mauve_wins']} of {w['mauve_judged']}"
        lines.append(text + " judged comparisons.")
    if drop is not None:
        lines.append(
            f"- Entropy: data {s['data_entropy']:.2f} nats; lowest ProSeCo-sampling point "
            f"{s['min_proseco_entropy']:.2f} (drop {drop:.2f}, "
            + ("within" if entropy_ok else "more than")
            + " 5% of the data's: "
            + ("no collapse)." if entropy_ok else "collapse by this rule).")
        )
    held = ppl_ok and (mauve_ok or not has_mauve) and entropy_ok
    lines += [
        "",
        "**Verdict: the paper's ordering "
        + ("held" if held else "did not hold in full")
        + " at this scale** (rule: ProSeCo better on every judged gen-PPL"
        + (" and MAUVE" if has_mauve else "")
        + " comparison with entropy within 5% of the data's).",
        "",
        "| ProSeCo point | T | NFE | vs | baseline gen-PPL at this NFE | ProSeCo gen-PPL | "
        "baseline MAUVE | ProSeCo MAUVE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c['proseco']} | {fmt(c['T'])} | {fmt(c['nfe'], 1)} | {c['vs']} | "
            f"{fmt(c['gen_ppl_base'], 1)} | {fmt(c['gen_ppl'], 1)} | {fmt(c['mauve_base'])} | "
            f"{fmt(c['mauve'])} |"
        )
    lines += info.get("notes", [])
    lines += ["", "## Example samples (first three of each method at the largest T)", ""]
    largest = max((r["steps"] for r in rows if r["steps"] is not None), default=None)
    for r in rows:
        if r["steps"] in (None, largest):
            lines.append(f"**{r['method']}**" + (f" (T={r['steps']})" if r["steps"] else "") + ":")
            lines.append("")
            for text in r["examples"]:
                lines.append("> " + " ".join(text.split())[:400])
                lines.append("")
    path = out / "text.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def training_budget(*model_dirs: Path) -> str:
    """``batch B x N steps`` from the runs' ``config.yaml`` (beside ``final/``), if they agree."""
    import yaml

    budgets = set()
    for d in model_dirs:
        config = d.parent / "config.yaml"
        if not config.is_file():
            return "training budget unknown (no config.yaml beside the model)"
        train = yaml.safe_load(config.read_text(encoding="utf-8"))["train"]
        budgets.add(f"batch {train['global_batch_size']} x {train['max_steps']} steps")
    return " / ".join(sorted(budgets))


def final_validation(model_dir: Path) -> str:
    """The last validation NELBO the run logged (``metrics.jsonl`` beside ``final/``)."""
    path = model_dir.parent / "metrics.jsonl"
    if not path.is_file():
        return "no metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    val = [r for r in rows if r.get("split") == "validation"]
    if not val:
        return "no validation rows"
    last = val[-1]
    return f"validation NELBO {last['nelbo']:.3f} nats/token (PPL bound {last['ppl']:.0f}) at step {last['step']}"


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mdlm", default="runs/text-mdlm/final")
    p.add_argument("--proseco", default="runs/text-proseco/final")
    p.add_argument("--ar", default="runs/text-ar/final")
    p.add_argument("--prism", default="runs/text-prism/final", help="PRISM fine-tune (optional)")
    p.add_argument("--udlm", default="runs/text-udlm/final", help="UDLM checkpoint (optional)")
    p.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--num-samples", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--evaluator", default="smollm2-135m")
    p.add_argument("--no-mauve", action="store_true")
    p.add_argument("--methods", nargs="*", help="only these method labels (default: all)")
    p.add_argument(
        "--merge-rows",
        nargs="*",
        default=[],
        help="text_rows.json files of earlier or parallel runs: their points are reused, not redone",
    )
    p.add_argument("--out", default=str(REPO / "docs" / "results"))
    p.add_argument("--notes", help="a markdown file appended to the report (observations)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.num_samples, args.steps, args.no_mauve = 24, [8, 16], True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from proseco.eval.text import load_evaluator
    from proseco.pretrained import load_pretrained

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = settings(args.steps)
    if args.methods:
        grid = [g for g in grid if g.method in args.methods]
    missing = [k for k in OPTIONAL_MODELS if not (Path(getattr(args, k)) / "config.json").is_file()]
    grid = [g for g in grid if g.model not in missing]  # optional baselines without a checkpoint
    models = {}
    for key in dict.fromkeys(g.model for g in grid) or ("mdlm",):
        model, tokenizer, _ = load_pretrained(getattr(args, key))  # the recipes share one tokenizer
        models[key] = model
    ar_path = Path(args.ar)
    ar_model = load_pretrained(ar_path).model if (ar_path / "config.json").is_file() else None
    print(
        f"settings: {len(grid)} points, {args.num_samples} samples each, seed {args.seed}, "
        f"threads {args.threads}, AR: {ar_path if ar_model is not None else 'skipped'}"
    )
    for g in grid:
        print(f"  {g.method:32s} T={g.config.steps:4d}  {json.dumps(g.config.to_dict())}")
    reference, data_rows = held_out_rows(tokenizer, args.num_samples, args.num_samples, args.seed)
    scorers: list[Scorer] = []  # built on first use: a report-only run loads no evaluator

    def scorer(tokens: torch.Tensor, seed: int) -> dict[str, Any]:
        if not scorers:
            evaluator = load_evaluator(args.evaluator)
            scorers.append(Scorer(evaluator, tokenizer, reference, mauve=not args.no_mauve))
        return scorers[0](tokens, seed)

    rows: list[dict[str, Any]] = []
    done: set[tuple[str, int | None]] = set()
    for path in args.merge_rows:  # the first row of each point wins
        for row in json.loads(Path(path).read_text(encoding="utf-8")):
            if (row["method"], row["steps"]) not in done:
                rows.append(row)
                done.add((row["method"], row["steps"]))

    def add(method: str, steps: int | None, result: dict[str, Any]) -> None:
        start = time.perf_counter()
        metrics = scorer(result["tokens"], args.seed)
        row = {"method": method, "steps": steps, "nfe": result["nfe"],
               "corrector_nfe": result["corrector_nfe"], "seconds": result["seconds"],
               **metrics}  # fmt: skip
        rows.append(row)
        print(f"{method:32s} T={fmt(steps):>4s} NFE={fmt(row['nfe'], 1):>7s} ppl={fmt(row['gen_ppl'], 1):>8s} "
              f"mauve={fmt(row['mauve'])} H={fmt(row['entropy'], 2)} sample {fmt(row['seconds'], 0)}s "
              f"score {time.perf_counter() - start:.0f}s", flush=True)  # fmt: skip
        (out / "text_rows.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")

    if (DATA, None) not in done:
        add(DATA, None, {"tokens": data_rows, "nfe": None, "corrector_nfe": None, "seconds": None})
    if ar_model is not None and (AR, None) not in done:
        add(AR, None, generate_ar(ar_model, args.num_samples, args.batch_size, args.seed))
    for g in grid:
        if (g.method, g.config.steps) in done:
            continue
        add(
            g.method,
            g.config.steps,
            generate(models[g.model], g, args.num_samples, args.batch_size, args.seed),
        )
    info = {
        "command": "python benchmarks/text.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": f"{platform.machine()}, torch {torch.__version__}",
        "threads": args.threads,
        "mdlm": args.mdlm,
        "proseco": args.proseco,
        "ar": str(ar_path) if ar_model is not None else None,
        "ar_path": str(ar_path),
        "num_samples": args.num_samples,
        "num_reference": len(reference),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "budget": training_budget(Path(args.mdlm), Path(args.proseco)),
        "validation": {k: final_validation(Path(getattr(args, k))) for k in ("mdlm", "proseco")},
        "baseline_models": [
            f"{name}: "
            + (
                f"no checkpoint at `{getattr(args, key)}`, rows skipped"
                if key in missing
                else f"`{getattr(args, key)}` ({final_validation(Path(getattr(args, key)))})"
            )
            for key, name in (("prism", PRISM), ("udlm", UDLM))
        ],
    }
    order = [DATA, AR, *dict.fromkeys(g.method for g in settings(args.steps))]
    rows.sort(key=lambda r: (order.index(r["method"]) if r["method"] in order else len(order),
                             r["steps"] or 0))  # fmt: skip
    if args.merge_rows:
        info["notes"] = [
            "",
            f"Rows merged from earlier runs of this script: {', '.join(args.merge_rows)}.",
        ]
    (out / "text_rows.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    if args.notes:
        info.setdefault("notes", []).extend(["", Path(args.notes).read_text(encoding="utf-8")])
    print("wrote", write_report(out, rows, info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
