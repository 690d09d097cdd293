"""QM9 (130,831 small molecules) from the ``qm9pack`` wheel, canonicalised with RDKit.

The CSV files of ``qm9pack==1.0.3`` are read directly (its own loader is broken). The first call
canonicalises every SMILES and counts its rings (~15 s on one core), then caches the table under
``~/.cache/proseco/qm9`` (override with ``cache_dir=`` or ``$PROSECO_CACHE_DIR``); QED, which
takes ~0.8 ms a molecule, is computed in worker processes only when asked for and cached next to it.

Splits follow the research code: ``validation`` is ``ceil(5%)`` of the rows drawn by
``numpy.random.default_rng(42).permutation`` (the rule of ``datasets.train_test_split(
test_size=0.05, seed=42)``), ``train`` the rest. Guidance labels are 1 where a property is above
its 90th percentile over the *whole* dataset, else 0 (``num_classes = 2``; the model's null
label is 2).

After canonicalisation 87 of the 130,831 rows repeat another row's SMILES (different raw
SMILES of the same molecule); they are kept so that row counts match the dataset.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from proseco.chem import parallel_map, property_values, require_rdkit

__all__ = [
    "QM9_SIZE",
    "QM9_PROPERTIES",
    "QM9Data",
    "load_qm9",
    "qm9_tensors",
    "qm9_csv_files",
    "split_indices",
    "fixture_smiles",
    "HANDWRITTEN_SMILES",
]

QM9_SIZE = 130_831
QM9_PROPERTIES = ("ring_count", "qed")
CACHE_VERSION = 1
LABEL_PERCENTILE = 90.0
Split = Literal["train", "validation", "all"]

# A few molecules for tests that need no data files: QM9-like, with charges and aromatic N-H.
HANDWRITTEN_SMILES: tuple[str, ...] = (
    "C", "CCO", "CC#N", "O=CC1=CC=CO1", "c1ccccc1", "C1CC1", "CC(C)(C)O", "C1=CNC=N1",
    "[NH3+]CC([O-])=O", "OC1C2CC1C2", "N#CC1=CN=CO1", "CC1(O)CC1=O", "c1cc[nH]c1", "FC(F)F",
)  # fmt: skip


def _require_rdkit():
    return require_rdkit("QM9 data")


def qm9_csv_files() -> list[Path]:
    """The three QM9 CSV files inside the installed ``qm9pack`` package (not imported)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('QM9 needs the qm9pack package: pip install "proseco[chem]"')
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = [data / f"qm9_part{i}.csv" for i in (1, 2, 3)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"qm9pack is installed but lacks {missing}; reinstall it: pip install qm9pack==1.0.3"
        )
    return files


def _raw_smiles() -> list[str]:
    import pandas as pd

    frames = [pd.read_csv(f, usecols=["SMILES"]) for f in qm9_csv_files()]
    return pd.concat(frames, ignore_index=True)["SMILES"].astype(str).tolist()


# --------------------------------------------------------------------- RDKit workers
def _canonical_and_rings(smiles: Sequence[str]) -> tuple[list[str], list[int]]:
    chem = _require_rdkit()
    canonical, rings = [], []
    for s in smiles:
        mol = chem.MolFromSmiles(s)
        if mol is None:
            raise ValueError(f"RDKit cannot parse the QM9 SMILES {s!r}; is qm9pack corrupted?")
        canonical.append(chem.MolToSmiles(mol))
        rings.append(len(chem.GetSymmSSSR(mol)))
    return canonical, rings


