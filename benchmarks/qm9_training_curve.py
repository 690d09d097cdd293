"""Validity against training steps on QM9, from the intermediate checkpoints of training runs.

For every run given as ``--run NAME=DIR`` (a ``proseco train`` output directory) and every saved
checkpoint ``DIR/checkpoints/step-XXXXXXXX/`` (plus ``DIR/final/``, the exported last step), the
model is loaded with the EMA weights the released model would have had at that step
(``ProsecoDiT.from_pretrained`` of the checkpoint, then the ``shadow.*`` tensors of its
``ema.safetensors`` copied into the parameters) and ``--num-samples`` molecules are sampled at
``T = --steps`` (default 32), seed ``--seed``, decoded with the stop-at-first-``<eos>`` rule:

* an MDLM run (``loss.sc_weight`` 0 in its ``config.yaml``) with MDLM sampling;
* a ProSeCo run (``loss.sc_weight`` > 0) with ProSeCo sampling, S=1 every=1, and, with
  ``--also-mdlm-sampling``, with MDLM sampling too.

Each row also carries the validation NELBO the run logged at that step (``metrics.jsonl``).
A run fine-tuned from another model (``model.pretrained``, e.g. ProSeCo from the shipped MDLM)
records the base's training steps (``base_step``, from its ``export_info.json``): the plot and
``qm9.md`` put its checkpoints at base steps + own steps, after the base's own curve.
Writes ``qm9_training_curve.json`` (``meta`` and ``rows``) and ``qm9_training_curve.png``
(validity vs training step, one line per run and sampler; the validation NELBO beside it) into
``--out``; ``benchmarks/qm9.py`` embeds both in ``qm9.md`` when they are there.

Usage::

    python benchmarks/qm9_training_curve.py --run mdlm=runs/qm9-mdlm --run proseco=runs/qm9-proseco
        [--out docs/results] [--num-samples 1000] [--steps 32] [--seed 0] [--threads 1]
        [--batch-size 500] [--also-mdlm-sampling] [--resume] [--every N]

``--every N`` samples only the checkpoints at multiples of ``N`` steps (and ``final/``): a long
run's curve at a fraction of the cost. With ``--resume`` the file only grows: rows already
sampled with the same settings at other steps, or of runs not named this time, stay in it.

Runs keep only ``train.keep_checkpoints`` checkpoints (default 2); train with
``--train.keep_checkpoints 0`` (keep all) to get a curve with every ``save_every`` step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
JSON_NAME, PNG_NAME = "qm9_training_curve.json", "qm9_training_curve.png"
MDLM, PROSECO, PROSECO_MODEL_MDLM = "MDLM", "ProSeCo S=1 every=1", "ProSeCo model + MDLM sampling"
KEY_FIELDS = ("run", "step", "source", "method", "steps", "num_samples", "seed", "batch_size")


# --------------------------------------------------------------------- run directories
def parse_run(text: str) -> tuple[str, Path]:
    """``"NAME=DIR"`` -> ``(NAME, DIR)``."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(
            f"--run needs NAME=DIR (e.g. mdlm=runs/qm9-mdlm), got {text!r}"
        )
    return name, Path(path)


def run_config(run_dir: Path) -> dict:
    """The run's ``config.yaml`` as a dict (empty if there is none)."""
    import yaml

    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def is_proseco_run(name: str, config: dict) -> bool:
    """A ProSeCo run trains the corrector term (``loss.sc_weight > 0``); without a config the
    run's name decides."""
    weight = (config.get("loss") or {}).get("sc_weight")
    if weight is None:
        return "proseco" in name.lower()
    return float(weight) > 0


def base_step(config: dict) -> int:
    """The training steps of the model a fine-tuning run started from (``model.pretrained``, by
    the ``export_info.json`` it was exported with); 0 for a run from scratch or a base that does
    not record its step."""
    from proseco.data.text import resolve_source
    from proseco.training.checkpoint import exported_step

    pretrained = (config.get("model") or {}).get("pretrained")
    if not pretrained:
        return 0
    return exported_step(resolve_source(str(pretrained))) or 0


