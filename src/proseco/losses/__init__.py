"""Training losses, one module per algorithm.

* :mod:`~proseco.losses.masked` — the first pass the masked losses share: draw ``t`` and
  ``xt``, call the model, the MDLM NELBO terms.
* :mod:`~proseco.losses.proseco` — :func:`proseco_loss` (Algorithm 1: MDLM term plus the
  corrector term on the model's own proposal) and :func:`mdm_loss` (MDLM: ``sc_weight = 0``).
* :mod:`~proseco.losses.prism` — :func:`prism_loss`, PRISM's quality-head BCE.
* :mod:`~proseco.losses.udlm` — :func:`udlm_loss`, the uniform-noise NELBO.
* :mod:`~proseco.losses.ar` — :func:`ar_loss`, the next-token loss of a causal model.
* :mod:`~proseco.losses.config`, :mod:`~proseco.losses.output`, :mod:`~proseco.losses.inputs` —
  :class:`LossConfig`, :class:`LossOutput` (terms named for what they hold) and shared checks.

Every loss takes any model that follows :mod:`proseco.models.protocol` and a batch of clean
tokens ``x0`` ``[B, L]``. ``t`` and ``xt`` are optional so that a caller (and a test) can
reproduce a loss exactly; when omitted they are drawn from the forward process. Which loss a
training run uses is its method's choice (:mod:`proseco.methods`).
"""

from proseco.losses.ar import ar_loss
from proseco.losses.config import LossConfig
from proseco.losses.inputs import check_token_range
from proseco.losses.output import LossOutput
from proseco.losses.prism import fill_positions, prism_loss
from proseco.losses.proseco import mdm_loss, proseco_loss
from proseco.losses.udlm import udlm_loss, udlm_terms

__all__ = [
    "LossConfig",
    "LossOutput",
    "ar_loss",
    "check_token_range",
    "fill_positions",
    "mdm_loss",
    "prism_loss",
    "proseco_loss",
    "udlm_loss",
    "udlm_terms",
]
