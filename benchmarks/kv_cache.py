"""KV cache for block decoding: speed, NFE and accuracy of ``cache`` = none / prefix / dual.

Three parts, measured in one run and written as one section of ``docs/results/performance.md``
(between ``<!-- kv_cache:start -->`` / ``<!-- kv_cache:end -->`` markers; the rest of the page is
kept), with the raw rows in ``docs/results/kv_cache.json``:

1. **target** — issue 21's check: the bundled ``cpu-small`` DiT (random weights, vocabulary 4096
   as the project's BPE), batch 2, a 384-token prompt, 128 new tokens in blocks of 32, 128 steps,
   confidence unmasking (greedy), one thread; ``cache`` none / prefix / dual, plain and with
   ``Corrector(1, every=1)``, the modes interleaved in each of ``--repeats`` rounds (median).
   Speed-up = none's wall time / the mode's; *agreement* = share of generated tokens equal to
   ``cache="none"``'s under the same setting (random weights: the model barely reads context, so
   this says little about trained models; part 3 does). *Corrector cost* = the corrector run's
   wall time minus the plain run's, the same cache.
2. **grid** — tokens/s and NFE per sample for the caches x plain / corrector x prompt 384, 1024 x
   new tokens 128, 256 x batch 1, 8, blocks of 32 at ``--grid-tokens-per-step`` tokens per step
   (4 by default, the ``fast`` preset's rate, to keep the grid near an hour on one thread).
3. **accuracy** — exact-match accuracy of the committed SFT study models
   (``docs/results/sft_models/``: fill, latin; vanilla and ProSeCo SFT; 3 seeds) on 1000 held-out
   problems each, answered greedily with confidence unmasking, with each cache setting. Their
   answers (11 tokens with EOS) are one block in ``benchmarks/sft.py``; here they are decoded in
   blocks of 4 (4 + 4 + 3), so that a cache has earlier blocks and a future to hold. Settings:
   1 and 2 tokens per step, without and with ``Corrector(1, every=1)``
   (:class:`sft.Setting`, :func:`sft.evaluate` and :func:`sft.test_problems`, imported).

Run from the repository root::

    python benchmarks/kv_cache.py --threads 1                     # everything (about 1.5 h)
    python benchmarks/kv_cache.py --threads 1 --parts target      # the issue's check only
    python benchmarks/kv_cache.py --quick --no-write              # a smoke run
    python benchmarks/kv_cache.py --from-json docs/results/kv_cache.json   # re-render only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import sft  # noqa: E402  (benchmarks/sft.py: the study's settings, problems and evaluation)

from proseco.sampling import Corrector, SamplingConfig, sample  # noqa: E402

START, END = "<!-- kv_cache:start -->", "<!-- kv_cache:end -->"
CACHES = ("none", "prefix", "dual")
VOCAB = 4096
BLOCK = 32
SFT_BLOCK = 4


# --------------------------------------------------------------------- model and runs
def build_model(max_length: int, vocab_size: int = VOCAB, device: str = "cpu") -> Any:
    """The ``cpu-small`` DiT with random weights (perturbed, so that attention is not the
    identity of a zero-initialised adaLN), eval mode."""
    from proseco.models.dit import ProsecoDiT
    from proseco.models.dit_config import ProsecoDiTConfig

    config = ProsecoDiTConfig.from_preset(
        "cpu-small", vocab_size=vocab_size, mask_token_id=vocab_size - 1,
        max_length=max_length, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ProsecoDiT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.to(device).eval()


def decode_config(new: int, tokens_per_step: int, corrector: bool, cache: str) -> SamplingConfig:
    return SamplingConfig(
        steps=new // tokens_per_step,
        unmasking="confidence",
        temperature=0.0,
        block_length=BLOCK,
        corrector=Corrector(1, every=1) if corrector else None,
        cache=cache,
    )


def run_once(model: Any, prompt: torch.Tensor, new: int, config: SamplingConfig) -> dict:
    out = sample(model, config, prompt=prompt, length=new)
    return {
        "seconds": out.wall_time,
        "nfe": out.nfe,
        "corrector_nfe": out.corrector_nfe,
        "tokens": out.tokens[:, prompt.shape[1] :],
    }


def prompts(batch: int, length: int, vocab_size: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab_size - 1, (batch, length), generator=g)


def measure_target(repeats: int, quick: bool = False) -> list[dict]:
    """Part 1: every cache x plain / corrector, modes interleaved per round."""
    batch, prompt_len, new = 2, (96 if quick else 384), (32 if quick else 128)
    model = build_model(prompt_len + new)
    prompt = prompts(batch, prompt_len)
    runs: dict[tuple[bool, str], list[dict]] = {}
    for r in range(repeats):
        for corrector in (False, True):
            for cache in CACHES:
                config = decode_config(new, 1, corrector, cache)
                result = run_once(model, prompt, new, config)
                runs.setdefault((corrector, cache), []).append(result)
                print(f"target round {r}: corrector={corrector} cache={cache} "
                      f"{result['seconds']:.1f} s", flush=True)  # fmt: skip
    rows = []
    for (corrector, cache), results in runs.items():
        reference = runs[(corrector, "none")][0]["tokens"]
        rows.append({
            "corrector": corrector, "cache": cache, "batch": batch, "prompt": prompt_len,
            "new": new, "steps": new, "seconds": statistics.median(x["seconds"] for x in results),
            "nfe": results[0]["nfe"], "corrector_nfe": results[0]["corrector_nfe"],
            "agreement": float((results[0]["tokens"] == reference).float().mean()),
            "rounds": len(results),
        })  # fmt: skip
    return rows


def measure_grid(tokens_per_step: int, quick: bool = False) -> list[dict]:
    """Part 2: tokens/s and NFE over prompt length, new tokens, batch, cache and corrector."""
    prompt_lens, news, batches = ((96,), (64,), (1, 4)) if quick else ((384, 1024), (128, 256),
                                                                      (1, 8))  # fmt: skip
    model = build_model(max(prompt_lens) + max(news))
    rows = []
    for prompt_len in prompt_lens:
        for new in news:
            for batch in batches:
                prompt = prompts(batch, prompt_len)
                for corrector in (False, True):
                    for cache in CACHES:
                        config = decode_config(new, tokens_per_step, corrector, cache)
                        result = run_once(model, prompt, new, config)
                        rows.append({
                            "prompt": prompt_len, "new": new, "batch": batch,
                            "corrector": corrector, "cache": cache,
                            "steps": config.steps, "seconds": result["seconds"],
                            "tokens_per_s": batch * new / result["seconds"],
                            "nfe": result["nfe"], "corrector_nfe": result["corrector_nfe"],
                        })  # fmt: skip
                        print(f"grid P={prompt_len} N={new} B={batch} corrector={corrector} "
                              f"cache={cache}: {result['seconds']:.1f} s", flush=True)  # fmt: skip
    return rows


# --------------------------------------------------------------------- SFT accuracy
@dataclasses.dataclass(frozen=True)
class CachedSetting(sft.Setting):
    """A :class:`sft.Setting` decoded in blocks of ``block_length`` with ``cache``."""

    cache: str = "none"
    block_length: int = SFT_BLOCK

    @property
    def name(self) -> str:
        return f"{sft.Setting.name.fget(self)}, cache {self.cache}"

    def config(self, length: int) -> SamplingConfig:
        blocks = math.ceil(length / self.block_length)
        per_block = math.ceil(min(self.block_length, length) / self.tokens_per_step)
        return (
            super()
            .config(length)
            .replace(block_length=self.block_length, steps=blocks * per_block, cache=self.cache)
        )


def accuracy_settings() -> list[CachedSetting]:
    return [CachedSetting(k, s, cache=cache) for s in (0, 1) for k in (1, 2) for cache in CACHES]


def measure_accuracy(limit: int, tasks: tuple[str, ...] = ("fill", "latin")) -> list[dict]:
    """Part 3: every committed study model under every cached setting."""
    rows = []
    for task in tasks:
        records = sft.test_problems(task, limit)
        for objective in sft.OBJECTIVES:
            for seed in sft.SEEDS:
                path = sft.model_dir(task, objective, seed, ROOT / sft.MODELS_DIR)
                model, tokenizer = sft.load_model(path)
                for setting in accuracy_settings():
                    row = sft.evaluate(model, tokenizer, records, setting)
                    row.update(task=task, objective=objective, seed=seed, cache=setting.cache)
                    row.pop("correct", None)
                    rows.append(row)
                    print(f"accuracy {task} {objective} seed {seed} {setting.name}: "
                          f"{100 * row['acc']:.1f} % NFE {row['nfe']:.2f}", flush=True)  # fmt: skip
    return rows


# --------------------------------------------------------------------- the page
def _f(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}"


def target_lines(rows: list[dict]) -> tuple[list[str], dict[str, float]]:
    by = {(r["corrector"], r["cache"]): r for r in rows}
    any_row = rows[0]
    lines = [
        f"### The issue's check: batch {any_row['batch']}, prompt {any_row['prompt']}, "
        f"{any_row['new']} new tokens",
        "",
        f"`cpu-small` DiT (random weights), batch {any_row['batch']}, prompt "
        f"{any_row['prompt']}, {any_row['new']} new tokens in blocks of {BLOCK}, "
        f"{any_row['steps']} steps, greedy confidence unmasking; median of "
        f"{any_row['rounds']} round(s), modes interleaved.",
        "",
        "| decoding | cache | wall s | tokens/s | NFE / sample | corrector NFE | speed-up vs none "
        "| agreement with none | corrector cost s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = {}
    for corrector in (False, True):
        base = by[(corrector, "none")]["seconds"]
        for cache in CACHES:
            r = by[(corrector, cache)]
            speed = base / r["seconds"]
            ratios[f"{'corrector' if corrector else 'plain'} {cache}"] = speed
            cost = "—"
            if corrector:
                cost = _f(r["seconds"] - by[(False, cache)]["seconds"], 1)
            label = "Corrector(1, every=1)" if corrector else "plain"
            tokens_per_s = r["batch"] * r["new"] / r["seconds"]
            lines.append(
                f"| {label} | {cache} | {_f(r['seconds'], 1)} | {_f(tokens_per_s, 1)} | "
                f"{r['nfe']:.0f} | {r['corrector_nfe']:.0f} | {speed:.2f}x | "
                f"{100 * r['agreement']:.1f} % | {cost} |"
            )
    cost_none = by[(True, "none")]["seconds"] - by[(False, "none")]["seconds"]
    cost_dual = by[(True, "dual")]["seconds"] - by[(False, "dual")]["seconds"]
    ratios["corrector cost dual / none"] = cost_dual / cost_none
    lines += [
        "",
        f'`cache="dual"` is **{ratios["plain dual"]:.2f}x** faster than `"none"` for plain '
        f"decoding and **{ratios['corrector dual']:.2f}x** with `Corrector(1, every=1)` (target: "
        f'>= 3x and >= 2x); `"prefix"`: {ratios["plain prefix"]:.2f}x and '
        f"{ratios['corrector prefix']:.2f}x. The corrector costs {_f(cost_dual, 1)} s on top of "
        f"plain decoding under the dual cache, {ratios['corrector cost dual / none']:.2f} of its "
        f"{_f(cost_none, 1)} s over the whole sequence (it revises the current block only, "
        "against the cached context; without a cache it revises every generated position up to "
        "the block's end). NFEs are the same: a call on a window is one evaluation.",
        "",
        "Agreement on random weights says little: the untrained model barely reads context, so "
        "plain decoding agrees fully, while its corrector maps tokens onto a few attractor "
        "tokens, and without a cache it keeps rewriting the earlier blocks at every step (a "
        "cache commits them), so the corrected tokens part ways. The accuracy table below is "
        "the measure of what caching costs.",
    ]
    return lines, ratios


def grid_lines(rows: list[dict]) -> list[str]:
    any_row = rows[0]
    per_step = any_row["new"] // any_row["steps"]
    lines = [
        "### Tokens/s over prompt length, answer length and batch",
        "",
        f"Same model, blocks of {BLOCK}, {per_step} tokens per step (greedy confidence), one run "
        "per cell; tokens/s = generated tokens (batch x new) per second; NFE per sample.",
        "",
        "| prompt | new | batch | decoding | none tok/s | prefix tok/s | dual tok/s | prefix "
        "speed-up | dual speed-up | NFE none / prefix / dual |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cells.setdefault((r["prompt"], r["new"], r["batch"], r["corrector"]), {})[r["cache"]] = r
    for (prompt, new, batch, corrector), by in cells.items():
        base = by["none"]["tokens_per_s"]
        label = "Corrector(1, every=1)" if corrector else "plain"
        lines.append(
            f"| {prompt} | {new} | {batch} | {label} | {_f(base, 1)} | "
            f"{_f(by['prefix']['tokens_per_s'], 1)} | {_f(by['dual']['tokens_per_s'], 1)} | "
            f"{by['prefix']['tokens_per_s'] / base:.2f}x | {by['dual']['tokens_per_s'] / base:.2f}x"
            f" | {by['none']['nfe']:.0f} / {by['prefix']['nfe']:.0f} / {by['dual']['nfe']:.0f} |"
        )
    return lines


def accuracy_lines(rows: list[dict]) -> list[str]:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    columns = [(t, o) for t in tasks for o in sft.OBJECTIVES]
    n = rows[0]["n"]
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "### Accuracy cost: the SFT study models",
        "",
        f"Exact-match accuracy of the committed models of issue 19's study "
        f"(`docs/results/sft_models/`), mean over seeds {seeds}, {n} held-out problems per "
        f"task; answers of 11 tokens decoded greedily in blocks of {SFT_BLOCK} (4 + 4 + 3), "
        "confidence unmasking, every cache setting on the same problems. Delta = points against "
        '`cache="none"` with the same setting.',
        "",
        "| setting | cache | "
        + " | ".join(f"{t} {sft.LABELS[o]}" for t, o in columns)
        + " | mean | delta | NFE / answer |",
        "|---|---|" + "---:|" * (len(columns) + 3),
    ]
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        key = (r["k"], r["S"])
        groups.setdefault(key, {}).setdefault(r["cache"], []).append(r)
    for (k, s), by_cache in groups.items():
        base = None
        for cache in CACHES:
            sel = by_cache.get(cache, [])
            if not sel:
                continue
            accs = []
            for t, o in columns:
                vals = [r["acc"] for r in sel if r["task"] == t and r["objective"] == o]
                accs.append(statistics.mean(vals) if vals else float("nan"))
            mean = statistics.mean(accs)
            base = mean if cache == "none" else base
            delta = "—" if cache == "none" else f"{100 * (mean - base):+.1f}"
            nfe = statistics.mean(r["nfe"] for r in sel)
            name = f"{k} tok/step" + (f" + S={s}" if s else "")
            lines.append(
                f"| {name} | {cache} | "
                + " | ".join(f"{100 * a:.1f} %" for a in accs)
                + f" | {100 * mean:.1f} % | {delta} | {nfe:.2f} |"
            )
    return lines


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "## KV cache for block decoding: `cache` none / prefix / dual",
        "",
        f"Generated by `{meta['command']}` on {meta['generated']} ({meta['minutes']:.0f} min); "
        "rerun it to refresh this section (`benchmarks/performance_report.py` does not). Raw "
        "rows: `docs/results/kv_cache.json`.",
        "",
        f"Machine: {meta['machine']}, {meta['threads']} torch thread(s); the cores were shared "
        "with other processes, so absolute times are noisy (modes are interleaved within each "
        "table). `prefix` caches the keys and values of the prompt and the finished blocks at "
        "each block's first call; `dual` also those of the masked positions after the block "
        "(Fast-dLLM's DualCache). Both are approximations of `none`: cached entries do not see "
        "the block's later changes.",
        "",
    ]
    if data.get("target"):
        part, _ = target_lines(data["target"])
        lines += part + [""]
    if data.get("grid"):
        lines += grid_lines(data["grid"]) + [""]
    if data.get("accuracy"):
        lines += accuracy_lines(data["accuracy"]) + [""]
    return "\n".join(lines)


def write_section(section: str, path: Path) -> None:
    """Put ``section`` between the markers of ``path`` (appended when they are missing)."""
    text = path.read_text() if path.exists() else "# Performance\n"
    block = f"{START}\n{section}{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, Python {platform.python_version()}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="target,grid,accuracy",
                        help="comma-separated parts to measure: target, grid, accuracy")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the target part")
    parser.add_argument("--grid-tokens-per-step", type=int, default=4)
    parser.add_argument("--limit", type=int, default=sft.N_TEST, help="problems per SFT task")
    parser.add_argument("--quick", action="store_true", help="small settings (a smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "performance.md")
    parser.add_argument("--json", type=Path, default=None,
                        help="raw rows (default: kv_cache.json beside --out)")  # fmt: skip
    parser.add_argument("--from-json", type=Path, default=None, help="re-render these rows only")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args(argv)
    json_path = args.json or args.out.with_name("kv_cache.json")

    if args.from_json is not None:
        data = json.loads(args.from_json.read_text())
    else:
        torch.set_num_threads(args.threads)
        parts = {p.strip() for p in args.parts.split(",") if p.strip()}
        unknown = parts - {"target", "grid", "accuracy"}
        if unknown:
            parser.error(f"unknown parts {sorted(unknown)}")
        data: dict[str, Any] = {}
        if not args.no_write and json_path.is_file():  # parts not measured now are kept
            data = {k: v for k, v in json.loads(json_path.read_text()).items() if k != "meta"}
        started = time.perf_counter()
        if "target" in parts:
            data["target"] = measure_target(args.repeats, args.quick)
        if "grid" in parts:
            data["grid"] = measure_grid(args.grid_tokens_per_step, args.quick)
        if "accuracy" in parts:
            data["accuracy"] = measure_accuracy(20 if args.quick else args.limit)
        command = "python benchmarks/kv_cache.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        data["meta"] = {
            "generated": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            "minutes": (time.perf_counter() - started) / 60,
            "machine": machine(),
            "threads": torch.get_num_threads(),
            "command": command.strip(),
            "parts": sorted(parts),
        }
    section = render(data)
    print(section)
    if args.no_write:
        return 0
    written = [args.out]
    if args.from_json is None:
        json_path.write_text(json.dumps(data, indent=1) + "\n")
        written.append(json_path)
    write_section(section, args.out)
    print("wrote " + " and ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