def run_info(config: dict) -> str:
    """One line on how the run was trained, from its ``config.yaml``."""
    if not config:
        return "no config.yaml"
    m, tr, o = config.get("model", {}), config.get("train", {}), config.get("optim", {})
    loss, data = config.get("loss", {}), config.get("data", {})
    size = m.get("preset") or "custom"
    if m.get("pretrained"):
        base = base_step(config)
        size = f"fine-tuned from `{m['pretrained']}`" + (f" (step {base:,})" if base else "")
    if m.get("hidden_size") or m.get("num_layers"):
        size += f" ({m.get('num_layers')} layers x {m.get('hidden_size')})"
    return (
        f"model {size}; {tr.get('max_steps')} steps x batch {tr.get('global_batch_size')}, "
        f"lr {o.get('lr')}, EMA {tr.get('ema_decay')}, sc_weight {loss.get('sc_weight')}, "
        f"label {data.get('label')}"
    )


def checkpoints_of(run_dir: Path, config: dict) -> list[tuple[int, str, Path]]:
    """``(step, source, path)`` oldest first: every complete checkpoint and ``final/`` (at the
    step its ``export_info.json`` records, else the config's ``max_steps``); a checkpoint at the
    final step is left out (``final/`` holds the same EMA weights)."""
    from proseco.training.checkpoint import exported_step, list_checkpoints

    found = [(step, "checkpoint", path) for step, path in list_checkpoints(run_dir)]
    final = run_dir / "final"
    if (final / "config.json").is_file():
        last = (config.get("train") or {}).get("max_steps")
        step = exported_step(final)  # exports before it was recorded: the configured last step
        if step is None:
            step = int(last) if last else (found[-1][0] if found else None)
        if step is None:
            warnings.warn(
                f"{final}: its training step is unknown (no config.yaml); left out", stacklevel=2
            )
        else:
            found = [f for f in found if f[0] != step] + [(step, "final", final)]
    return sorted(found, key=lambda f: (f[0], f[1] == "final"))


def thin(found: list[tuple[int, str, Path]], every: int) -> list[tuple[int, str, Path]]:
    """The checkpoints of ``found`` whose step is a multiple of ``every`` (0: all), and final/."""
    return [f for f in found if not every or f[1] == "final" or f[0] % every == 0]


def keep_done(rows: list[dict], done: dict[tuple, dict], settings: dict[str, Any]) -> list[dict]:
    """``rows`` plus the earlier rows this call did not sample (checkpoints left out by
    ``--every`` or pruned since, runs not named this time), so a resumed curve loses nothing.

    Only earlier rows sampled with the same ``settings`` (``steps``, ``num_samples``, ``seed``,
    ``batch_size``) are kept, and none at a (run, step, method) point this call sampled.
    """
    points = {(r["run"], r["step"], r["method"]) for r in rows}
    return rows + [
        r
        for r in done.values()
        if (r.get("run"), r.get("step"), r.get("method")) not in points
        and all(r.get(k) == v for k, v in settings.items())
    ]


def sort_rows(rows: list[dict], names: list[str]) -> list[dict]:
    """Rows by run (runs kept from earlier calls by name, then the ``--run`` order: the order
    they were measured in), step and method."""
    return sorted(
        rows,
        key=lambda r: (
            (1, names.index(r["run"]), "") if r["run"] in names else (0, 0, r["run"]),
            r["step"],
            r["method"],
        ),
    )


def validation_nelbo(run_dir: Path) -> dict[int, float]:
    """Validation NELBO by step from the run's ``metrics.jsonl`` (the last record of a step)."""
    path = run_dir / "metrics.jsonl"
    out: dict[int, float] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if record.get("split") == "validation" and record.get("nelbo") is not None:
            out[int(record["step"])] = float(record["nelbo"])
    return out


def load_with_ema(path: Path, source: str) -> tuple[Any, str]:
    """``(model, weights)``: ``final/`` as exported (EMA weights already in it); a checkpoint
    through ``ProsecoDiT.from_pretrained`` with its ``ema.safetensors`` shadows copied in."""
    import torch
    from safetensors.torch import load_file

    if source == "final":
        from proseco.pretrained import load_model

        return load_model(path), "ema (exported final/)"
    from proseco.models.dit import ProsecoDiT

    model = ProsecoDiT.from_pretrained(str(path)).eval()
    ema = path / "ema.safetensors"
    if not ema.is_file():
        warnings.warn(
            f"{path} has no ema.safetensors: using the raw training weights", stacklevel=2
        )
        return model, "raw (no ema.safetensors)"
    shadow = {
        k.removeprefix("shadow."): t
        for k, t in load_file(str(ema)).items()
        if k.startswith("shadow.")
    }
    params = dict(model.named_parameters())
    unknown = sorted(set(shadow) - set(params))
    if unknown:
        raise SystemExit(f"error: {ema} holds shadows of parameters the model lacks: {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in shadow.items():
            params[name].copy_(tensor.to(params[name].dtype))
    missing = sorted(set(params) - set(shadow))
    return model, "ema" if not missing else f"ema ({len(missing)} tensors without a shadow)"


def tokenizer_of(run_dir: Path, config: dict) -> Any:
    """The run's tokenizer: the one saved in ``final/``, else the one its recipe names."""
    from proseco.pretrained import load_tokenizer
    from proseco.training.build import build_tokenizer

    final = run_dir / "final"
    if (final / "config.json").is_file():
        tokenizer = load_tokenizer(final)
        if tokenizer is not None:
            return tokenizer
    return build_tokenizer((config.get("data") or {}).get("tokenizer") or "smiles")


# --------------------------------------------------------------------- rows
def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in KEY_FIELDS)


