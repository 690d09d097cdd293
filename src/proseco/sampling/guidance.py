"""Discrete classifier-free guidance: the :class:`Guidance` settings.

Guided log-probabilities: ``gamma * log p(x | z, c) + (1 - gamma) * log p(x | z, null)``,
renormalised (``gamma = 1``: conditional only, ``gamma = 0``: unconditional only, one call each).
The model calls and the mixing are :class:`~proseco.sampling.caller.ModelCaller`'s, re-exported
here so that ``from proseco.sampling.guidance import ModelCaller`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proseco.sampling.caller import ModelCaller

__all__ = ["Guidance", "ModelCaller"]


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance settings.

    Attributes:
        gamma: guidance strength (``1`` = conditional model, ``0`` = unconditional, ``> 1`` =
            stronger conditioning).
        condition: the class label, an int or an integer tensor ``[B]``.
        null_label: the "no condition" label; ``None`` reads ``model.config.null_label``.
        in_corrector: apply guidance in corrector calls too (default). ``False`` reproduces the
            research code: corrector calls use the conditional model only (1 NFE each) and the
            corrector's draft is the argmax of the conditional denoiser output.
        label_key: keyword under which labels are passed to the model.
    """

    gamma: float = 1.0
    condition: int | torch.Tensor = 0
    null_label: int | None = None
    in_corrector: bool = True
    label_key: str = "class_labels"

    @property
    def passes(self) -> int:
        """Model evaluations per guided call: 1 for ``gamma`` in ``{0, 1}``, else 2."""
        return 1 if self.gamma in (0.0, 1.0) else 2
