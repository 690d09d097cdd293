"""Sampler overhead: wall time of ``proseco.sample`` relative to its model calls alone.

For each sampler setting, prints ``ratio = sampler wall time / (model calls x time of one bare
call)``. ``ratio = 1`` means the loop costs nothing beyond the network; the goal is ``<= 1.10``.
Two estimates of the bare call time, both measured in the same run:

* ``ratio`` — the mean duration of the very ``model(x)`` calls the sampler made (a thin timing
  wrapper around the model), so that load from other processes inflates numerator and denominator
  alike. This is the number to read on a shared machine.
* ``ratio*`` — the median of 20 separate bare ``model(x)`` calls on a half-masked batch of the same
  shape, timed just before and after each sampler run (sensitive to load changes); a call on
  ``n < B`` rows (rows that left the batch) counts as ``n / B`` of a call.

Each figure is the median over ``--repeats`` runs. Model: the bundled DiT, ``cpu-tiny`` preset
(random weights, eval mode)::

    python benchmarks/sampler_overhead.py                       # CPU, B=8, L=T=128, V=64
    python benchmarks/sampler_overhead.py --length 256 --vocab-size 50258 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import proseco.sampling as ps


def build_model(vocab_size: int, max_length: int, device: str) -> torch.nn.Module:
    from proseco.models.dit import ProsecoDiT
    from proseco.models.dit_config import ProsecoDiTConfig

    config = ProsecoDiTConfig.from_preset(
        "cpu-tiny",
        vocab_size=vocab_size,
        mask_token_id=vocab_size - 1,
        max_length=max_length,
        dropout=0.0,
    )
    torch.manual_seed(0)
    model = ProsecoDiT(config)
    with torch.no_grad():  # zero-initialised heads give constant logits; make them informative
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.to(device).eval()


def settings(steps: int) -> dict[str, ps.SamplingConfig]:
    """The sampler settings measured, each a :class:`proseco.SamplingConfig`."""
    base = ps.SamplingConfig(steps=steps)
    return {
        "MDLM (ancestral)": base,
        "MDLM top-p 0.9, float64": base.replace(top_p=0.9, float64=True),
        "ProSeCo S=2, every=1": base.replace(corrector=ps.Corrector(steps=2, every=1)),
        "ProSeCo S=4, every=4": base.replace(corrector=ps.Corrector(steps=4, every=4)),
        "ProSeCo S=2 sample-update": base.replace(
            corrector=ps.Corrector(2, every=2, update="sample")
        ),
        "confidence + ProSeCo S=2": base.replace(unmasking="confidence", corrector=ps.Corrector(2)),
        "ReMDM loop, top-p 0.9": base.replace(unmasking=ps.ReMDM("loop", eta=0.02), top_p=0.9),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class TimedModel(torch.nn.Module):
    """Forwards to ``model`` and adds up the wall time of each call (synchronised on CUDA)."""

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        super().__init__()
        self.model, self.config, self.device = model, model.config, device
        self.seconds, self.calls = 0.0, 0

    def forward(self, input_ids, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = self.model(input_ids, **kwargs)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


@torch.no_grad()
def bare_call_time(model, batch: int, length: int, mask_id: int, device: str, calls: int) -> float:
    """Median seconds of one ``model(x)`` call on a half-masked batch."""
    x = torch.randint(0, mask_id, (batch, length), device=device)
    x[:, ::2] = mask_id
    times = []
    for _ in range(calls):
        sync(device)
        start = time.perf_counter()
        model(x)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    *, batch_size: int, length: int, steps: int, vocab_size: int, repeats: int, device: str
) -> list[dict]:
    """One row per sampler setting: calls, wall time, call time and both ratios (medians)."""
    mask_id = vocab_size - 1
    model = build_model(vocab_size, length, device)

    def bare() -> float:
        return bare_call_time(model, batch_size, length, mask_id, device, 20)

    bare()  # warm-up
    rows = []
    for name, config in settings(steps).items():
        ratios, separate, walls, calls, call_times = [], [], [], [], []
        for r in range(repeats):
            before = bare()
            timed = TimedModel(model, device)
            g = torch.Generator(device=device).manual_seed(r)
            out = ps.sample(
                timed, config, mask_id=mask_id, batch_size=batch_size, length=length,
                generator=g,
            )  # fmt: skip
            assert out.model_calls == timed.calls, (out.model_calls, timed.calls)
            ratios.append(out.wall_time / timed.seconds)
            # a call on fewer rows costs about that share of a whole-batch call
            full_calls = out.row_forwards / batch_size
            separate.append(out.wall_time / (full_calls * (before + bare()) / 2))
            walls.append(out.wall_time)
            calls.append(out.model_calls)
            call_times.append(timed.seconds / timed.calls)
        rows.append(
            {
                "setting": name,
                "calls": statistics.median(calls),
                "wall_s": statistics.median(walls),
                "call_ms": 1e3 * statistics.median(call_times),
                "ratio": statistics.median(ratios),
                "ratio_separate": statistics.median(separate),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """The overhead table."""
    lines = [
        "| setting | model calls | wall s | ms per call | ratio | ratio* |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['calls']:.0f} | {r['wall_s']:.3f} | {r['call_ms']:.3f} | "
            f"{r['ratio']:.3f} | {r['ratio_separate']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="default: length")
    parser.add_argument("--vocab-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or args.length
    print(
        f"DiT cpu-tiny, B={args.batch_size}, L={args.length}, T={steps}, V={args.vocab_size}, "
        f"device={args.device}, threads={torch.get_num_threads()}, repeats={args.repeats}"
    )
    rows = measure(
        batch_size=args.batch_size, length=args.length, steps=steps,
        vocab_size=args.vocab_size, repeats=args.repeats, device=args.device,
    )  # fmt: skip
    print(markdown(rows))
    print(f"worst ratio {max(r['ratio'] for r in rows):.3f} (goal <= 1.10)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
