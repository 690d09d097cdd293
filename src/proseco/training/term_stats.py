"""Per-term diagnostics of the ProSeCo objective, logged to ``metrics.jsonl``.

``loss`` alone hides a corrector term that dominates training; these train-record keys show it
(ProSeCo objective only: ``loss.objective: diffusion`` with ``loss.sc_weight > 0``):

* ``grad_norm_mdm`` / ``grad_norm_corrector``: L2 norms of the gradients of the two weighted
  terms, ``mdm_weight * L_mdm / N`` and ``sc_weight * L_sc / N``, w.r.t. the trainable
  parameters. Like ``grad_norm`` (their sum's norm) they cover the whole optimizer step (every
  micro-batch, averaged over processes) and are taken before clipping, on the logging step's
  batch only. They need the two-backward mode (``loss.two_backward``, the default) and plain or
  DDP data parallelism; with one backward, FSDP or DeepSpeed they are not written. An fp16 step
  whose gradients overflowed (the scaler skips it) gives ``inf`` / ``nan``, as ``grad_norm`` does.
* ``sc_copy_share`` / ``sc_copy_token_share``: the share of the weighted corrector loss that
  comes from rows whose draft ``y`` equals ``x0`` at every loss position (the corrector only has
  to copy), and from positions where ``y == x0``; over the logging window, like ``loss``. With
  ``loss.errors_upweighted`` the copied terms are negative, so the shares may leave ``[0, 1]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from proseco.losses import LossOutput

__all__ = ["TermGradients", "TermStats", "copy_terms", "grads_measurable"]

log = logging.getLogger("proseco.training")

Backward = Callable[[torch.Tensor], None]


def copy_terms(
    corrector_terms: torch.Tensor, y: torch.Tensor, x0: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """The corrector terms summed over copying rows, over copied positions, and in all.

    Args:
        corrector_terms: ``[B, L]`` per-token corrector terms (0 off the loss positions).
        y: the corrector input ``[B, L]``; x0: the clean tokens ``[B, L]``.
        loss_mask: ``[B, L]`` bool, the loss positions.

    Returns:
        ``[3]`` float32: ``(sum over rows with y == x0 at every loss position, sum over loss
        positions with y == x0, sum over all)``. Divide by ``N`` to weigh micro-batches as the
        loss does.
    """
    loss_mask = loss_mask.bool()
    same = (y == x0) & loss_mask  # [B, L]
    rows = (same | ~loss_mask).all(dim=1, keepdim=True)  # [B, 1]
    terms = corrector_terms.float()
    zero = terms.new_zeros(())
    return torch.stack(
        [torch.where(rows, terms, zero).sum(), torch.where(same, terms, zero).sum(), terms.sum()]
    )


class TermGradients:
    """Splits one optimizer step's accumulated gradient into its MDLM and corrector parts.

    In the two-backward mode the loss calls ``backward_fn`` twice per micro-batch: the MDLM part,
    then the corrector part. Around each MDLM backward this does ``D -= grad; backward;
    D += grad``, so at the end of the step ``D`` (one float32 copy of the trainable gradients)
    holds the MDLM part of ``grad`` and ``grad - D`` the corrector's. Gradients are only read,
    so the optimizer step is unchanged.

    Args:
        params: the trainable parameters.
        backward: the real backward (``accelerator.backward``).
    """

    def __init__(self, params: list[torch.nn.Parameter], backward: Backward) -> None:
        self.params = params
        self._backward = backward
        self.mdm: list[torch.Tensor | None] = [None] * len(params)

    def backward_fn(self) -> Backward:
        """A ``backward_fn`` for one micro-batch (its first call is the MDLM part)."""
        calls = 0

        def backward(part: torch.Tensor) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                self._accumulate(-1.0)
            self._backward(part)
            if calls == 1:
                self._accumulate(1.0)

        return backward

    @torch.no_grad()
    def _accumulate(self, sign: float) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad.detach().float()
            if self.mdm[i] is None:
                self.mdm[i] = grad * sign  # a new tensor, never p.grad itself
            else:
                self.mdm[i].add_(grad, alpha=sign)

    @torch.no_grad()
    def norms(self, accelerator: Any) -> tuple[float, float]:
        """``(grad_norm_mdm, grad_norm_corrector)`` of the step; call before clipping.

        Multi-process: ``D`` is averaged over processes (DDP averages ``grad`` the same way,
        linearly, so the mean of each process's ``D`` is the MDLM part of the synced ``grad``).
        fp16: divided by the loss scale, as ``grad_norm`` is.
        """
        mdm, corrector = [], []
        for p, d in zip(self.params, self.mdm, strict=True):
            grad = None if p.grad is None else p.grad.detach().float()
            if d is None and grad is None:
                continue
            d = torch.zeros_like(grad) if d is None else d
            if accelerator.num_processes > 1:
                d = accelerator.reduce(d, reduction="mean")
            mdm.append(torch.linalg.vector_norm(d))
            corrector.append(torch.linalg.vector_norm(d if grad is None else grad - d))
        self.mdm = [None] * len(self.params)
        if not mdm:
            return 0.0, 0.0
        scaler = getattr(accelerator, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        return (
            float(torch.stack(mdm).norm()) / scale,
            float(torch.stack(corrector).norm()) / scale,
        )


def grads_measurable(accelerator: Any, two_backward: bool) -> bool:
    """Whether the term gradients can be read off ``p.grad``: two backwards, no sharding."""
    kind = getattr(getattr(accelerator, "distributed_type", None), "value", "NO")
    return bool(two_backward) and (kind == "NO" or kind.startswith("MULTI_"))


class TermStats:
    """The loop's handle on the diagnostics above (a no-op unless ``enabled``).

    Per step: :meth:`begin_step`, :meth:`backward_fn` and :meth:`add` per micro-batch,
    :meth:`end_step` before clipping; at logging time :meth:`metrics`.

    Args:
        accelerator: the run's Accelerator.
        params: the trainable parameters.
        enabled: whether the method has these terms (``term_stats`` of :mod:`proseco.methods`:
            ProSeCo, i.e. ``loss.objective: diffusion`` with ``sc_weight > 0``).
        two_backward: ``loss.two_backward``.
    """

    def __init__(
        self, accelerator: Any, params: list[torch.nn.Parameter], *, enabled: bool,
        two_backward: bool,
    ) -> None:  # fmt: skip
        self.accelerator, self.params, self.enabled = accelerator, params, enabled
        self.measure = enabled and grads_measurable(accelerator, two_backward)
        if enabled and not self.measure and accelerator.is_main_process:
            log.info(
                "proseco train: grad_norm_mdm / grad_norm_corrector are not logged (they need "
                "loss.two_backward: true and no FSDP / DeepSpeed sharding)"
            )
        self.window = torch.zeros(3, device=accelerator.device)
        self.grads: TermGradients | None = None
        self.step_norms: dict[str, float] = {}

    def begin_step(self, logging_step: bool) -> None:
        """Start an optimizer step; gradients are split only on a logging step."""
        self.grads = None
        if self.measure and logging_step:
            self.grads = TermGradients(self.params, self.accelerator.backward)

    def backward_fn(self, backward_fn: Backward | None) -> Backward | None:
        """The ``backward_fn`` to pass to the loss for the next micro-batch."""
        if self.grads is None or backward_fn is None:
            return backward_fn
        return self.grads.backward_fn()

    def add(self, out: LossOutput, batch: dict[str, torch.Tensor], accum: int) -> None:
        """Add one micro-batch's copy terms (``/ N / accum``, as the loss weighs them)."""
        if not self.enabled or out.corrector_terms is None or out.y is None:
            return
        terms = copy_terms(out.corrector_terms, out.y, batch["input_ids"], batch["loss_mask"])
        self.window += terms.to(self.window.device) / (out.num_tokens.float() * accum)

    def end_step(self) -> None:
        """Read the split gradient norms (before clipping)."""
        if self.grads is not None:
            mdm, corrector = self.grads.norms(self.accelerator)
            self.step_norms = {"grad_norm_mdm": mdm, "grad_norm_corrector": corrector}
            self.grads = None

    def metrics(self) -> dict[str, float]:
        """The keys for this logging step's train record (collective: call on every process)."""
        if not self.enabled:
            return {}
        out, self.step_norms = self.step_norms, {}
        window = self.accelerator.reduce(self.window, reduction="sum").tolist()
        self.window.zero_()
        if window[2] != 0.0:
            out["sc_copy_share"] = window[0] / window[2]
            out["sc_copy_token_share"] = window[1] / window[2]
        return out
