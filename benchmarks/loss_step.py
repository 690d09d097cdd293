"""ProSeCo vs MDLM training-step cost on the DiT presets, measured in one run.

Prints, per preset, for MDLM, ProSeCo with one backward (both passes' graphs alive, then one
backward) and ProSeCo with two backwards (backward of the MDLM term before pass 2):
* the median wall time of a full training step (loss, backward, AdamW step) and its ratio to MDLM;
* the peak memory held by tensors saved for backward (activations), counted exactly with
  ``torch.autograd.graph.saved_tensors_hooks`` (parameters excluded, shared storages counted once),
  and its ratio to MDLM. On CPU there is no allocator high-water mark to read, and RSS is dominated
  by the allocator's caching, so this is the honest activation-memory figure.

Usage: python benchmarks/loss_step.py [--presets cpu-tiny cpu-small tiny] [--batch 64]
[--length 32] [--repeats 9] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import weakref
from pathlib import Path

import torch

import proseco
from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig


class SavedTensorMeter:
    """Tracks live bytes of tensors saved for backward; ``peak`` is the high-water mark."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}  # storage pointer -> bytes
        self.refs: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.current -= self.live.pop(key)
            del self.refs[key]

    def pack(self, tensor: torch.Tensor):
        if isinstance(tensor, torch.nn.Parameter) or (tensor.is_leaf and tensor.requires_grad):
            return tensor
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.live:
            self.live[key] = storage.nbytes()
            self.refs[key] = 0
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self.refs[key] += 1
        holder = _Holder(tensor)
        weakref.finalize(holder, self._release, key)
        return holder

    @staticmethod
    def unpack(obj):
        return obj.tensor if isinstance(obj, _Holder) else obj


class _Holder:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def make_batch(batch: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab - 1, (batch, length), generator=g)


MODES = ("mdlm", "proseco-one-backward", "proseco-two-backward")


def train_step(model, optimizer, x0, mask_id, mode, seed):
    g = torch.Generator().manual_seed(seed)
    optimizer.zero_grad(set_to_none=True)
    if mode == "mdlm":
        out = proseco.mdm_loss(model, x0, mask_id=mask_id, generator=g)
        out.loss.backward()
    elif mode == "proseco-one-backward":
        out = proseco.proseco_loss(model, x0, mask_id=mask_id, generator=g)
        out.loss.backward()
    else:
        out = proseco.proseco_loss(
            model, x0, mask_id=mask_id, generator=g, backward_fn=lambda x: x.backward()
        )
    optimizer.step()
    return float(out.loss.detach())


def measure(
    preset: str, *, batch: int, length: int, vocab: int, repeats: int, seed: int = 0
) -> dict:
    """Median step time and peak activation memory of each mode on one DiT preset.

    Returns ``{"preset", "params", "rows": [{"mode", "step_ms", "time_ratio", "peak_mib",
    "mem_ratio"}, ...]}`` (ratios against MDLM).
    """
    torch.manual_seed(seed)
    mask_id = vocab - 1
    config = ProsecoDiTConfig.from_preset(
        preset, vocab_size=vocab, max_length=length, mask_token_id=mask_id
    )
    model = ProsecoDiT(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = make_batch(batch, length, vocab, seed)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(2):  # warm-up
        for m in MODES:
            train_step(model, optimizer, x0, mask_id, m, i)
    for i in range(repeats):  # interleaved so that drift hits every mode alike
        for m in MODES:
            start = time.perf_counter()
            train_step(model, optimizer, x0, mask_id, m, 100 + i)
            times[m].append(time.perf_counter() - start)
    peaks = {}
    for m in MODES:
        meter = SavedTensorMeter()
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            train_step(model, optimizer, x0, mask_id, m, 999)
        peaks[m] = meter.peak
    base_t, base_m = statistics.median(times["mdlm"]), peaks["mdlm"]
    rows = []
    for m in MODES:
        t = statistics.median(times[m])
        rows.append(
            {
                "mode": m,
                "step_ms": t * 1e3,
                "time_ratio": t / base_t,
                "peak_mib": peaks[m] / 2**20,
                "mem_ratio": peaks[m] / base_m,
            }
        )
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "params": params, "rows": rows}


def markdown(results: list[dict]) -> str:
    """One table over presets and modes."""
    lines = [
        "| preset | params | mode | step ms | time vs MDLM | peak activations MiB | memory vs MDLM |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for row in r["rows"]:
            lines.append(
                f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {row['mode']} | "
                f"{row['step_ms']:.1f} | {row['time_ratio']:.2f} | {row['peak_mib']:.1f} | "
                f"{row['mem_ratio']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu-tiny", "cpu-small", "tiny"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"settings: batch={args.batch} length={args.length} vocab={args.vocab} "
        f"threads={args.threads} repeats={args.repeats} seed={args.seed} torch={torch.__version__}"
    )
    results = []
    for preset in args.presets:
        results.append(
            measure(
                preset, batch=args.batch, length=args.length, vocab=args.vocab,
                repeats=args.repeats, seed=args.seed,
            )
        )  # fmt: skip
        print(markdown(results[-1:]), flush=True)
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
