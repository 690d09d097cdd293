"""A prepared GPU check (a few minutes on one GPU): training throughput and cached sampling speed.

Two parts, one run, written to ``docs/results/gpu.md`` (raw numbers in ``docs/results/gpu.json``):

1. **training** — bf16 (autocast, float32 master weights, AdamW) training steps of the ``small``
   DiT (the paper's OpenWebText model: GPT-2 vocabulary + mask and pad, 50,259 tokens) at length
   1024 on random tokens, ``--batch`` sequences per step, dropout 0.1, MDLM (``mdm_loss``,
   ``t_min`` 1e-3) and ProSeCo (``proseco_loss``, two backwards, ``errors_upweighted``, ``t_min``
   0.1, as ``text-owt-gpu``), modes interleaved: tokens/s, step time and its ProSeCo / MDLM
   ratio, peak GPU memory (``torch.cuda.max_memory_allocated``) and model FLOP utilisation:
   ``passes x (6 N + 12 layers x hidden x length)`` FLOPs per token (PaLM's estimate; ``N`` =
   parameters without the input embedding; ProSeCo makes 2 passes) over the GPU's dense bf16 peak
   (from its name, or ``--peak-tflops``).
2. **sampling** — generated tokens/s of the same DiT (random weights, bf16) with ``cache`` none /
   prefix / dual at batch 1, 16 and 64: a 384-token prompt, 128 new tokens in blocks of 32, 128
   steps, greedy confidence unmasking; plain and with ``Corrector(1, every=1)``.

A part that would run past ``--budget-s`` (default 420 s in all) is skipped and the page says so.
On a machine without a CUDA GPU the script says so and exits 0 without touching the page::

    python benchmarks/gpu_check.py              # on a GPU machine; about 3 minutes on an H100
    python benchmarks/gpu_check.py --no-write   # print only

``--device cpu --preset cpu-tiny --length 32 --vocab 40 --no-write`` runs every code path on a
CPU at toy size (the tests do), so that the GPU run does not fail on a typo.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results" / "gpu.md"
VOCAB = 50259  # GPT-2 + mask + pad, as text-owt-gpu
LENGTH = 1024
CACHES = ("none", "prefix", "dual")
SAMPLING_BATCHES = (1, 16, 64)

# dense bf16 peak of common data-centre GPUs, TFLOP/s (no sparsity)
PEAK_TFLOPS = {
    "H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
    "L40": 181.0, "L4": 121.0, "A10": 125.0, "A6000": 155.0, "V100": 125.0, "B200": 2250.0,
}  # fmt: skip


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the GPU called ``name`` (longest matching key), or None."""
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name.upper():
            return PEAK_TFLOPS[key]
    return None


def model_flops_per_token(params_no_embedding: int, layers: int, hidden: int, length: int) -> float:
    """Training FLOPs of one forward + backward pass per token (PaLM appendix B)."""
    return 6.0 * params_no_embedding + 12.0 * layers * hidden * length


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dit(spec: dict[str, Any], dropout: float, device: Any) -> Any:
    import torch

    from proseco.models.dit import ProsecoDiT
    from proseco.models.dit_config import ProsecoDiTConfig

    vocab = spec["vocab"]
    config = ProsecoDiTConfig.from_preset(
        spec["preset"], vocab_size=vocab, mask_token_id=vocab - 2, max_length=spec["length"],
        dropout=dropout,
    )  # fmt: skip
    torch.manual_seed(0)
    return ProsecoDiT(config).to(device)


