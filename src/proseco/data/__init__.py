"""Tokenizers and datasets: the SMILES tokenizer and QM9."""

from proseco.data.qm9 import QM9_SIZE, QM9Data, fixture_smiles, load_qm9, qm9_tensors, split_indices
from proseco.data.smiles import QM9_TOKENS, SPECIAL_TOKENS, SmilesTokenizer, tokenize_smiles

__all__ = [
    "QM9_SIZE",
    "QM9_TOKENS",
    "QM9Data",
    "SPECIAL_TOKENS",
    "SmilesTokenizer",
    "fixture_smiles",
    "load_qm9",
    "qm9_tensors",
    "split_indices",
    "tokenize_smiles",
]
