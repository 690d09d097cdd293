"""Exponential moving average of model weights, used for validation, sampling and export.

After optimizer update number ``k`` (``k = 1, 2, ...``) every shadow weight moves towards the
live weight with ``decay_k = min(decay, (1 + k) / (10 + k))``::

    shadow <- shadow - (1 - decay_k) (shadow - param)

(the research code's warm-up, so early shadows are not dominated by the random init).
Shadows are float32 and keyed by parameter name, so they save to safetensors directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copies of the trainable parameters of a module.

    Args:
        named_parameters: ``module.named_parameters()`` (only ``requires_grad`` ones are kept).
        decay: the asymptotic decay, e.g. 0.9999.
        warmup: use ``min(decay, (1 + k) / (10 + k))`` (default) instead of ``decay``.
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, nn.Parameter]],
        decay: float,
        *,
        warmup: bool = True,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self._params = {n: p for n, p in named_parameters if p.requires_grad}
        self.shadow = {n: p.detach().float().clone() for n, p in self._params.items()}

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        k = self.num_updates + 1
        return min(self.decay, (1 + k) / (10 + k)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        """Move every shadow towards its live parameter (call after each optimizer step)."""
        one_minus = 1.0 - self.current_decay()
        for name, param in self._params.items():
            shadow = self.shadow[name]
            shadow.sub_(one_minus * (shadow - param.detach().float()))
        self.num_updates += 1

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily load the shadow weights into the live parameters."""
        backup = {n: p.detach().clone() for n, p in self._params.items()}
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self._params.items():
                    param.copy_(backup[name])

    @torch.no_grad()
    def copy_to(self) -> None:
        """Overwrite the live parameters with the shadow weights."""
        for name, param in self._params.items():
            param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Shadows plus ``num_updates`` as a flat tensor dict (safetensors-ready)."""
        state = {f"shadow.{n}": t.contiguous() for n, t in self.shadow.items()}
        state["num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; the parameter names must match."""
        names = {k.removeprefix("shadow.") for k in state if k.startswith("shadow.")}
        if names != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - names), sorted(names - set(self.shadow))
            raise ValueError(
                f"EMA state does not match the model: missing {missing[:5]}, unexpected "
                f"{extra[:5]}; was the checkpoint written by a different model config?"
            )
        for name, shadow in self.shadow.items():
            shadow.copy_(state[f"shadow.{name}"].to(shadow.device, torch.float32))
        self.num_updates = int(state["num_updates"])