def samplers(proseco: bool, also_mdlm: bool, steps: int) -> list[tuple[str, Any]]:
    """``(method, SamplingConfig)`` pairs for one run."""
    from proseco.sampling import Corrector, SamplingConfig

    plain = SamplingConfig(steps=steps)
    if not proseco:
        return [(MDLM, plain)]
    out = [(PROSECO, plain.replace(corrector=Corrector(steps=1, every=1)))]
    return out + ([(PROSECO_MODEL_MDLM, plain)] if also_mdlm else [])


# --------------------------------------------------------------------- plot
def total_step(row: dict) -> int:
    """A row's training step counting the steps of the model its run was fine-tuned from."""
    return int(row["step"]) + int(row.get("base_step") or 0)


def plot_curve(rows: list[dict], path: Path, title: str = "") -> None:
    """Validity against training step, one line per (run, method); the runs' validation NELBO
    in a second panel when the rows have it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nelbo = [r for r in rows if r.get("nelbo") is not None]
    fig, axes = plt.subplots(
        1, 2 if nelbo else 1, figsize=(10.4 if nelbo else 6.0, 4.2), dpi=120, squeeze=False
    )
    ax = axes[0][0]
    for run, method in dict.fromkeys((r["run"], r["method"]) for r in rows):
        pts = sorted(
            (total_step(r), 100 * r["validity"])
            for r in rows
            if (r["run"], r["method"]) == (run, method) and r.get("validity") is not None
        )
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{method} ({run})")
    top = max((100 * r["validity"] for r in rows if r.get("validity") is not None), default=0)
    ax.set_ylim(0, max(5.0, 1.1 * top))
    ax.set_xlabel("training step (a fine-tuned run: its base's steps + its own)")
    ax.set_ylabel("validity (%)")
    ax.set_title(title or "QM9 validity vs training steps", fontsize=9)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    if nelbo:
        ax = axes[0][1]
        for run in dict.fromkeys(r["run"] for r in nelbo):
            pts = sorted({(total_step(r), r["nelbo"]) for r in nelbo if r["run"] == run})
            ax.plot(*zip(*pts), marker="o", label=run)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation NELBO (nats per token)")
        ax.set_title("validation NELBO (EMA weights)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------- main
def _git(*cmd: str) -> str:
    try:
        out = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run",
        type=parse_run,
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a proseco train run directory (repeat: --run mdlm=DIR --run proseco=DIR)",
    )
    p.add_argument("--out", default=str(REPO / "docs" / "results"), help="where the files go")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=32, help="unmasking steps T (32)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument(
        "--also-mdlm-sampling",
        action="store_true",
        help="also sample the ProSeCo runs' checkpoints with MDLM sampling",
    )
    p.add_argument("--resume", action="store_true", help=f"reuse matching rows of {JSON_NAME}")
    p.add_argument(
        "--every",
        type=int,
        default=0,
        help="sample only checkpoints whose step is a multiple of this, and final/ (0 = all); "
        "with --resume, rows of the others already sampled are kept",
    )
    args = p.parse_args(argv)
    names = [name for name, _ in args.run]
    if len(set(names)) != len(names):
        p.error(f"--run names must differ, got {names}")
    if args.every < 0:
        p.error("--every must be >= 0 (0 samples every checkpoint)")
    if min(args.num_samples, args.batch_size, args.steps) < 1:
        p.error("--num-samples, --batch-size and --steps must be >= 1")
    for name, path in args.run:
        if not path.is_dir():
            p.error(f"--run {name}={path}: no such directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    import torch

    from proseco.data.qm9 import load_qm9
    from proseco.eval.study import SamplerSetting, evaluate_setting

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / JSON_NAME
    done: dict[tuple, dict] = {}
    runs_meta: dict[str, dict] = {}
    if args.resume and json_path.is_file():
        earlier = json.loads(json_path.read_text())
        done = {row_key(r): r for r in earlier.get("rows", [])}
        runs_meta.update((earlier.get("meta") or {}).get("runs") or {})  # runs not named again
        print(f"resuming: {len(done)} rows found in {json_path}")
    plan = []
    for name, run_dir in args.run:
        config = run_config(run_dir)
        found = checkpoints_of(run_dir, config)
        if not found:
            raise SystemExit(f"error: {run_dir} has no checkpoints/step-*/ and no final/")
        proseco = is_proseco_run(name, config)
        if config and ("proseco" in name.lower()) != proseco:
            warnings.warn(
                f"--run {name}: its config.yaml says a {'ProSeCo' if proseco else 'MDLM'} run "
                f"(loss.sc_weight {config.get('loss', {}).get('sc_weight')}); sampled as such",
                stacklevel=2,
            )
        runs_meta[name] = {
            "path": _short(run_dir),
            "kind": "ProSeCo" if proseco else "MDLM",
            "info": run_info(config),
            "global_batch_size": (config.get("train") or {}).get("global_batch_size"),
            "base_step": base_step(config),
        }
        nelbo = validation_nelbo(run_dir)
        for step, source, path in thin(found, args.every):
            plan.append((name, run_dir, config, step, source, path, proseco, nelbo.get(step)))
        chosen = len(thin(found, args.every))
        print(
            f"{name}: {chosen} of {len(found)} checkpoints ({runs_meta[name]['kind']} run) in {run_dir}"
        )
    meta = {
        "command": "python benchmarks/qm9_training_curve.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "steps": args.steps,
        "eos_rule": "first",
        "runs": runs_meta,
    }
    rows: list[dict] = []

    names = [n for n, _ in args.run]
    settings = {k: getattr(args, k) for k in ("steps", "num_samples", "seed", "batch_size")}

    def save() -> None:
        """Write the rows so far (and the earlier ones not resampled) atomically."""
        tmp = json_path.with_name(f".{json_path.name}.tmp")
        tmp.write_text(
            json.dumps({"meta": meta, "rows": keep_done(rows, done, settings)}, indent=1)
        )
        tmp.replace(json_path)

    print("loading the QM9 training set for novelty ...")
    train = set(load_qm9("train").smiles)
    tokenizers: dict[str, Any] = {}
    for name, run_dir, config, step, source, path, proseco, nelbo in plan:
        todo = []
        for method, sampling in samplers(proseco, args.also_mdlm_sampling, args.steps):
            meta_row = {
                "run": name,
                "step": step,
                "source": source,
                "checkpoint": _short(path),
                "method": method,
                "steps": args.steps,
                "num_samples": args.num_samples,
                "seed": args.seed,
                "batch_size": args.batch_size,
                "nelbo": nelbo,
                "base_step": runs_meta[name]["base_step"],
            }
            if row_key(meta_row) in done:
                rows.append({**done[row_key(meta_row)], "nelbo": nelbo})
            else:
                todo.append((meta_row, sampling))
        if not todo:
            continue
        try:
            model, weights = load_with_ema(path, source)
        except (OSError, ValueError, RuntimeError) as e:  # e.g. pruned by a run still training
            warnings.warn(
                f"{path} cannot be loaded ({type(e).__name__}: {e}); left out", stacklevel=2
            )
            continue
        if name not in tokenizers:
            tokenizers[name] = tokenizer_of(run_dir, config)
        models = {name: (model, tokenizers[name])}
        for meta_row, sampling in todo:
            row, _ = evaluate_setting(
                models,
                SamplerSetting(meta_row["method"], name, sampling),
                train_smiles=train,
                num_samples=args.num_samples,
                batch_size=args.batch_size,
                seed=args.seed,
                eos_rule="first",
            )
            rows.append({**row, **meta_row, "weights": weights})
            save()
            print(
                f"{name} step {step} ({source}) {meta_row['method']}: validity "
                f"{100 * row['validity']:.1f}% at {row['nfe']:.1f} NFE"
                + (f", val. NELBO {nelbo:.3f}" if nelbo is not None else "")
            )
    rows = sort_rows(keep_done(rows, done, settings), names)
    meta["elapsed"] = round(time.perf_counter() - start, 1)
    save()
    title = f"QM9 validity at T={args.steps} ({args.num_samples} samples, stop at first <eos>)"
    plot_curve(rows, out / PNG_NAME, title)
    print(f"wrote {json_path} and {out / PNG_NAME} in {meta['elapsed']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