# --------------------------------------------------------------------- cache
def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get("PROSECO_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "proseco") / "qm9"


def _cache_key() -> str:
    import rdkit

    return f"qm9_v{CACHE_VERSION}_rdkit-{rdkit.__version__}"


def _atomic_save(path: Path, save: Callable) -> None:
    """Write with ``save(file)`` to a temporary name, then rename (no half-written caches)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        save(f)
    os.replace(tmp, path)


@functools.lru_cache(maxsize=4)
def _table(cache_dir: Path, with_qed: bool, num_workers: int | None) -> dict[str, np.ndarray]:
    """The whole dataset: canonical ``smiles``, ``ring_count`` and (optionally) ``qed``."""
    base = cache_dir / f"{_cache_key()}.npz"
    if not base.is_file():
        canon, rings = [], []
        for c, r in parallel_map(_canonical_and_rings, _raw_smiles(), num_workers):
            canon += c
            rings += r
        arrays = {"smiles": np.array(canon), "ring_count": np.array(rings, dtype=np.int16)}
        _atomic_save(base, lambda f: np.savez(f, **arrays))
    with np.load(base, allow_pickle=False) as f:
        table = {"smiles": f["smiles"], "ring_count": f["ring_count"].astype(np.int64)}
    if len(table["smiles"]) != QM9_SIZE:
        raise ValueError(
            f"{base} holds {len(table['smiles'])} molecules, expected {QM9_SIZE}; delete it to rebuild"
        )
    if with_qed:
        qed_path = cache_dir / f"{_cache_key()}_qed.npy"
        if not qed_path.is_file():
            qed = property_values(table["smiles"].tolist(), "qed", num_workers=num_workers)
            _atomic_save(qed_path, lambda f: np.save(f, qed))
        table["qed"] = np.load(qed_path, allow_pickle=False)
    return table


# --------------------------------------------------------------------- public API
def split_indices(
    n: int, val_fraction: float = 0.05, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic ``(train, validation)`` row indices of a dataset of ``n`` rows.

    ``validation`` = the first ``ceil(val_fraction * n)`` entries of
    ``default_rng(seed).permutation(n)``, ``train`` the following ``floor((1 - val_fraction) * n)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = math.ceil(val_fraction * n)
    n_train = math.floor((1.0 - val_fraction) * n)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_val : n_val + n_train], perm[:n_val]


@dataclass(frozen=True)
class QM9Data:
    """One split of QM9.

    Attributes:
        smiles: RDKit-canonical SMILES, ``N`` of them.
        ring_count: ``[N]`` int, ``len(Chem.GetSymmSSSR(mol))``.
        qed: ``[N]`` float ``QED.qed(mol)``, or ``None`` unless loaded ``with_qed``.
        thresholds: 90th percentile of each loaded property over the whole dataset.
        split: ``"train"``, ``"validation"`` or ``"all"``.
    """

    smiles: list[str]
    ring_count: np.ndarray
    qed: np.ndarray | None
    thresholds: dict[str, float] = field(default_factory=dict)
    split: str = "all"

    def __len__(self) -> int:
        return len(self.smiles)

    def property(self, name: str) -> np.ndarray:
        """Values ``[N]`` of ``"ring_count"`` or ``"qed"``."""
        if name not in QM9_PROPERTIES:
            raise ValueError(f"unknown QM9 property {name!r}; choose from {QM9_PROPERTIES}")
        values = getattr(self, name)
        if values is None:
            raise ValueError(f"{name!r} was not loaded; call load_qm9(..., with_qed=True)")
        return values

    def labels(self, name: str) -> np.ndarray:
        """Guidance classes ``[N]`` int64: 1 if the property exceeds its dataset-wide p90, else 0."""
        return (self.property(name) > self.thresholds[name]).astype(np.int64)


def load_qm9(
    split: Split = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    with_qed: bool = False,
    num_workers: int | None = None,
    val_fraction: float = 0.05,
    seed: int = 42,
) -> QM9Data:
    """Load a split of QM9 with canonical SMILES and property values.

    Args:
        split: ``"train"`` (95%), ``"validation"`` (5%) or ``"all"`` (130,831 rows, file order).
        cache_dir: where the processed table is cached (default ``~/.cache/proseco/qm9``).
        with_qed: also load QED (computed once, in ``num_workers`` processes: 1-2 min on 2 cores).
        num_workers: processes for a first build; default ``os.cpu_count()``.
        val_fraction: validation share; seed: split seed (the research code's 0.05 and 42).

    Returns:
        A :class:`QM9Data`; ``thresholds`` are computed on the whole dataset.
    """
    if split not in ("train", "validation", "all"):
        raise ValueError(f"split must be 'train', 'validation' or 'all', got {split!r}")
    table = _table(_cache_dir(cache_dir).expanduser().resolve(), bool(with_qed), num_workers)
    thresholds = {
        name: float(np.percentile(table[name], LABEL_PERCENTILE))
        for name in QM9_PROPERTIES
        if name in table
    }
    if split == "all":
        idx = np.arange(QM9_SIZE)
    else:
        train, val = split_indices(QM9_SIZE, val_fraction, seed)
        idx = train if split == "train" else val
    return QM9Data(
        smiles=table["smiles"][idx].tolist(),
        ring_count=table["ring_count"][idx],
        qed=table["qed"][idx] if "qed" in table else None,
        thresholds=thresholds,
        split=split,
    )


def qm9_tensors(
    tokenizer,
    split: Split = "train",
    length: int = 32,
    label: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    overflow: Literal["error", "truncate"] = "error",
) -> dict[str, torch.Tensor]:
    """QM9 as model inputs ``<bos> tokens <eos> <pad>…``.

    Args:
        tokenizer: a :class:`~proseco.data.smiles.SmilesTokenizer`.
        split: see :func:`load_qm9`.
        length: sequence length ``L`` (QM9's longest canonical SMILES has 22 tokens).
        label: ``None``, ``"ring_count"`` or ``"qed"``: add binary guidance ``labels``.
        cache_dir: see :func:`load_qm9`.
        overflow: passed to ``tokenizer.encode_batch``.

    Returns:
        ``input_ids`` ``[N, L]`` long, ``attention_mask`` ``[N, L]`` long (0 on ``<pad>``) and,
        with ``label``, ``labels`` ``[N]`` long in ``{0, 1}``.
    """
    if label is not None and label not in QM9_PROPERTIES:
        raise ValueError(f"label must be None or one of {QM9_PROPERTIES}, got {label!r}")
    data = load_qm9(split, cache_dir=cache_dir, with_qed=label == "qed")
    input_ids = tokenizer.encode_batch(data.smiles, length=length, overflow=overflow)
    out = {"input_ids": input_ids, "attention_mask": (input_ids != tokenizer.pad_token_id).long()}
    if label is not None:
        out["labels"] = torch.from_numpy(data.labels(label))
    return out


def fixture_smiles(
    n: int | None = None, source: Literal["nci", "handwritten"] = "nci"
) -> list[str]:
    """Small SMILES sets for tests, with no download and no QM9.

    Args:
        n: keep the first ``n`` (default all).
        source: ``"nci"``: the 4,999 molecules of ``rdkit/Data/NCI/first_5K.smi`` shipped with
            RDKit (drug-like, with Cl/Br/S; raw, not canonical); ``"handwritten"``:
            :data:`HANDWRITTEN_SMILES`.
    """
    if source == "handwritten":
        smiles = list(HANDWRITTEN_SMILES)
    elif source == "nci":
        _require_rdkit()
        from rdkit import RDConfig

        path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing from this RDKit install; use source='handwritten'"
            )
        smiles = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    else:
        raise ValueError(f"source must be 'nci' or 'handwritten', got {source!r}")
    return smiles if n is None else smiles[:n]
