"""Low-level RDKit helpers shared by the QM9 data and the molecule metrics.

* :func:`require_rdkit`: import RDKit's ``Chem`` with its logs silenced, or say how to install it.
* :func:`canonicalize`: the RDKit-canonical SMILES of a *valid* string, else ``None``. Valid means:
  stripped of leading/trailing whitespace, the string is non-empty, contains no whitespace (RDKit
  would read ``"CC O"`` as ``CC`` plus a name) and ``Chem.MolFromSmiles`` parses it.
* :func:`property_values`: a molecule property (:data:`MOLECULE_PROPERTIES`: ``qed`` =
  ``QED.qed(mol)``, ``ring_count`` = ``len(Chem.GetSymmSSSR(mol))``) of each valid SMILES.
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
    "MOLECULE_PROPERTIES",
    "canonicalize",
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
