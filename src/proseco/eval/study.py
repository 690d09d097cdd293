"""Quality against compute on QM9: sample with one setting, decode, score, return one table row.

Shared by ``proseco demo`` and ``benchmarks/qm9.py`` so that both measure the same thing:
validity / uniqueness / novelty (canonical SMILES) of ``num_samples`` molecules against the exact
number of model calls (NFE) the sampler reports.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from proseco.sampling import Corrector, Guidance, ReMDM, sample

__all__ = ["SamplerSetting", "load_model_dir", "generate", "evaluate_setting", "plot_pareto"]


@dataclass(frozen=True)
class SamplerSetting:
    """One point of a quality-vs-compute study.

    Attributes:
        method: label shown in tables and plots (e.g. ``"ProSeCo S=1 every=1"``).
        model: key of the checkpoint to use (e.g. ``"mdlm"`` or ``"proseco"``).
        steps: unmasking steps ``T``.
        corrector_steps: ``S`` (0 = no corrector).
        corrector_every: ``omega``.
        remdm: ReMDM strategy name (``"cap"``, ``"rescale"``, ``"conf"``, ``"loop"``) or None.
        eta: ReMDM strength.
        gamma: classifier-free guidance strength, or None for unconditional sampling.
        condition: guidance class label.
        guided_corrector: apply guidance inside corrector calls (False = research code).
    """

    method: str
    model: str
    steps: int
    corrector_steps: int = 0
    corrector_every: int = 1
    remdm: str | None = None
    eta: float = 0.02
    gamma: float | None = None
    condition: int = 1
    guided_corrector: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def sampler_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"steps": self.steps}
        if self.corrector_steps > 0:
            kwargs["corrector"] = Corrector(steps=self.corrector_steps, every=self.corrector_every)
        if self.remdm is not None:
            kwargs["remasking"] = ReMDM(strategy=self.remdm, eta=self.eta)
        if self.gamma is not None:
            kwargs["guidance"] = Guidance(
                gamma=self.gamma, condition=self.condition, in_corrector=self.guided_corrector
            )
        return kwargs


def load_model_dir(path: str | Path, device: str | torch.device = "cpu"):
    """Load a ``save_pretrained`` model directory and its SMILES tokenizer (eval mode)."""
    from transformers import AutoModelForMaskedLM

    import proseco.models.dit  # noqa: F401  (registers the DiT with the Auto classes)
    from proseco.data.smiles import SmilesTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path} is not a model directory (no config.json); pass a directory written by "
            "`proseco train` or `save_pretrained`"
        )
    model = AutoModelForMaskedLM.from_pretrained(path).to(device).eval()
    tokenizer = SmilesTokenizer.from_pretrained(path)
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
) -> dict[str, Any]:
    """Sample ``num_samples`` sequences in batches; returns SMILES, tokens, NFE totals and time."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    smiles: list[str] = []
    tokens: list[torch.Tensor] = []
    nfe = denoiser_nfe = corrector_nfe = 0
    history = None
    start = time.perf_counter()
    kwargs = setting.sampler_kwargs()
    for first in range(0, num_samples, batch_size):
        b = min(batch_size, num_samples - first)
        with torch.inference_mode():
            out = sample(
                model,
                mask_id=tokenizer.mask_token_id,
                batch_size=b,
                length=length,
                generator=generator,
                return_history=return_history and history is None,
                **kwargs,
            )
        history = history or out.history
        # NFEs are per batch (every row shares each model call): weight by the batch share.
        nfe += out.nfe * b
        denoiser_nfe += out.denoiser_nfe * b
        corrector_nfe += out.corrector_nfe * b
        tokens.append(out.tokens.cpu())
        smiles.extend(tokenizer.decode_batch(out.tokens.cpu()))
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
) -> tuple[dict[str, Any], list[str]]:
    """Generate with ``setting`` and score; returns (row, smiles). ``models[key] = (model, tok)``."""
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
    )
    metrics = molecule_metrics(
        result["smiles"],
        train_smiles,
        properties=properties,
        canonicalize_train=False,
        num_workers=1,
    )
    row = {k: v for k, v in asdict(setting).items() if k != "extra"}
    row.update(
        nfe=result["nfe"],
        denoiser_nfe=result["denoiser_nfe"],
        corrector_nfe=result["corrector_nfe"],
        seconds=round(result["seconds"], 3),
        seed=seed,
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