def measure_training(
    spec: dict[str, Any], batch: int, steps: int, warmup: int, device: Any, peak: float | None
) -> dict:
    """Part 1: interleaved MDLM / ProSeCo bf16 training steps."""
    import torch

    import proseco

    cuda = device.type == "cuda"
    model = _dit(spec, 0.1, device).train()
    config = model.config
    length, vocab = spec["length"], spec["vocab"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    mask_id = config.mask_token_id
    g = torch.Generator(device=device).manual_seed(0)
    x0 = torch.randint(0, vocab - 2, (batch, length), device=device, generator=g)

    def step(mode: str) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            if mode == "mdlm":
                out = proseco.mdm_loss(model, x0, mask_id=mask_id, generator=g, t_min=1e-3)
                out.loss.backward()
            else:
                proseco.proseco_loss(
                    model, x0, mask_id=mask_id, generator=g, t_min=0.1,
                    errors_upweighted=True, backward_fn=lambda loss: loss.backward(),
                )  # fmt: skip
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    modes = ("mdlm", "proseco")
    for _ in range(warmup):
        for mode in modes:
            step(mode)
    times: dict[str, list[float]] = {m: [] for m in modes}
    peaks = {}
    for mode in modes:  # peak memory of each mode on its own
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        step(mode)
        sync(device)
        peaks[mode] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    for _ in range(steps):
        for mode in modes:
            sync(device)
            started = time.perf_counter()
            step(mode)
            sync(device)
            times[mode].append(time.perf_counter() - started)
    params = sum(p.numel() for p in model.parameters())
    no_embedding = params - model.embed_tokens.weight.numel()
    per_token = model_flops_per_token(no_embedding, config.num_layers, config.hidden_size, length)
    rows = []
    base = statistics.median(times["mdlm"])
    for mode, passes in (("mdlm", 1), ("proseco", 2)):
        t = statistics.median(times[mode])
        tokens_per_s = batch * length / t
        achieved = passes * per_token * tokens_per_s
        rows.append({
            "mode": mode, "step_s": t, "ratio": t / base, "tokens_per_s": tokens_per_s,
            "tflops": achieved / 1e12, "mfu": None if peak is None else achieved / (peak * 1e12),
            "peak_gib": peaks[mode],
        })  # fmt: skip
    return {"params": params, "params_no_embedding": no_embedding, "batch": batch,
            "length": length, "preset": spec["preset"], "steps": steps, "rows": rows}  # fmt: skip


def measure_sampling(
    spec: dict[str, Any], device: Any, batches: tuple[int, ...], deadline: float
) -> dict:
    """Part 2: generated tokens/s with and without the cache."""
    import torch

    from proseco.sampling import Corrector, SamplingConfig, sample

    model = _dit(spec, 0.0, device).to(torch.bfloat16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    vocab = spec["vocab"]
    new = min(128, spec["length"] // 4)
    prompt_len = min(384, spec["length"] - new)
    rows, skipped = [], []
    for batch in batches:
        g = torch.Generator(device=device).manual_seed(1)
        prompt = torch.randint(0, vocab - 2, (batch, prompt_len), device=device, generator=g)
        for corrector in (False, True):
            for cache in CACHES:
                if time.perf_counter() > deadline:
                    skipped.append(f"batch {batch}, {'corrector' if corrector else 'plain'}, "
                                   f"cache {cache}")  # fmt: skip
                    continue
                config = SamplingConfig(
                    steps=new, unmasking="confidence", temperature=0.0, block_length=min(32, new),
                    corrector=Corrector(1, every=1) if corrector else None, cache=cache,
                )  # fmt: skip
                warm = min(32, new)  # a short warm-up run (kernels, allocator)
                sample(model, config.replace(steps=warm), prompt=prompt[:, :8], length=warm)
                out = sample(model, config, prompt=prompt, length=new)
                rows.append({
                    "batch": batch, "corrector": corrector, "cache": cache,
                    "seconds": out.wall_time, "tokens_per_s": batch * new / out.wall_time,
                    "nfe": out.nfe,
                })  # fmt: skip
                print(f"sampling batch {batch} corrector={corrector} cache={cache}: "
                      f"{out.wall_time:.2f} s", flush=True)  # fmt: skip
    return {"prompt": prompt_len, "new": new, "rows": rows, "skipped": skipped}


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# GPU check",
        "",
        f"Generated by `python benchmarks/gpu_check.py` on {meta['generated']} "
        f"({meta['seconds']:.0f} s). GPU: {meta['gpu']} ({meta['memory_gib']:.0f} GiB), "
        f"torch {meta['torch']}, CUDA {meta['cuda']}, Python {meta['python']}. Dense bf16 "
        f"peak used for MFU: {meta['peak_tflops'] or 'unknown'} TFLOP/s.",
        "",
    ]
    train = data.get("training")
    if train:
        lines += [
            f"## Training: `{train['preset']}` DiT, bf16, length {train['length']}",
            "",
            f"{train['params'] / 1e6:.1f} M parameters ({train['params_no_embedding'] / 1e6:.1f} M "
            f"without the input embedding), batch {train['batch']} x {train['length']} random "
            f"tokens, AdamW, gradient clipping 1, median of {train['steps']} steps per mode "
            "(interleaved). MFU counts 6N + 12 x layers x hidden x length FLOPs per token per "
            "pass; ProSeCo's step makes two passes (two backwards, the training default).",
            "",
            "| objective | step s | tokens/s | step time vs MDLM | TFLOP/s | MFU | peak memory GiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in train["rows"]:
            mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
            memory = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            lines.append(
                f"| {r['mode']} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
                f"{r['ratio']:.2f} | {r['tflops']:.0f} | {mfu} | {memory} |"
            )
        lines.append("")
    elif "training" in data.get("skipped_parts", []):
        lines += ["## Training", "", "Skipped: the time budget ran out.", ""]
    samp = data.get("sampling")
    if samp:
        lines += [
            "## Sampling: generated tokens/s with and without the KV cache",
            "",
            f"The same DiT, random weights in bf16, prompt {samp['prompt']}, {samp['new']} new "
            "tokens in blocks of 32, one token per step, greedy confidence unmasking; one run "
            "after a short warm-up.",
            "",
            "| batch | decoding | none tok/s | prefix tok/s | dual tok/s | dual speed-up |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        cells: dict[tuple, dict[str, float]] = {}
        for r in samp["rows"]:
            cells.setdefault((r["batch"], r["corrector"]), {})[r["cache"]] = r["tokens_per_s"]
        for (batch, corrector), by in cells.items():
            label = "Corrector(1, every=1)" if corrector else "plain"
            speed = (f"{by['dual'] / by['none']:.2f}x" if "dual" in by and "none" in by
                     else "—")  # fmt: skip
            values = " | ".join(f"{by[c]:,.0f}" if c in by else "—" for c in CACHES)
            lines.append(f"| {batch} | {label} | {values} | {speed} |")
        if samp["skipped"]:
            lines += ["", "Skipped (time budget): " + "; ".join(samp["skipped"]) + "."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="training sequences per step")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--out", type=Path, default=PAGE)
    parser.add_argument("--batches", type=int, nargs="+", default=list(SAMPLING_BATCHES),
                        help="sampling batch sizes (default 1 16 64)")  # fmt: skip
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--length", type=int, default=LENGTH)
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--no-write", action="store_true", help="print the page only")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine, so nothing was measured; run it where a "
              f"GPU is available ({args.out} is left as it is)")  # fmt: skip
        return 0
    started = time.perf_counter()
    deadline = started + args.budget_s
    spec = {"preset": args.preset, "length": args.length, "vocab": args.vocab}
    name = torch.cuda.get_device_name(device) if cuda else "CPU (a dry run)"
    peak = args.peak_tflops if args.peak_tflops is not None else peak_tflops(name)
    data: dict[str, Any] = {"skipped_parts": []}
    data["training"] = measure_training(spec, args.batch, args.steps, args.warmup, device, peak)
    print(json.dumps(data["training"], indent=1), flush=True)
    if cuda:
        torch.cuda.empty_cache()
    data["sampling"] = measure_sampling(spec, device, tuple(args.batches), deadline)
    memory = torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else 0.0
    data["meta"] = {
        "generated": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "seconds": time.perf_counter() - started,
        "gpu": name,
        "memory_gib": memory,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "peak_tflops": peak,
    }
    page = render(data)
    print(page)
    if not args.no_write:
        args.out.write_text(page)
        args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
