"""Copy trained QM9 runs into the package (``src/proseco/assets/qm9/<name>``) with provenance.

Each shipped directory holds the exported model (EMA weights, config, tokenizer), the resolved
training config (``config.yaml``), the training log (``metrics.jsonl``) and a README with the exact
command that produced it. Usage::

    python benchmarks/ship_checkpoints.py RUNS_DIR [--names mdlm proseco mdlm-ring proseco-ring]

where ``RUNS_DIR/<name>`` is the ``--output-dir`` of ``proseco train qm9-<name>-cpu``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

ASSETS = Path(__file__).resolve().parents[1] / "src" / "proseco" / "assets" / "qm9"


def ship(run_dir: Path, name: str) -> Path:
    final = run_dir / "final"
    if not (final / "config.json").exists():
        raise FileNotFoundError(f"{final} has no exported model; did the run finish?")
    target = ASSETS / name
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final, tmp)
    shutil.copy(run_dir / "config.yaml", tmp / "config.yaml")
    shutil.copy(run_dir / "metrics.jsonl", tmp / "metrics.jsonl")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("split") == "validation"]
    train = config["train"]
    readme = [
        f"# QM9 checkpoint `{name}`",
        "",
        f"Produced by the committed recipe `qm9-{name}-cpu` on a 2-core CPU (one torch thread):",
        "",
        "```",
        f"OMP_NUM_THREADS=1 proseco train qm9-{name}-cpu --output-dir runs/{name} "
        "--train.progress_bar false",
        "```",
        "",
        f"seed {train['seed']}, {train['max_steps']} steps, global batch "
        f"{train['global_batch_size']}, EMA {train['ema_decay']} (the weights here are the EMA "
        f"weights), loss sc_weight {config['loss']['sc_weight']}.",
        "",
    ]
    if val:
        last = val[-1]
        readme.append(
            f"Final validation (step {last['step']}): NELBO {last['nelbo']:.4f} nats/token, "
            f"corrector NLL {last.get('corrector_nll', float('nan')):.4f}."
        )
    readme.append("")
    readme.append("`config.yaml` is the resolved config, `metrics.jsonl` the full training log.")
    (tmp / "README.md").write_text("\n".join(readme) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument(
        "--names", nargs="+", default=["mdlm", "proseco", "mdlm-ring", "proseco-ring"]
    )
    args = parser.parse_args()
    for name in args.names:
        print("shipped", ship(args.runs_dir / name, name))


if __name__ == "__main__":
    main()
