"""Which examples each micro-batch holds, and the seeds of its noise.

:class:`TokenDataset` holds the tokenized ``[N, L]`` tensors of one split (built by
:func:`proseco.training.splits.build_splits`).

:class:`BatchOrder` decides which examples form each micro-batch from ``(seed, step)`` alone: the
examples are visited in a per-epoch random permutation, global batch ``k`` takes stream positions
``[k G, (k + 1) G)``, and that slice is cut into ``micro_batch`` pieces shared out over processes
and accumulation steps. Resuming at step ``k`` therefore needs no data-loader state, and one
process with accumulation sees exactly the micro-batches that several processes see together.
:func:`batch_plan` derives the micro-batch size and accumulation from the global batch.

:func:`micro_seed` and :func:`eval_seed` seed the noise (``t`` and the masked positions) of each
training and validation micro-batch, so that it too depends only on ``(seed, step, index)``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["TokenDataset", "BatchOrder", "batch_plan", "micro_seed", "eval_seed"]

_EVAL_TAG = 2**31 - 1


class TokenDataset:
    """Tensors ``[N, L]`` (``input_ids``, ``loss_mask``, ``noise_mask``, optional
    ``attention_mask`` / ``prompt_mask``) and optional ``labels`` ``[N]``."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.tensors["input_ids"].shape[0])

    @property
    def length(self) -> int:
        """The sequence length ``L``."""
        return int(self.tensors["input_ids"].shape[1])

    def batch(self, indices: torch.Tensor, device: torch.device | str | None = None) -> dict:
        """Rows ``indices`` of every tensor, moved to ``device``."""
        return {k: v[indices].to(device) for k, v in self.tensors.items()}


def micro_seed(seed: int, step: int, index: int) -> int:
    """A well-mixed 63-bit seed for the noise of micro-batch ``index`` of optimizer step ``step``."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(2, np.uint64)[0] >> 1)


def eval_seed(seed: int, index: int) -> int:
    """The seed of validation micro-batch ``index`` (the same at every evaluation)."""
    return micro_seed(seed, _EVAL_TAG, index)


class BatchOrder:
    """Which examples each micro-batch holds (see the module docstring).

    Args:
        num_examples: ``N``.
        global_batch_size: ``G``; must equal ``micro_batch_size x num_processes x accumulation``.
        micro_batch_size: examples per forward pass per process.
        num_processes, process_index: this process's place in the run.
        seed: seed of the epoch permutations.
    """

    def __init__(
        self,
        num_examples: int,
        global_batch_size: int,
        micro_batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
    ) -> None:
        per_step = micro_batch_size * num_processes
        if global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size {global_batch_size} is not a multiple of "
                f"micro_batch_size {micro_batch_size} x {num_processes} processes; change one"
            )
        self.num_examples = num_examples
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.accumulation = global_batch_size // per_step
        self.seed = seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.num_examples, generator=g)
        return self._perms[epoch]

    def micro_index(self, accum_index: int) -> int:
        """Index of this process's ``accum_index``-th micro-batch within the global batch."""
        return self.process_index * self.accumulation + accum_index

    def indices(self, step: int, accum_index: int) -> torch.Tensor:
        """Example indices ``[micro_batch_size]`` of one micro-batch of optimizer step ``step``."""
        start = (
            step * self.global_batch_size + self.micro_index(accum_index) * self.micro_batch_size
        )
        positions = torch.arange(start, start + self.micro_batch_size)
        epochs, offsets = positions // self.num_examples, positions % self.num_examples
        out = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self._perm(epoch)[offsets[sel]]
        return out

    def epoch(self, step: int) -> float:
        """Epochs completed after ``step`` optimizer steps."""
        return step * self.global_batch_size / self.num_examples


def batch_plan(
    global_batch_size: int, micro_batch_size: int | None, num_processes: int
) -> tuple[int, int]:
    """``(micro_batch_size, accumulation_steps)`` for the global batch on ``num_processes``."""
    g, micro = global_batch_size, micro_batch_size
    if micro is None:
        if g % num_processes:
            raise ValueError(
                f"train.global_batch_size {g} cannot be split over {num_processes} processes; "
                "make it a multiple of the process count or set train.micro_batch_size"
            )
        micro = g // num_processes
    if g % (micro * num_processes):
        raise ValueError(
            f"train.global_batch_size {g} is not a multiple of train.micro_batch_size {micro} x "
            f"{num_processes} processes; adjust one of them"
        )
    return micro, g // (micro * num_processes)
