"""Logits processing and categorical draws for the sampler.

:class:`LogitsProcessor` turns raw logits of the rows that are about to be sampled (``[N, V]``,
already gathered, mask column already excluded) into log-probabilities after temperature, top-k and
top-p (in that order, as Hugging Face does), and draws tokens from them by Gumbel-max with an
optional ``torch.Generator``. Each call filters the distribution it is given exactly once: the
sampler always hands it logits straight from the model (never already-filtered ones), so top-p is
never applied twice (a bug of the research code, whose cache re-filtered filtered probabilities).

Top-p keeps the smallest set of most likely tokens whose mass reaches ``top_p`` (the token that
crosses ``top_p`` is kept, as in Hugging Face's ``TopPLogitsWarper``; the MDLM/ReMDM research code
drops it). ``float64=True`` runs the softmax and the Gumbel noise in float64: float32 noise truncates
the Gumbel tail and is known to bias text metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LogitsProcessor", "exclude_token", "gumbel_argmax"]

NEG_INF = float("-inf")


def exclude_token(logits: torch.Tensor, token_id: int) -> torch.Tensor:
    """Set column ``token_id`` of ``logits`` ``[..., V]`` to ``-inf`` in place (if it exists)."""
    if 0 <= token_id < logits.shape[-1]:
        logits[..., token_id] = NEG_INF
    return logits


def gumbel_argmax(
    log_probs: torch.Tensor, generator: torch.Generator | None = None, float64: bool = False
) -> torch.Tensor:
    """Draw one token per row of ``log_probs`` ``[N, V]`` by Gumbel-max; returns ``[N]`` ids.

    The noise is ``-log(-log(u))`` with ``u ~ U[0, 1)`` from ``generator`` (``u = 0`` gives
    ``-inf`` noise, so filtered ``-inf`` entries can never win).
    """
    dtype = torch.float64 if float64 else log_probs.dtype
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=dtype)
    noise = -torch.log(-torch.log(u))
    return (log_probs.to(dtype) + noise).argmax(dim=-1)


@dataclass(frozen=True)
class LogitsProcessor:
    """Temperature, top-k and top-p, then a Gumbel-max draw.

    Attributes:
        temperature: divides the logits; ``0`` means greedy (argmax, no randomness used).
        top_k: keep the ``top_k`` most likely tokens (``0`` = off).
        top_p: nucleus mass in ``(0, 1]`` (``1`` = off).
        float64: compute probabilities and Gumbel noise in float64.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    float64: bool = False

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(
                f"temperature must be >= 0 (0 = greedy), got {self.temperature}; pass e.g. 1.0"
            )
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        """Whether draws are deterministic argmaxes (``temperature == 0``)."""
        return self.temperature == 0

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Processed log-probabilities ``[N, V]`` of raw ``logits`` ``[N, V]``.

        ``logits`` must be a tensor the caller owns (it may be modified in place).
        """
        if self.float64:
            logits = logits.double()
        elif logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if self.temperature not in (0.0, 1.0):
            logits = logits / self.temperature
        vocab = logits.shape[-1]
        if 0 < self.top_k < vocab:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, NEG_INF)
        log_probs = torch.log_softmax(logits, dim=-1)
        if self.top_p < 1.0:
            log_probs = _top_p(log_probs, self.top_p)
        return log_probs

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one token per row of raw ``logits`` ``[N, V]``.

        Returns:
            ``(tokens [N], probs [N])``: the ids drawn and their probability under the processed
            distribution (temperature / top-k / top-p applied).
        """
        if self.greedy:
            log_probs = torch.log_softmax(logits.double() if self.float64 else logits.float(), -1)
            tokens = log_probs.argmax(dim=-1)
        else:
            log_probs = self.log_probs(logits)
            tokens = gumbel_argmax(log_probs, generator, self.float64)
        probs = log_probs.gather(-1, tokens[:, None]).squeeze(-1).exp()
        return tokens, probs


def _top_p(log_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest prefix of sorted tokens whose mass reaches ``top_p``; renormalise."""
    sorted_lp, order = torch.sort(log_probs, dim=-1, descending=True)
    sorted_p = sorted_lp.exp()
    mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
    drop_sorted = mass_before >= top_p  # the first token always has mass_before 0 < top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return torch.log_softmax(log_probs.masked_fill(drop, NEG_INF), dim=-1)
