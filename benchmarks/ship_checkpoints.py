"""Copy trained QM9 runs into the package (``src/proseco/assets/qm9/<name>``) with provenance.

Each shipped directory holds the exported model (EMA weights, config, tokenizer), the resolved
training config (``config.yaml``), the training log (``metrics.jsonl``), the decoding settings it is
meant to be sampled with (``sampling_config.json``: ProSeCo models T=8 with S=1 every=1, MDLM models
T=32) and a README with the exact command that produced it and, with ``--notes FILE``, what was
tried to choose the recipe. Usage::

    python benchmarks/ship_checkpoints.py RUNS_DIR [--names mdlm proseco ...] [--prefix qm9-]
        [--suffix=-small] [--recipe 'qm9-{name}-small-cpu'] [--notes NOTES.md]
        [--dtype float16|float32]

where ``RUNS_DIR/<prefix><name><suffix>`` is the ``--output-dir`` of the run's recipe
(``--recipe``, default ``qm9-<name>-cpu``). The weights are stored in float16 by default (half
the bytes, so the package's assets stay under 40 MB); ``proseco.load_pretrained`` loads them as
float32 on a CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

ASSETS = Path(__file__).resolve().parents[1] / "src" / "proseco" / "assets" / "qm9"


def default_sampling_config(config: dict):
    """ProSeCo models: T=8 with one corrector call every step; MDLM models: one step per token."""
    from proseco.sampling import Corrector, SamplingConfig

    if config["loss"].get("sc_weight", 1.0) > 0:
        return SamplingConfig(steps=8, corrector=Corrector(steps=1, every=1))
    return SamplingConfig(steps=config["data"]["max_length"])


def _hours(rows: list[dict]) -> str:
    """Training time from the logged throughput (tokens between log lines / tokens per second).
    Lines logged again after a resume (their ``tokens_seen`` goes back) add nothing."""
    train = [r for r in rows if r.get("split") == "train" and r.get("tokens_per_s")]
    seconds, seen = 0.0, 0
    for r in train:
        seconds += max(r["tokens_seen"] - seen, 0) / r["tokens_per_s"]
        seen = r["tokens_seen"]
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def resume_history(run_dir: Path) -> list[str]:
    """README lines on how often the run was stopped and resumed, and the settings changed on
    resume, from ``run_dir/resume_log.jsonl`` (none if the run went straight through)."""
    log = run_dir / "resume_log.jsonl"
    if not log.is_file():
        return []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not entries:
        return []
    changes = [
        f"`{field}` {old} -> {new} at step {e['step']}"
        for e in entries
        for field, (old, new) in (e.get("changed") or {}).items()
    ]
    lines = [
        f"The run was stopped and resumed from its checkpoints {len(entries)} times "
        "(`resume_log.jsonl`)"
        + ("; changed on resume: " + ", ".join(changes) if changes else "")
        + "."
    ]
    return lines + [""]


def store_as(directory: Path, dtype: str) -> None:
    """Rewrite the exported model in ``directory`` with its floating weights in ``dtype``."""
    import torch
    from transformers import AutoModelForMaskedLM

    import proseco.models.dit  # noqa: F401  (registers the DiT with the Auto classes)

    model = AutoModelForMaskedLM.from_pretrained(directory, dtype=torch.float32)
    model.to(getattr(torch, dtype)).save_pretrained(directory)


def base_model(config: dict) -> list[str]:
    """README lines naming the model a fine-tuning run started from (none for a run from
    scratch)."""
    pretrained = (config.get("model") or {}).get("pretrained")
    if not pretrained:
        return []
    return [
        f"Fine-tuned from `{pretrained}` (its README gives that model's own training); the "
        "steps above are the fine-tuning steps only.",
        "",
    ]


def ship(run_dir: Path, name: str, notes: str = "", dtype: str = "float16",
         assets: Path = ASSETS, recipe: str = "qm9-{name}-cpu") -> Path:  # fmt: skip
    """Copy ``run_dir/final`` (plus its config, log and a README) to ``assets/name``.

    ``recipe`` names the shipped recipe that produced the run (``{name}`` is filled in).
    """
    recipe = recipe.format(name=name)
    final = run_dir / "final"
    if not (final / "config.json").exists():
        raise FileNotFoundError(f"{final} has no exported model; did the run finish?")
    target = assets / name
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final, tmp)
    if dtype != "float32":
        store_as(tmp, dtype)
    shutil.copy(run_dir / "config.yaml", tmp / "config.yaml")
    shutil.copy(run_dir / "metrics.jsonl", tmp / "metrics.jsonl")
    if (run_dir / "resume_log.jsonl").is_file():
        shutil.copy(run_dir / "resume_log.jsonl", tmp / "resume_log.jsonl")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("split") == "validation"]
    train = config["train"]
    readme = [
        f"# QM9 checkpoint `{name}`",
        "",
        f"Produced by the committed recipe `{recipe}` on a 2-core CPU:",
        "",
        "```",
        f"proseco train {recipe} --output-dir runs/{run_dir.name}",
        "```",
        "",
        f"seed {train['seed']}, {train['max_steps']} steps, global batch "
        f"{train['global_batch_size']}, EMA {train['ema_decay']} (the weights here are the EMA "
        f"weights), loss sc_weight {config['loss']['sc_weight']}; about {_hours(rows)} of "
        "training (from the logged throughput).",
        "",
        *base_model(config),
        *resume_history(run_dir),
    ]
    if val:
        last = val[-1]
        readme.append(
            f"Final validation (step {last['step']}): NELBO {last['nelbo']:.4f} nats/token, "
            f"corrector NLL {last.get('corrector_nll', float('nan')):.4f}."
        )
    readme.append("")
    readme.append(f"The weights are stored in {dtype}; `proseco.load_pretrained` loads them as "
                  "float32 on a CPU.")  # fmt: skip
    readme.append("`config.yaml` is the resolved config, `metrics.jsonl` the full training log,")
    readme.append("`sampling_config.json` the decoding settings `proseco.load_pretrained` returns.")
    if notes:
        readme += ["", notes.strip()]
    (tmp / "README.md").write_text("\n".join(readme) + "\n")
    default_sampling_config(config).save_pretrained(tmp)
    old = target.with_name(target.name + ".old")  # a kill between the renames loses nothing
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument(
        "--names",
        nargs="+",
        default=["mdlm", "proseco", "mdlm-ring", "proseco-ring", "mdlm-qed", "proseco-qed"],
    )
    parser.add_argument("--prefix", default="", help="run directories are RUNS_DIR/PREFIXNAME")
    parser.add_argument("--suffix", default="", help="... or RUNS_DIR/PREFIXNAMESUFFIX")
    parser.add_argument("--notes", type=Path, default=None, help="markdown appended to READMEs")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16",
                        help="precision of the stored weights")  # fmt: skip
    parser.add_argument("--recipe", default="qm9-{name}-cpu",
                        help="the recipe that produced each run ({name} is filled in)")  # fmt: skip
    args = parser.parse_args()
    notes = args.notes.read_text() if args.notes else ""
    run_dirs = {name: args.runs_dir / f"{args.prefix}{name}{args.suffix}" for name in args.names}
    missing = [n for n, d in run_dirs.items() if not (d / "final" / "config.json").is_file()]
    if missing:
        print(f"ship_checkpoints: no finished run for {', '.join(missing)} in {args.runs_dir} "
              "(looked for PREFIXNAMESUFFIX/final/config.json); finish or --resume the training "
              "first", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    for name, run_dir in run_dirs.items():
        print("shipped", ship(run_dir, name, notes, args.dtype, recipe=args.recipe))


if __name__ == "__main__":
    main()
