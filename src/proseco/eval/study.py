"""Quality against compute on QM9: sample with one setting, decode, score, return one table row.

Shared by ``proseco demo`` and ``benchmarks/qm9.py`` so that both measure the same thing:
validity / uniqueness / novelty (canonical SMILES) of ``num_samples`` molecules against the exact
number of model calls (NFE) the sampler reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from proseco.sampling import UNMASKING, SamplingConfig
from proseco.special_tokens import resolve_special_ids

__all__ = ["SamplerSetting", "load_model_dir", "generate", "evaluate_setting", "plot_pareto"]


@dataclass(frozen=True)
class SamplerSetting:
    """One point of a quality-vs-compute study: a label, a checkpoint and its decoding settings.

    Attributes:
        method: label shown in tables and plots (e.g. ``"ProSeCo S=1 every=1"``).
        model: key of the checkpoint to use (e.g. ``"mdlm"`` or ``"proseco"``).
        config: the :class:`~proseco.SamplingConfig` to sample with.
    """

    method: str
    model: str
    config: SamplingConfig

    @property
    def steps(self) -> int | None:
        return self.config.steps

    @property
    def corrector_steps(self) -> int:
        return self.config.corrector.steps if self.config.corrector is not None else 0

    @property
    def corrector_every(self) -> int:
        return self.config.corrector.every if self.config.corrector is not None else 1

    @property
    def gamma(self) -> float | None:
        return self.config.guidance.gamma if self.config.guidance is not None else None

    @property
    def condition(self) -> Any:
        return self.config.guidance.condition if self.config.guidance is not None else None

    @property
    def guided_corrector(self) -> bool:
        return self.config.guidance is None or self.config.guidance.in_corrector

    def summary(self) -> dict[str, Any]:
        """Flat table columns: method, model, T, S, every, unmasking, ReMDM mode/eta, guidance."""
        unmasking = self.config.unmasking
        name = UNMASKING.name_of(unmasking) or type(unmasking).__name__
        return {
            "method": self.method,
            "model": self.model,
            "steps": self.steps,
            "corrector_steps": self.corrector_steps,
            "corrector_every": self.corrector_every,
            "unmasking": name,
            "remdm": getattr(unmasking, "mode", None) if name == "remdm" else None,
            "eta": getattr(unmasking, "eta", None) if name == "remdm" else None,
            "gamma": self.gamma,
            "condition": self.condition,
            "guided_corrector": self.guided_corrector,
        }


def load_model_dir(path: str | Path, device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` of a model directory, through :func:`proseco.load_pretrained`."""
    from proseco.pretrained import load_pretrained

    model, tokenizer, _ = load_pretrained(path, device=device)
    return model, tokenizer


def generate(
    model: Any,
    tokenizer: Any,
    setting: SamplerSetting,
    *,
    num_samples: int,
    batch_size: int,
    seed: int,
    length: int = 32,
    return_history: bool = False,
    eos_rule: str = "first",
) -> dict[str, Any]:
    """Sample ``num_samples`` sequences in batches; returns SMILES, tokens, NFE totals and time.

    ``eos_rule``: how token rows become SMILES (``"first"``: a molecule ends at its first
    ``<eos>``; ``"research"``: the research code's rule, see
    :meth:`~proseco.data.smiles.SmilesTokenizer.decode_batch`).
    """
    from proseco.sampling.dispatch import sampler_for, sampler_kind

    _, sampler = sampler_for(model)
    mask_id = resolve_special_ids(model, tokenizer).mask
    extra: dict[str, Any] = {"length": length, "return_history": return_history}
    if sampler_kind(model) == "autoregressive":
        # Left to right from [BOS] (its own first token) up to the model's length, no history.
        extra = {"length": length - 1 if length else None}
    generator = torch.Generator(device="cpu").manual_seed(seed)
    smiles: list[str] = []
    tokens: list[torch.Tensor] = []
    nfe = denoiser_nfe = corrector_nfe = 0
    history = None
    start = time.perf_counter()
    for first in range(0, num_samples, batch_size):
        b = min(batch_size, num_samples - first)
        with torch.inference_mode():
            if "return_history" in extra:
                extra["return_history"] = return_history and history is None
            out = sampler(
                model,
                setting.config,
                mask_id=mask_id,
                batch_size=b,
                generator=generator,
                **extra,
            )
        history = history or out.history
        # NFEs are per-sample means of each batch: weight them by the batch size.
        nfe += out.nfe * b
        denoiser_nfe += out.denoiser_nfe * b
        corrector_nfe += out.corrector_nfe * b
        tokens.append(out.tokens.cpu())
        smiles.extend(tokenizer.decode_batch(out.tokens.cpu(), eos_rule=eos_rule))
    seconds = time.perf_counter() - start
    return {
        "smiles": smiles,
        "tokens": torch.cat(tokens),
        "nfe": nfe / num_samples,
        "denoiser_nfe": denoiser_nfe / num_samples,
        "corrector_nfe": corrector_nfe / num_samples,
        "seconds": seconds,
        "history": history,
    }


def evaluate_setting(
    models: dict[str, tuple[Any, Any]],
    setting: SamplerSetting,
    *,
    train_smiles: set[str] | None,
    num_samples: int,
    batch_size: int,
    seed: int,
    properties: tuple[str, ...] = (),
    eos_rule: str = "first",
) -> tuple[dict[str, Any], list[str]]:
    """Generate with ``setting`` and score; returns (row, smiles). ``models[key] = (model, tok)``.

    Molecules are decoded with ``eos_rule`` (default: a molecule ends at its first ``<eos>``);
    the row also holds ``validity_other_rule``, the validity of the same tokens under the other
    rule, so that tables can show how much the rule matters.
    """
    from proseco.eval.molecules import molecule_metrics

    model, tokenizer = models[setting.model]
    length = int(getattr(model.config, "max_length", 32))
    result = generate(
        model,
        tokenizer,
        setting,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        length=length,
        eos_rule=eos_rule,
    )
    other = "research" if eos_rule == "first" else "first"
    other_smiles = tokenizer.decode_batch(result["tokens"], eos_rule=other)
    other_validity = molecule_metrics(other_smiles, None, properties=(), num_workers=1)["validity"]
    metrics = molecule_metrics(
        result["smiles"],
        train_smiles,
        properties=properties,
        canonicalize_train=False,
        num_workers=1,
    )
    row = setting.summary()
    row.update(
        nfe=result["nfe"],
        denoiser_nfe=result["denoiser_nfe"],
        corrector_nfe=result["corrector_nfe"],
        seconds=round(result["seconds"], 3),
        seed=seed,
        sampling_config=setting.config.to_dict(),
        eos_rule=eos_rule,
        validity_other_rule=other_validity,
    )
    row.update(metrics)  # includes num_samples
    return row, result["smiles"]


def plot_pareto(
    rows: list[dict[str, Any]],
    path: str | Path,
    *,
    y: str = "validity",
    title: str = "QM9: validity vs model calls",
) -> None:
    """Line plot of ``y`` against NFE, one line per method, log-scaled NFE axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["nfe"], r[y]) for r in rows if r["method"] == method and r[y] is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("model calls per sample (NFE)")
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
