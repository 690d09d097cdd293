"""ProSeCo vs MDLM training-step cost on a CPU-tiny DiT, measured in one run.

Prints, for MDLM, ProSeCo (one backward) and ProSeCo (two backwards):
* the median wall time of a full training step (loss, backward, AdamW step) and its ratio to MDLM;
* the peak memory held by tensors saved for backward (activations), counted exactly with
  ``torch.autograd.graph.saved_tensors_hooks`` (parameters excluded, shared storages counted once),
  and its ratio to MDLM. On CPU there is no allocator high-water mark to read, and RSS is dominated
  by the allocator's caching, so this is the honest activation-memory figure.

Usage: python benchmarks/loss_step.py [--batch 64] [--length 32] [--repeats 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref

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


def train_step(model, optimizer, x0, mask_id, mode, seed):
    g = torch.Generator().manual_seed(seed)
    optimizer.zero_grad(set_to_none=True)
    if mode == "mdlm":
        out = proseco.mdm_loss(model, x0, mask_id=mask_id, generator=g)
        out.loss.backward()
    elif mode == "proseco":
        out = proseco.proseco_loss(model, x0, mask_id=mask_id, generator=g)
        out.loss.backward()
    else:
        out = proseco.proseco_loss(
            model, x0, mask_id=mask_id, generator=g, backward_fn=lambda x: x.backward()
        )
    optimizer.step()
    return float(out.loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=40)
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mask_id = args.vocab - 1
    config = ProsecoDiTConfig.from_preset(
        args.preset, vocab_size=args.vocab, max_length=args.length, mask_token_id=mask_id
    )
    model = ProsecoDiT(config).train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = make_batch(args.batch, args.length, args.vocab, args.seed)
    print(
        f"settings: preset={args.preset} params={n_params / 1e6:.2f}M batch={args.batch} "
        f"length={args.length} vocab={args.vocab} threads={args.threads} repeats={args.repeats} "
        f"seed={args.seed} torch={torch.__version__}"
    )
    modes = ["mdlm", "proseco", "proseco-two-backward"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(3):  # warm-up
        for m in modes:
            train_step(model, optimizer, x0, mask_id, m, i)
    for i in range(args.repeats):  # interleaved so that drift hits every mode alike
        for m in modes:
            start = time.perf_counter()
            train_step(model, optimizer, x0, mask_id, m, 100 + i)
            times[m].append(time.perf_counter() - start)
    peaks = {}
    for m in modes:
        meter = SavedTensorMeter()
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            train_step(model, optimizer, x0, mask_id, m, 999)
        peaks[m] = meter.peak
    base_t = statistics.median(times["mdlm"])
    base_m = peaks["mdlm"]
    print(f"{'mode':<22}{'step ms':>10}{'time ratio':>12}{'peak act MiB':>14}{'mem ratio':>11}")
    for m in modes:
        t = statistics.median(times[m])
        print(
            f"{m:<22}{t * 1e3:>10.1f}{t / base_t:>12.2f}{peaks[m] / 2**20:>14.1f}"
            f"{peaks[m] / base_m:>11.2f}"
        )


if __name__ == "__main__":
    main()
