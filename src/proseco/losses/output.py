"""``LossOutput``: what every loss returns, with its terms named for what they hold."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LossOutput"]


@dataclass
class LossOutput:
    """What a loss call returns.

    Every loss has a first term (its data term) and may have a second; ``term_names`` says
    what they are, and :attr:`terms` gives them by name:

    ==================  =================  ===================
    loss                first term         second term
    ==================  =================  ===================
    ``proseco_loss``    ``mdlm_nelbo``     ``corrector_nll`` (``None`` when ``sc_weight`` is 0)
    ``mdm_loss``        ``mdlm_nelbo``     ``None``
    ``prism_loss``      ``mdlm_nelbo``     ``prism_bce``
    ``udlm_loss``       ``udlm_nelbo``     ``None``
    ``ar_loss``         ``ar_nll``         ``None``
    ==================  =================  ===================

    Attributes:
        loss: the scalar to minimise (detached if the loss already ran its backward passes).
        mdm_loss: the first term per loss token, detached (the MDLM NELBO ``sum w(t) -log
            p1(x0) over masked / N``; for UDLM its NELBO, for AR the next-token NLL). The
            field keeps its historical name; :attr:`terms` names it.
        corrector_loss: the second term, detached: ``sum w(t) -log p2(x0) / N`` (ProSeCo; 0 if
            the corrector term is off), PRISM's mean BCE per filled position, else 0.
        mdm_terms: per-token first-term values ``[B, L]`` (0 at unmasked / non-loss
            positions), detached.
        corrector_terms: per-token second-term values ``[B, L]`` or None, detached.
        num_tokens: ``N``, the number of loss positions.
        num_masked: masked loss positions (UDLM: noised ones; AR: targets).
        t: the times used ``[B]``; xt: the noised input ``[B, L]``; y: the corrector input (PRISM:
            the filled input) or None.
        proposal_error_rate: fraction of loss positions where ``y != x0`` (None without pass 2);
            PRISM: fraction of the filled positions whose sample differs from ``x0``.
        quality_accuracy: PRISM: share of filled positions where ``quality_logit > 0`` agrees
            with the target ``y == x0``; None otherwise.
        num_filled: PRISM: number of filled (scored) positions; None otherwise.
        term_names: the names of the first and second term (the second ``None`` when absent).
    """

    loss: torch.Tensor
    mdm_loss: torch.Tensor
    corrector_loss: torch.Tensor
    mdm_terms: torch.Tensor
    corrector_terms: torch.Tensor | None
    num_tokens: torch.Tensor
    num_masked: torch.Tensor
    t: torch.Tensor
    xt: torch.Tensor
    y: torch.Tensor | None
    proposal_error_rate: torch.Tensor | None
    quality_accuracy: torch.Tensor | None = None
    num_filled: torch.Tensor | None = None
    term_names: tuple[str, str | None] = ("mdlm_nelbo", "corrector_nll")

    @property
    def terms(self) -> dict[str, torch.Tensor]:
        """The terms by name, e.g. ``{"ar_nll": ...}`` or ``{"mdlm_nelbo": ..., "prism_bce": ...}``."""
        first, second = self.term_names
        named = {first: self.mdm_loss}
        if second is not None:
            named[second] = self.corrector_loss
        return named
