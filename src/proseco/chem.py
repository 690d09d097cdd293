"""Low-level RDKit helpers shared by the QM9 data and the molecule metrics.

* :func:`require_rdkit`: import RDKit's ``Chem`` with its logs silenced, or say how to install it.
* :func:`canonicalize`: the RDKit-canonical SMILES of a *valid* string, else ``None``. Valid means:
  stripped of leading/trailing whitespace, the string is non-empty, contains no whitespace (RDKit
  would read ``"CC O"`` as ``CC`` plus a name) and ``Chem.MolFromSmiles`` parses it.
* :func:`property_values`: a molecule property (:data:`MOLECULE_PROPERTIES`: ``qed`` =
  ``QED.qed(mol)``, ``ring_count`` = ``len(Chem.GetSymmSSSR(mol))``) of each valid SMILES.
* :func:`invalid_reason`: why a string is not a valid molecule (``None`` when it is): empty,
  whitespace, unbalanced parentheses, an unmatched ring-closure label, other syntax, valence or
  aromaticity. :data:`INVALID_REASONS` lists them in that order, which is also the order they
  are checked in.
* :func:`parallel_map`: run a module-level function over chunks of a list in forked processes.

RDKit is imported only when one of these runs (``pip install "proseco[chem]"``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

__all__ = [
    "INVALID_REASONS",
    "MOLECULE_PROPERTIES",
    "canonicalize",
    "invalid_reason",
    "parallel_map",
    "property_values",
    "require_rdkit",
]

MOLECULE_PROPERTIES = ("qed", "ring_count")


def require_rdkit(purpose: str = "molecule metrics"):
    """Import RDKit's ``Chem`` with its logs silenced, or say how to install it."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f'{purpose} need RDKit: pip install "proseco[chem]"') from e
    RDLogger.DisableLog("rdApp.*")
    return Chem


def canonicalize(smiles: str) -> str | None:
    """RDKit-canonical SMILES of a valid molecule (see the module docstring), else ``None``."""
    chem = require_rdkit()
    s = smiles.strip()
    if not s or any(c.isspace() for c in s):
        return None
    mol = chem.MolFromSmiles(s)
    return None if mol is None else chem.MolToSmiles(mol)


INVALID_REASONS = (
    "empty",
    "whitespace",
    "unbalanced parentheses",
    "unmatched ring closure",
    "other syntax",
    "valence",
    "aromaticity",
    "other chemistry",
)


def _ring_labels(smiles: str) -> dict[str, int]:
    """How often each ring-closure label (``1``..``9``, ``%10``..``%99``) occurs outside
    bracket atoms (``[13CH2]`` holds digits that are not labels)."""
    counts: dict[str, int] = {}
    i, depth = 0, 0
    while i < len(smiles):
        c = smiles[i]
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(0, depth - 1)
        elif depth == 0 and c.isdigit():
            counts[c] = counts.get(c, 0) + 1
        elif depth == 0 and c == "%" and smiles[i + 1 : i + 3].isdigit():
            label = smiles[i : i + 3]
            counts[label] = counts.get(label, 0) + 1
            i += 2
        i += 1
    return counts


def _balanced(smiles: str) -> bool:
    depth = 0
    for c in smiles:
        depth += (c == "(") - (c == ")")
        if depth < 0:
            return False
    return depth == 0


def invalid_reason(smiles: str) -> str | None:
    """Why ``smiles`` is not a valid molecule, or ``None`` when :func:`canonicalize` accepts it.

    One of :data:`INVALID_REASONS`, checked in that order: ``"empty"`` (nothing but whitespace),
    ``"whitespace"`` (inside the string), ``"unbalanced parentheses"``, ``"unmatched ring
    closure"`` (a label used an odd number of times), ``"other syntax"`` (RDKit cannot read it
    even unsanitized), ``"valence"`` (e.g. a five-bonded carbon), ``"aromaticity"`` (an
    aromatic ring RDKit cannot kekulize) or ``"other chemistry"``.
    """
    chem = require_rdkit()
    s = smiles.strip()
    if not s:
        return "empty"
    if any(c.isspace() for c in s):
        return "whitespace"
    if chem.MolFromSmiles(s) is not None:
        return None
    if not _balanced(s):
        return "unbalanced parentheses"
    if any(n % 2 for n in _ring_labels(s).values()):
        return "unmatched ring closure"
    mol = chem.MolFromSmiles(s, sanitize=False)
    if mol is None:
        return "other syntax"
    try:
        chem.SanitizeMol(mol)
    except Exception as e:  # RDKit raises its own MolSanitizeException subclasses
        name = type(e).__name__
        if "Valence" in name:
            return "valence"
        if "Kekulize" in name or "aromatic" in str(e).lower():
            return "aromaticity"
        return "other chemistry"
    return "other chemistry"  # sanitizes alone but not through MolFromSmiles: rare


def _parse(chem, smiles: str):
    """``Chem.MolFromSmiles(smiles)``; an unparsable string raises ``ValueError``."""
    mol = chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"{smiles!r} is not a valid SMILES; filter with canonicalize() first")
    return mol


def _qed_chunk(smiles: Sequence[str]) -> list[float]:
    chem = require_rdkit()
    from rdkit.Chem import QED

    return [float(QED.qed(_parse(chem, s))) for s in smiles]


def _ring_count_chunk(smiles: Sequence[str]) -> list[float]:
    chem = require_rdkit()
    return [float(len(chem.GetSymmSSSR(_parse(chem, s)))) for s in smiles]


_PROPERTY_FNS = {"qed": _qed_chunk, "ring_count": _ring_count_chunk}


def parallel_map(
    fn: Callable[[Sequence], list], items: Sequence, num_workers: int | None = None
) -> list:
    """``[fn(chunk) for chunk in chunks(items)]``, in up to ``num_workers`` processes, in order.

    Worker processes are forked (Linux only): spawned ones would re-import the caller's
    ``__main__`` and fail in scripts without an ``if __name__ == "__main__"`` guard. Elsewhere,
    with ``num_workers=1`` or with fewer than 512 items, everything runs in this process.
    ``fn`` must be a module-level function.
    """
    workers = min(num_workers or os.cpu_count() or 1, 16)
    if workers <= 1 or len(items) < 512 or not sys.platform.startswith("linux"):
        return [fn(items)]
    size = max(256, math.ceil(len(items) / (4 * workers)))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        return list(pool.map(fn, chunks))


def property_values(smiles: Sequence[str], name: str, num_workers: int | None = 1) -> np.ndarray:
    """``name`` (``"qed"`` or ``"ring_count"``) of each valid SMILES, as float64 ``[N]``.

    Args:
        smiles: valid SMILES (an invalid one raises ``ValueError``).
        name: ``"qed"`` (``QED.qed``, ~0.8 ms a molecule) or ``"ring_count"``
            (``len(Chem.GetSymmSSSR(mol))``).
        num_workers: processes to use (``None``: all cores); see :func:`parallel_map`.
    """
    if name not in _PROPERTY_FNS:
        raise ValueError(f"unknown molecule property {name!r}; choose from {MOLECULE_PROPERTIES}")
    parts = parallel_map(_PROPERTY_FNS[name], list(smiles), num_workers)
    return np.asarray([v for part in parts for v in part], dtype=np.float64)
