"""Regenerate ``docs/results/qm9.md``: MDLM vs ProSeCo on QM9, from trained checkpoints.

Two studies, every point with the same seed and ``--num-samples`` molecules:

* **Unconditional**, for every ``T`` in ``--steps``: MDLM model + MDLM sampling; MDLM model +
  ReMDM (``loop`` with the public defaults, ``cap`` with eta 0.02); ProSeCo model + MDLM sampling;
  ProSeCo model + ProSeCo sampling (S=1 every=1, S=2 every=2). Validity / uniqueness / novelty
  against the exact NFE the sampler reports (table, ``qm9_validity_vs_nfe.png``).
* **Guidance** (the paper's QM9 figure), if the ring-count models exist: MDLM-ring + MDLM sampling
  vs ProSeCo-ring + ProSeCo sampling (S=1 every=1, guided corrector), condition 1 (more rings),
  gamma in ``--gammas``, T in ``--guidance-steps``; number of novel molecules against their mean
  ring count (table, ``qm9_guidance_frontier.png``).

The paper's three claims are then judged by the fixed rules of ``benchmarks/qm9_claims.py`` and
the verdicts written into the report with their numbers. Raw rows go to ``qm9_rows.json``.

Usage::

    python benchmarks/qm9.py --checkpoints DIR --out docs/results [--num-samples 1000]
        [--batch-size 500] [--seed 0] [--steps 2 4 8 16 32] [--skip-guidance] [--quick]

``DIR`` holds model directories ``mdlm/``, ``proseco/``, ``mdlm-ring/``, ``proseco-ring/`` (each a
``save_pretrained`` directory, or a ``proseco train`` run directory with ``final/``); default: the
checkpoints shipped in ``proseco/assets/qm9``. ``--quick`` (64 samples, T in {2, 4}) is a smoke
test.
``--resume`` reuses the rows of an interrupted run (same samples, seed, batch size, checkpoints).
On a CPU shared with other jobs pass ``--threads 1``: two busy-waiting torch threads competing for
two cores made sampling ~8x slower in our measurements.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import qm9_claims as claims

REPO = Path(__file__).resolve().parents[1]
UNCOND_KEYS = ("mdlm", "proseco")
RING_KEYS = ("mdlm-ring", "proseco-ring")
MDLM, PROSECO_MODEL_MDLM = "MDLM", "ProSeCo model + MDLM sampling"
MDLM_RING, PROSECO_RING = "MDLM-ring + MDLM sampling", "ProSeCo-ring + ProSeCo S=1 every=1"
PAPER_BUDGET = "a DiT 'small' (~86 M non-embedding parameters) for 25,000 steps at batch 2048"
PAPER_SEQUENCES = 25_000 * 2048
PERCENT_KEYS = ("validity", "same NFE", "margin")


# --------------------------------------------------------------------- settings
def unconditional_settings(steps: list[int]) -> list:
    """The unconditional grid, in table order (method-major)."""
    from proseco.eval.study import SamplerSetting as S
    from proseco.sampling import Corrector, ReMDM, SamplingConfig

    grid = []
    for t in steps:
        c = SamplingConfig(steps=t)
        grid += [
            S(MDLM, "mdlm", c),
            S("MDLM + ReMDM loop (eta 0.02)", "mdlm", c.replace(unmasking=ReMDM("loop", eta=0.02))),
            S("MDLM + ReMDM cap (eta 0.02)", "mdlm", c.replace(unmasking=ReMDM("cap", eta=0.02))),
            S(PROSECO_MODEL_MDLM, "proseco", c),
            S("ProSeCo S=1 every=1", "proseco", c.replace(corrector=Corrector(steps=1, every=1))),
            S("ProSeCo S=2 every=2", "proseco", c.replace(corrector=Corrector(steps=2, every=2))),
        ]
    order = list(dict.fromkeys(s.method for s in grid))
    return sorted(grid, key=lambda s: (order.index(s.method), s.steps))


def guidance_settings(steps: list[int], gammas: list[float]) -> list:
    """The guidance grid: both ring models at every (T, gamma), condition 1."""
    from proseco.eval.study import SamplerSetting as S
    from proseco.sampling import Corrector, Guidance, SamplingConfig

    grid = []
    for method, key, s in ((MDLM_RING, "mdlm-ring", 0), (PROSECO_RING, "proseco-ring", 1)):
        corrector = Corrector(steps=s, every=1) if s else None
        for t in steps:
            for g in gammas:
                guidance = Guidance(gamma=g, condition=1)
                grid.append(
                    S(method, key, SamplingConfig(t, corrector=corrector, guidance=guidance))
                )
    return grid


# --------------------------------------------------------------------- checkpoints
def find_model_dir(root: Path, key: str) -> Path | None:
    """``root/key`` or ``root/key/final`` if it holds a ``config.json``, else None."""
    for path in (root / key, root / key / "final"):
        if (path / "config.json").is_file():
            return path
    return None


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def provenance(path: Path, model: Any) -> tuple[str, int | None]:
    """One line (size, then the training recipe read from files next to the model, if any) and
    the number of training sequences seen, if known."""
    import yaml

    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    bits = [f"{n / 1e6:.2f} M params ({cfg.num_layers} layers x {cfg.hidden_size})"]
    seen = None
    for where in (path, path.parent):
        info = where / "training_info.json"
        if info.is_file():
            record = json.loads(info.read_text())
            bits += [f"{k}={v}" for k, v in record.items() if isinstance(v, (str, int, float))][:10]
        recipe = where / "config.yaml"
        if recipe.is_file():
            c = yaml.safe_load(recipe.read_text()) or {}
            tr, loss, data = c.get("train", {}), c.get("loss", {}), c.get("data", {})
            if tr.get("max_steps") and tr.get("global_batch_size"):
                seen = int(tr["max_steps"]) * int(tr["global_batch_size"])
            bits.append(
                f"config.yaml: preset {c.get('model', {}).get('preset')}, "
                f"{tr.get('max_steps')} steps x batch {tr.get('global_batch_size')}, "
                f"sc_weight {loss.get('sc_weight')}, label {data.get('label')}"
            )
        readme = where / "README.md"
        if readme.is_file():
            lines = [x.strip() for x in readme.read_text().splitlines()]
            bits += [x for x in lines if x and not x.startswith("#")][:1]
    return "; ".join(bits), seen


def load_models(
    root: Path, skip_guidance: bool, only: tuple[str, ...] | None = None
) -> tuple[dict, dict, str | None]:
    """``(models, paths, reason the guidance study is skipped or None)``; ``only`` limits the
    models loaded (and so the settings run) to these keys."""
    from proseco.eval.study import load_model_dir

    if only:
        unknown = sorted(set(only) - set(UNCOND_KEYS + RING_KEYS))
        if unknown:
            raise SystemExit(f"error: unknown model keys {unknown}; use {UNCOND_KEYS + RING_KEYS}")
        paths = {k: find_model_dir(root, k) for k in only}
        missing = [k for k, p in paths.items() if p is None]
        if missing:
            raise SystemExit(f"error: {root} lacks the model dirs {missing}")
        return {k: load_model_dir(p) for k, p in paths.items()}, paths, None

    paths, missing = {}, []
    for key in UNCOND_KEYS + RING_KEYS:
        path = find_model_dir(root, key)
        if path is None:
            missing.append(key)
        else:
            paths[key] = path
    absent = ", ".join(f"{k}/" for k in UNCOND_KEYS if k in missing)
    if absent:
        raise SystemExit(
            f"error: {root} lacks the model dirs {absent} (each needs a config.json); train them "
            "with `proseco train qm9-mdlm-cpu` / `qm9-proseco-cpu` or pass --checkpoints DIR"
        )
    skip = "--skip-guidance was given" if skip_guidance else None
    absent = ", ".join(f"{k}/" for k in RING_KEYS if k in missing)
    if skip is None and absent:
        skip = f"the ring-count model dirs {absent} are missing in {root}"
    keys = UNCOND_KEYS if skip else UNCOND_KEYS + RING_KEYS
    models = {k: load_model_dir(paths[k]) for k in keys}
    if skip is None:
        flat = [k for k in RING_KEYS if not getattr(models[k][0].config, "num_classes", 0)]
        if flat:
            skip = f"{', '.join(flat)} are not class-conditional (config.num_classes = 0)"
    return models, {k: paths[k] for k in models}, skip


# --------------------------------------------------------------------- running
KEY_FIELDS = (
    "study",
    "method",
    "steps",
    "gamma",
    "num_samples",
    "seed",
    "batch_size",
    "checkpoint",
)


def run_study(models, paths, settings, study, args, train_smiles, done, save) -> list[dict]:
    """Evaluate ``settings`` in order (tqdm), reusing rows of ``done`` with the same key."""
    from tqdm.auto import tqdm

    from proseco.eval.study import evaluate_setting

    rows = []
    props = ("ring_count",) if study == "guidance" else ()
    for setting in tqdm(settings, desc=study, unit="setting"):
        meta = {
            "study": study,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "num_samples": args.num_samples,
            "checkpoint": _short(paths[setting.model]),
        }
        key = tuple({**meta, **setting.summary()}[k] for k in KEY_FIELDS)
        if key not in done:
            done[key] = {
                **meta,
                **evaluate_setting(
                    models,
                    setting,
                    train_smiles=train_smiles,
                    num_samples=args.num_samples,
                    batch_size=args.batch_size,
                    seed=args.seed,
                    properties=props,
                )[0],
            }
            save(rows + [done[key]])
        rows.append(done[key])
    return rows


def judge(uncond: list[dict], guided: list[dict], skipped: str | None) -> list:
    """The three claim verdicts, then the ablation (a) against the ProSeCo model + MDLM sampling."""
    mdlm = [r for r in uncond if r["method"] == MDLM]
    pro = [r for r in uncond if r["model"] == "proseco" and r["corrector_steps"] > 0]
    on = [r for r in guided if r["gamma"] > 0]
    if guided:
        c = claims.judge_guidance_frontier(
            [r for r in on if r["method"] == MDLM_RING],
            [r for r in on if r["method"] == PROSECO_RING],
        )
    else:
        reason = f"The guidance study was not run: {skipped or 'no guidance rows'}."
        c = claims.ClaimResult("c", claims.CLAIM_C, claims.NOT_TESTABLE, reason)
    ablation_ref = [r for r in uncond if r["method"] == PROSECO_MODEL_MDLM]
    return [
        claims.judge_small_t_validity(mdlm, pro),
        claims.judge_half_nfe(mdlm, pro),
        c,
        claims.judge_small_t_validity(ablation_ref, pro, reference_name=PROSECO_MODEL_MDLM),
    ]


def plot_guidance(rows: list[dict[str, Any]], path: Path, num_samples: int) -> None:
    """Novel molecules (x) against their mean ring count (y), as in the paper's QM9 figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    steps = sorted({r["steps"] for r in rows})
    for method, color in ((MDLM_RING, "tab:gray"), (PROSECO_RING, "tab:green")):
        for i, t in enumerate(steps):
            pts = sorted(
                (r["gamma"], r["num_novel_unique"], r["ring_count_novel_mean"])
                for r in rows
                if r["method"] == method
                and r["steps"] == t
                and r["ring_count_novel_mean"] is not None
            )
            if not pts:
                continue
            g, x, y = zip(*pts)
            ax.plot(x, y, ["-", "--", ":", "-."][i % 4], color=color, label=f"{method}, T={t}")
            ax.scatter(x, y, s=[16 + 14 * v for v in g], color=color, zorder=2)
            for gi, xi, yi in pts:
                ax.annotate(
                    f"{gi:g}", (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points"
                )
    ax.set_xlabel(f"novel valid unique molecules (of {num_samples})")
    ax.set_ylabel("mean ring count of novel molecules")
    ax.set_title("QM9 guidance towards more rings; point labels = gamma")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no novel molecules at any point", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------- report
def fmt(v: Any, kind: str = "") -> str:
    """A table cell: ``kind`` ``"pct"`` (fraction as %), ``"g"``, ``"1"`` (one decimal) or auto."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "g":
        return f"{v:g}"
    if isinstance(v, float):
        return f"{v:.1f}" if kind == "1" else f"{v:.2f}"
    return str(v)


def table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def rows_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: ``(header, row key, fmt kind)``."""
    return table([c[0] for c in columns], [[fmt(r[k], f) for _, k, f in columns] for r in rows])


UNCOND_COLUMNS = [
    ("method", "method", ""),
    ("T", "steps", ""),
    ("S", "corrector_steps", ""),
    ("every", "corrector_every", ""),
    ("NFE", "nfe", "1"),
    ("validity", "validity", "pct"),
    ("uniqueness", "uniqueness", "pct"),
    ("novelty", "novelty", "pct"),
    ("sec", "seconds", "1"),
]
GUIDED_COLUMNS = [
    ("method", "method", ""),
    ("T", "steps", ""),
    ("gamma", "gamma", "g"),
    ("NFE", "nfe", "1"),
    ("validity", "validity", "pct"),
    ("uniqueness", "uniqueness", "pct"),
    ("novel", "num_novel_unique", ""),
    ("rings (novel)", "ring_count_novel_mean", ""),
    ("rings (valid)", "ring_count_valid_mean", ""),
    ("sec", "seconds", "1"),
]


def validity_pivot(rows: list[dict]) -> str:
    """Validity (NFE) with one row per method and one column per T."""
    steps = sorted({r["steps"] for r in rows})
    cell = {(r["method"], r["steps"]): r for r in rows}
    body = [
        [m]
        + [
            f"{fmt(cell[m, t]['validity'], 'pct')} ({cell[m, t]['nfe']:.1f})"
            if (m, t) in cell
            else "–"
            for t in steps
        ]
        for m in dict.fromkeys(r["method"] for r in rows)
    ]
    return table(["method"] + [f"T={t}" for t in steps], body)


def claim_section(result: claims.ClaimResult, tried: str) -> str:
    text = f"### ({result.claim}) {result.statement}\n\n**Verdict: {result.verdict}.** "
    text += result.explanation + (
        f" Tried: {tried}" if tried and result.verdict != claims.HELD else ""
    )
    if result.details:
        keys = list(dict.fromkeys(k for d in result.details for k in d))
        kinds = ["pct" if any(p in k for p in PERCENT_KEYS) else "" for k in keys]
        body = [[fmt(d.get(k), f) for k, f in zip(keys, kinds)] for d in result.details]
        text += "\n\n" + table(keys, body)
    return text + "\n"


REPORT = """\
# QM9: MDLM vs ProSeCo (validity vs compute, guided ring-count maximisation)

Generated by `benchmarks/qm9.py`; do not edit by hand. Regenerate with:

    {command}

{info}

## Checkpoints

{checkpoints}

## Paper claims at this scale

{claims}
*Ablation, not a paper claim: rule (a) against the ProSeCo model with MDLM sampling
({ablation.verdict}).* {ablation.explanation}

## Unconditional generation: validity, uniqueness, novelty vs NFE

NFE = model calls per sample, as counted by the sampler.

![validity vs NFE](qm9_validity_vs_nfe.png)

Validity (NFE) by sampler and unmasking steps T:

{pivot}

All metrics:

{uncond}

## Guidance: novel molecules vs mean ring count

{guidance}

## Caveats

{caveats}
"""

GUIDANCE = """\
Classifier-free guidance towards class 1 (ring count above the dataset's 90th percentile); the
metrics are over the novel molecules (valid, unique, not in the training split). gamma = 0 is the
unconditional reference and is not used for claim (c); a guided call with gamma not in {{0, 1}}
costs 2 NFE; the ProSeCo corrector is guided.

![guidance frontier](qm9_guidance_frontier.png)

{table}"""


def render(meta: dict, uncond: list, guided: list, verdicts: list, tried: dict) -> str:
    """The whole ``qm9.md``; ``verdicts`` = :func:`judge`'s list (claims a-c, then the ablation)."""
    *paper, ablation = verdicts
    info = [
        ["git commit", f"`{meta['commit']}`"],
        ["date (UTC)", meta["date"]],
        ["torch / rdkit / python", meta["versions"]],
        ["samples per point", f"{meta['num_samples']} (batch {meta['batch_size']})"],
        ["seed", f"{meta['seed']} for every point (one generator per point)"],
        [
            "wall time",
            f"{meta['elapsed']:.0f} s for this invocation on {meta['machine']}; sampling time "
            f"summed over all rows: {meta['row_seconds']:.0f} s",
        ],
    ]
    ckpts = [[k, f"`{v['path']}`", v["info"]] for k, v in meta["checkpoints"].items()]
    if guided:
        guidance = GUIDANCE.format(table=rows_table(guided, GUIDED_COLUMNS))
    else:
        guidance = f"Not run: {meta['guidance_skipped']}."
    return REPORT.format(
        command=meta["command"],
        info=table(["", ""], info),
        checkpoints=table(["model", "path", "size and training"], ckpts),
        claims="\n".join(claim_section(v, tried[v.claim]) for v in paper),
        ablation=ablation,
        pivot=validity_pivot(uncond),
        uncond=rows_table(uncond, UNCOND_COLUMNS),
        guidance=guidance,
        caveats="\n".join(f"* {c}" for c in caveats(meta)),
    )


def caveats(meta: dict) -> list[str]:
    n = meta["num_samples"]
    seen = [c["sequences"] for c in meta["checkpoints"].values() if c["sequences"]]
    budget = (
        f"these checkpoints saw at most {max(seen):,} training sequences "
        f"({100 * max(seen) / PAPER_SEQUENCES:.2g}% of that)"
        if seen
        else "the training budget of these checkpoints is not recorded next to them"
    )
    return [
        f"Scale: the paper trained {PAPER_BUDGET} ({PAPER_SEQUENCES / 1e6:.1f} M sequences); "
        f"{budget}; model sizes are under Checkpoints. Absolute validities are therefore far "
        "below the paper's, and these runs test the direction of each effect, not its size.",
        f"Sampling noise: with {n} samples a validity near 50% has a binomial standard error of "
        f"{100 * claims.validity_se(0.5, n):.1f} points; differences under about twice that are "
        "not resolved. One seed per point, no error bars.",
        "Novelty compares RDKit-canonical SMILES with the canonical QM9 training split, which is "
        "stricter than the research code (raw strings).",
        "NFE counts network evaluations: a guided call with gamma not in {0, 1} costs 2 (the "
        "research code counted 1), so ProSeCo guidance runs (S=1 every=1) spend about twice "
        "MDLM's NFE at the same T. The research code also bypassed guidance inside the "
        "corrector; here the corrector is guided (`Guidance(in_corrector=True)`).",
    ]


# --------------------------------------------------------------------- main
def _git(*cmd: str) -> str:
    try:
        out = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoints", default=None, help="dir with mdlm/ proseco/ [mdlm-ring/ proseco-ring/]"
    )
    p.add_argument("--out", default=str(REPO / "docs" / "results"), help="where qm9.md etc. go")
    p.add_argument("--num-samples", type=int, default=None, help="molecules per point (1000)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, nargs="+", default=None, help="T grid (2 4 8 16 32)")
    p.add_argument("--guidance-steps", type=int, nargs="+", default=None, help="T grid (8 32)")
    p.add_argument("--gammas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 5.0])
    p.add_argument("--skip-guidance", action="store_true")
    p.add_argument(
        "--skip-unconditional",
        action="store_true",
        help="run only the guidance grid (e.g. in a second process; merge with --resume)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 64 samples, T in {2, 4}")
    p.add_argument("--resume", action="store_true", help="reuse matching rows of qm9_rows.json")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument(
        "--only-models",
        nargs="+",
        default=[],
        metavar="KEY",
        help="run only the settings of these models (e.g. mdlm while proseco still trains)",
    )
    p.add_argument(
        "--merge-rows",
        nargs="+",
        default=[],
        metavar="ROWS_JSON",
        help="reuse matching rows from these qm9_rows.json files (e.g. from parallel runs)",
    )
    args = p.parse_args(argv)
    args.num_samples = args.num_samples or (64 if args.quick else 1000)
    args.steps = sorted(set(args.steps or ([2, 4] if args.quick else [2, 4, 8, 16, 32])))
    args.guidance_steps = sorted(set(args.guidance_steps or ([2, 4] if args.quick else [8, 32])))
    if args.num_samples < 1 or args.batch_size < 1 or min(args.steps + args.guidance_steps) < 1:
        p.error("--num-samples, --batch-size and every step count must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    import rdkit
    import torch

    from proseco.data.qm9 import load_qm9
    from proseco.eval.study import plot_pareto
    from proseco.pretrained import shipped_checkpoints

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.checkpoints) if args.checkpoints else shipped_checkpoints()["mdlm"].parent
    models, paths, skipped = load_models(root, args.skip_guidance, tuple(args.only_models))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if skipped:
        print(f"guidance study skipped: {skipped}")
    rows_path = out / "qm9_rows.json"
    done = {}
    if args.resume and rows_path.is_file():
        done = {
            tuple(r[k] for k in KEY_FIELDS): r for r in json.loads(rows_path.read_text())["rows"]
        }
        print(f"resuming: {len(done)} rows found in {rows_path}")
    for extra in args.merge_rows:
        found = json.loads(Path(extra).read_text())["rows"]
        done.update({tuple(r[k] for k in KEY_FIELDS): r for r in found})
        print(f"merging: {len(found)} rows from {extra}")
    meta: dict[str, Any] = {
        "command": "python benchmarks/qm9.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "commit": _git("rev-parse", "--short", "HEAD")
        + (
            " (with uncommitted changes)"
            if _git("status", "--porcelain", "-uno") not in ("", "unknown")
            else ""
        ),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "versions": f"{torch.__version__} / {rdkit.__version__} / {platform.python_version()}",
        "machine": f"{platform.machine()} CPU (torch threads: {torch.get_num_threads()})",
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "checkpoints": {
            k: dict(zip(("path", "info", "sequences"), (_short(p), *provenance(p, models[k][0]))))
            for k, p in paths.items()
        },
        "guidance_skipped": skipped,
    }
    rows: dict[str, list[dict]] = {"unconditional": [], "guidance": []}

    def save(current: list[dict], complete: bool = False) -> None:
        done_rows = [r for v in rows.values() for r in v] + current
        rows_path.write_text(
            json.dumps({"meta": {**meta, "complete": complete}, "rows": done_rows}, indent=1)
        )

    print("loading the QM9 training set for novelty ...")
    train = set(load_qm9("train").smiles)
    grids = {}
    if not args.skip_unconditional:
        grids["unconditional"] = unconditional_settings(args.steps)
    if not skipped:
        grids["guidance"] = guidance_settings(args.guidance_steps, args.gammas)
    if args.only_models:
        grids = {k: [g for g in v if g.model in args.only_models] for k, v in grids.items()}
    for study, grid in grids.items():
        rows[study] = run_study(models, paths, grid, study, args, train, done, save)
    uncond, guided = rows["unconditional"], rows["guidance"]
    plot_pareto(
        uncond,
        out / "qm9_validity_vs_nfe.png",
        title=f"QM9, {args.num_samples} samples per point: validity vs NFE",
    )
    if guided:
        plot_guidance(guided, out / "qm9_guidance_frontier.png", args.num_samples)
    else:  # a plot from an earlier run would no longer match the report
        (out / "qm9_guidance_frontier.png").unlink(missing_ok=True)
    verdicts = judge(uncond, guided, skipped)
    grid_text = (
        f"T in {args.steps}, ProSeCo budgets S=1 every=1 and S=2 every=2, "
        f"{args.num_samples} samples, seed {args.seed}."
    )
    gammas = ", ".join(f"{g:g}" for g in args.gammas if g > 0)
    tried = {
        "a": grid_text,
        "b": grid_text,
        "c": ""
        if skipped
        else f"T in {args.guidance_steps}, gamma in {{{gammas}}}, ProSeCo "
        f"S=1 every=1 with guided corrector, {args.num_samples} samples, seed {args.seed}.",
    }
    meta["elapsed"] = time.perf_counter() - start
    meta["row_seconds"] = sum(r.get("seconds", 0.0) for r in uncond + guided)
    save([], complete=True)
    (out / "qm9.md").write_text(render(meta, uncond, guided, verdicts, tried))
    for v in verdicts[:3]:
        print(f"claim ({v.claim}): {v.verdict}")
    print(f"wrote {out}/qm9.md, qm9_rows.json and plots in {meta['elapsed']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
