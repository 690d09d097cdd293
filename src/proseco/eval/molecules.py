"""Molecule metrics for generated SMILES: validity, uniqueness, novelty, QED and rings, FCD.

Definitions (``N`` samples; all comparisons use RDKit-canonical SMILES):

* **valid**: :func:`proseco.chem.canonicalize` accepts it: the string, stripped of
  leading/trailing whitespace, is non-empty, contains no whitespace (RDKit would read ``"CC O"``
  as ``CC`` plus a name) and ``Chem.MolFromSmiles`` parses it. ``validity = num_valid / N``.
* **uniqueness** = ``num_unique / num_valid``, ``num_unique`` = distinct canonical valid SMILES.
* **novelty** = ``num_novel_unique / num_valid``, ``num_novel_unique`` = distinct canonical valid
  SMILES not among the *canonical* training SMILES. The denominator is the research code's; its
  numerator compared raw strings, so a non-canonical spelling of a training molecule counted as
  novel there and does not here.
* **properties** (``qed`` = ``QED.qed(mol)``, ``ring_count`` = ``len(Chem.GetSymmSSSR(mol))``;
  computed by :func:`proseco.chem.property_values`):
  mean and quartiles over the valid samples (duplicates included) and over the novel unique set,
  as keys ``{prop}_{valid|novel}_{mean|std|q25|median|q75}``.
* **fcd**: Fréchet ChemNet Distance of the valid samples to ``fcd_reference``, only with the
  optional ``fcd-torch`` package; ``None`` otherwise.

Undefined ratios (no samples, no valid ones, no training set) are ``None``. Each distinct
molecule's properties are computed once, so duplicates cost nothing.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from proseco.chem import MOLECULE_PROPERTIES, canonicalize, property_values

__all__ = ["fcd", "molecule_metrics"]

_STATS = ("mean", "std", "q25", "median", "q75")


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return dict.fromkeys(_STATS)
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "q25": float(q25),
        "median": float(median),
        "q75": float(q75),
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def molecule_metrics(
    smiles: Sequence[str],
    train_smiles: Iterable[str] | None = None,
    properties: Sequence[str] = MOLECULE_PROPERTIES,
    *,
    canonicalize_train: bool = True,
    fcd_reference: Sequence[str] | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Validity, uniqueness, novelty, property statistics (and FCD) of generated SMILES.

    Args:
        smiles: ``N`` generated SMILES (decoded, special tokens stripped).
        train_smiles: training molecules for novelty; ``None`` skips novelty.
        properties: any of ``"qed"``, ``"ring_count"``.
        canonicalize_train: canonicalise ``train_smiles`` first (~70 µs a molecule). Pass
            ``False`` only for already-canonical SMILES, e.g. ``load_qm9(...).smiles``.
        fcd_reference: reference SMILES for FCD (needs ``fcd-torch``); ``None`` skips FCD.
        num_workers: processes for the properties (``None``: all cores; 1: this process).

    Returns:
        A flat dict: ``num_samples, num_valid, num_unique, num_novel_unique, validity,
        uniqueness, novelty``, ``{prop}_{valid|novel}_{mean|std|q25|median|q75}`` and, if
        requested, ``fcd``. See the module docstring for the exact definitions.
    """
    if isinstance(smiles, str):
        raise ValueError("smiles must be a list of SMILES strings, not one string")
    for name in properties:
        if name not in MOLECULE_PROPERTIES:
            raise ValueError(
                f"unknown molecule property {name!r}; choose from {MOLECULE_PROPERTIES}"
            )
    canon = [canonicalize(str(s)) for s in smiles]
    valid = [c for c in canon if c is not None]
    unique = sorted(set(valid))
    out: dict[str, Any] = {
        "num_samples": len(canon),
        "num_valid": len(valid),
        "num_unique": len(unique),
        "num_novel_unique": None,
        "validity": _ratio(len(valid), len(canon)),
        "uniqueness": _ratio(len(unique), len(valid)),
        "novelty": None,
    }
    novel: list[str] = []
    if train_smiles is not None:
        train = _canonical_set(train_smiles) if canonicalize_train else set(train_smiles)
        novel = [c for c in unique if c not in train]
        out["num_novel_unique"] = len(novel)
        out["novelty"] = _ratio(len(novel), len(valid))
    for name in properties:
        value_of = dict(zip(unique, property_values(unique, name, num_workers)))
        subsets = {"valid": valid}
        if train_smiles is not None:
            subsets["novel"] = novel
        for subset, members in subsets.items():
            stats = _stats(np.array([value_of[c] for c in members], dtype=np.float64))
            out.update({f"{name}_{subset}_{k}": v for k, v in stats.items()})
    if fcd_reference is not None:
        out["fcd"] = fcd(valid, fcd_reference)
    return out


def _canonical_set(smiles: Iterable[str]) -> set[str]:
    return {c for c in (canonicalize(str(s)) for s in smiles) if c is not None}


def fcd(generated: Sequence[str], reference: Sequence[str], device: str = "cpu") -> float | None:
    """Fréchet ChemNet Distance with ``fcd-torch``; ``None`` (with a warning) if it is missing
    or there are fewer than two molecules on a side."""
    if importlib.util.find_spec("fcd_torch") is None:
        warnings.warn("FCD skipped: pip install fcd-torch to compute it", stacklevel=2)
        return None
    if len(generated) < 2 or len(reference) < 2:
        warnings.warn("FCD skipped: it needs at least two molecules on each side", stacklevel=2)
        return None
    from fcd_torch import FCD

    try:
        return float(FCD(device=device, n_jobs=1)(ref=list(reference), gen=list(generated)))
    except Exception as e:  # an optional metric from a third-party package must not end a run
        warnings.warn(f"FCD skipped: fcd-torch failed with {type(e).__name__}: {e}", stacklevel=2)
        return None
