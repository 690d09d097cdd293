"""A regex SMILES tokenizer that is a Hugging Face ``PreTrainedTokenizer``.

One token per atom (``C``, ``Cl``, ``c``, bracket atoms such as ``[nH]`` or ``[NH3+]``), bond
(``- = # $ : / \\``), branch parenthesis, ring-closure digit (``1``…``9``, ``%10``…``%99``) or
other single character. Specials are ``<bos>=0 <eos>=1 <mask>=2 <pad>=3 <unk>=4`` (the ids of
the research code's QM9 tokenizer), followed by the SMILES tokens.

The default vocabulary (:data:`QM9_TOKENS`) holds every token of QM9's RDKit-canonical and raw
SMILES, so no scan of the dataset is needed at run time. Build one for another corpus with
:meth:`SmilesTokenizer.from_corpus`.

Batches for a diffusion model are laid out as ``<bos> tokens <eos> <pad> …`` with
:meth:`SmilesTokenizer.encode_batch`; :meth:`SmilesTokenizer.decode_batch` strips ``<bos>``,
``<eos>`` and ``<pad>`` but keeps ``<mask>`` / ``<unk>`` as literal text, so a sequence with a
mask left in it decodes to a string RDKit rejects instead of a shorter, wrongly valid molecule.
"""

from __future__ import annotations

import collections
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizer

__all__ = [
    "EOS_RULES",
    "SPECIAL_TOKENS",
    "QM9_TOKENS",
    "SmilesTokenizer",
    "tokenize_smiles",
]

EosRule = Literal["first", "research"]
EOS_RULES: tuple[str, ...] = ("first", "research")

SPECIAL_TOKENS: tuple[str, ...] = ("<bos>", "<eos>", "<mask>", "<pad>", "<unk>")

# Every token of QM9 (qm9pack 1.0.3, 130,831 molecules), RDKit-canonical and raw forms, most
# frequent first. Built once with ``SmilesTokenizer.count_tokens`` over the canonical SMILES;
# ``tests/unit/test_qm9.py`` checks that it still covers the dataset.
QM9_TOKENS: tuple[str, ...] = (
    "C", "1", "O", "2", "(", ")", "N", "=", "c", "#", "3", "n", "o", "[nH]", "4", "F",
    "[O-]", "[NH2+]", "5", "[N+]", "-", "[NH+]", "[NH3+]", "[n-]", "[C-]", "[c-]", "[nH+]",
    "[cH-]", "[CH-]", "[N-]",
)  # fmt: skip

# Literal special tokens first (a decoded "<mask>" re-encodes as <mask>), then bracket atoms,
# two-letter organic-subset atoms, two-digit ring closures, and any other single character.
_TOKEN_RE = re.compile(
    "|".join(re.escape(s) for s in SPECIAL_TOKENS) + r"|\[[^\[\]]*\]|Br|Cl|%\d\d|."
)

Overflow = Literal["error", "truncate"]


def tokenize_smiles(smiles: str) -> list[str]:
    """Split a SMILES string into tokens; joining them gives ``smiles`` back.

    Args:
        smiles: a SMILES string (may contain literal ``<mask>`` etc.).

    Returns:
        The tokens, e.g. ``"C[NH3+]%10"`` -> ``["C", "[NH3+]", "%10"]``.
    """
    return _TOKEN_RE.findall(smiles)


class SmilesTokenizer(PreTrainedTokenizer):
    """Regex SMILES tokenizer with a fixed vocabulary, saved as ``vocab.json``.

    Args:
        vocab_file: a ``vocab.json`` (``{token: id}``) written by ``save_pretrained``; ``None``
            uses the specials followed by ``tokens`` (default :data:`QM9_TOKENS`).
        tokens: the SMILES tokens of a new vocabulary (ignored when ``vocab_file`` is given).
        **kwargs: passed to ``PreTrainedTokenizer`` (e.g. ``model_max_length``).

    Example:
        >>> tok = SmilesTokenizer()
        >>> ids = tok.encode_batch(["CCO", "c1ccccc1"], length=12)  # [2, 12]
        >>> tok.decode_batch(ids)
        ['CCO', 'c1ccccc1']
    """

    vocab_files_names = {"vocab_file": "vocab.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        tokens: Sequence[str] | None = None,
        bos_token: str = "<bos>",
        eos_token: str = "<eos>",
        mask_token: str = "<mask>",
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
        **kwargs: Any,
    ) -> None:
        given = (bos_token, eos_token, mask_token, pad_token, unk_token)
        if tuple(str(s) for s in given) != SPECIAL_TOKENS:
            raise ValueError(
                f"SmilesTokenizer uses the fixed special tokens {SPECIAL_TOKENS}, got {given}; "
                "leave bos/eos/mask/pad/unk_token at their defaults"
            )
        if vocab_file is not None:
            with open(vocab_file, encoding="utf-8") as f:
                vocab = {str(k): int(v) for k, v in json.load(f).items()}
        else:
            vocab = _vocab_from_tokens(QM9_TOKENS if tokens is None else tokens)
        _check_vocab(vocab)
        self.vocab: dict[str, int] = vocab
        self.ids_to_tokens: dict[int, str] = {i: t for t, i in vocab.items()}
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            mask_token=mask_token,
            pad_token=pad_token,
            unk_token=unk_token,
            **kwargs,
        )

    # ----------------------------------------------------------------- construction
    @staticmethod
    def count_tokens(smiles: Iterable[str]) -> collections.Counter[str]:
        """Count the tokens of a corpus (specials excluded): the input to a new vocabulary."""
        counts: collections.Counter[str] = collections.Counter()
        for s in smiles:
            counts.update(tokenize_smiles(s))
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        return counts

    @classmethod
    def from_corpus(cls, smiles: Iterable[str], **kwargs: Any) -> SmilesTokenizer:
        """A tokenizer whose vocabulary is every token of ``smiles``, most frequent first."""
        counts = cls.count_tokens(smiles)
        tokens = sorted(counts, key=lambda t: (-counts[t], t))
        return cls(tokens=tokens, **kwargs)

    # ----------------------------------------------------------------- HF interface
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return tokenize_smiles(text)

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.vocab[SPECIAL_TOKENS[4]])

    def _convert_id_to_token(self, index: int) -> str:
        return self.ids_to_tokens.get(int(index), SPECIAL_TOKENS[4])

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        out = [self.bos_token_id, *token_ids_0, self.eos_token_id]
        if token_ids_1 is not None:
            out += [*token_ids_1, self.eos_token_id]
        return out

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0]
        out = [1] + [0] * len(token_ids_0) + [1]
        if token_ids_1 is not None:
            out += [0] * len(token_ids_1) + [1]
        return out

    def _decode(
        self, token_ids: int | list[int], skip_special_tokens: bool = False, **kwargs: Any
    ) -> str:
        """Like HF, but ``skip_special_tokens`` keeps ``<mask>``/``<unk>`` (they mark invalid SMILES)."""
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        drop = self._framing_ids() if skip_special_tokens else set()
        return "".join(self._convert_id_to_token(i) for i in ids if int(i) not in drop)

    def save_vocabulary(
        self, save_directory: str, filename_prefix: str | None = None
    ) -> tuple[str]:
        if not os.path.isdir(save_directory):
            raise ValueError(
                f"save_directory {save_directory!r} is not a directory; create it first"
            )
        name = (f"{filename_prefix}-" if filename_prefix else "") + self.vocab_files_names[
            "vocab_file"
        ]
        path = os.path.join(save_directory, name)
        ordered = dict(sorted(self.vocab.items(), key=lambda kv: kv[1]))
        with open(path, "w", encoding="utf-8") as f:
            json.dump(ordered, f, indent=1, ensure_ascii=False)
            f.write("\n")
        return (path,)

    # ----------------------------------------------------------------- fast batch helpers
    def token_ids(self, smiles: str) -> list[int]:
        """Ids of the tokens of one SMILES string, no specials; unknown tokens -> ``unk``."""
        unk = self.vocab[SPECIAL_TOKENS[4]]
        return [self.vocab.get(t, unk) for t in tokenize_smiles(smiles)]

    def encode_batch(
        self,
        smiles: Sequence[str],
        length: int = 32,
        overflow: Overflow = "error",
        allow_unknown: bool = False,
    ) -> torch.Tensor:
        """Encode SMILES as ``<bos> tokens <eos> <pad> …`` rows of a fixed length.

        Args:
            smiles: ``N`` SMILES strings.
            length: row length ``L``, specials included (a molecule may have ``L - 2`` tokens).
            overflow: ``"error"`` raises on a molecule longer than ``L - 2`` tokens;
                ``"truncate"`` keeps its first ``L - 2`` tokens (``<eos>`` still closes the row)
                and warns with the number of truncated molecules.
            allow_unknown: encode tokens outside the vocabulary as ``<unk>`` instead of raising.

        Returns:
            LongTensor ``[N, L]``.
        """
        if length < 3:
            raise ValueError(f"length={length} leaves no room for tokens; use length >= 3")
        if overflow not in ("error", "truncate"):
            raise ValueError(f"overflow must be 'error' or 'truncate', got {overflow!r}")
        bos, eos, _, pad, unk = (self.vocab[s] for s in SPECIAL_TOKENS)
        out = np.full((len(smiles), length), pad, dtype=np.int64)
        too_long: list[int] = []
        unknown: set[str] = set()
        for row, s in enumerate(smiles):
            tokens = tokenize_smiles(s)
            ids = [self.vocab.get(t, unk) for t in tokens]
            if not allow_unknown and unk in ids:
                unknown.update(t for t in tokens if t not in self.vocab)
            if len(ids) > length - 2:
                too_long.append(row)
                ids = ids[: length - 2]
            out[row, 0] = bos
            out[row, 1 : len(ids) + 1] = ids
            out[row, len(ids) + 1] = eos
        if unknown:
            raise ValueError(
                f"tokens {sorted(unknown)} are not in the vocabulary of {self.vocab_size}; build "
                "one with SmilesTokenizer.from_corpus(...) or pass allow_unknown=True"
            )
        if too_long:
            msg = (
                f"{len(too_long)} of {len(smiles)} molecules have more than length-2={length - 2} "
                f"tokens (first: row {too_long[0]}, {smiles[too_long[0]]!r})"
            )
            if overflow == "error":
                raise ValueError(msg + "; increase length or pass overflow='truncate'")
            warnings.warn(msg + "; truncated them", stacklevel=2)
        return torch.from_numpy(out)

    def decode_batch(
        self, ids: torch.Tensor | Sequence[Sequence[int]], eos_rule: EosRule = "first"
    ) -> list[str]:
        """Decode rows of ids to SMILES: a molecule ends at its first ``<eos>``.

        ``<bos>`` and ``<pad>`` are dropped; ``<mask>`` and ``<unk>`` (and ids outside the
        vocabulary, as ``<unk>``) stay in the text so that such a sequence is an invalid molecule.

        Args:
            ids: ``[N, L]`` token ids.
            eos_rule: ``"first"`` (default): everything after a row's first ``<eos>`` is ignored.
                ``"research"``: the research code's QM9 evaluation, which strips ``<bos>``,
                ``<eos>`` and ``<pad>`` wherever they are, so tokens generated after the end token
                are glued onto the molecule.

        Returns:
            ``N`` strings.
        """
        if eos_rule not in EOS_RULES:
            raise ValueError(f"eos_rule must be one of {EOS_RULES}, got {eos_rule!r}")
        rows = ids.tolist() if isinstance(ids, torch.Tensor) else [list(r) for r in ids]
        eos = self.vocab[SPECIAL_TOKENS[1]]
        drop = self._framing_ids()
        out = []
        for row in rows:
            if eos_rule == "first" and eos in row:
                row = row[: row.index(eos)]
            out.append("".join(self._convert_id_to_token(i) for i in row if i not in drop))
        return out

    def _framing_ids(self) -> set[int]:
        return {
            self.vocab[SPECIAL_TOKENS[0]],
            self.vocab[SPECIAL_TOKENS[1]],
            self.vocab[SPECIAL_TOKENS[3]],
        }


def _vocab_from_tokens(tokens: Sequence[str]) -> dict[str, int]:
    tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
    if len(set(tokens)) != len(tokens):
        raise ValueError("tokens contain duplicates; pass each SMILES token once")
    return {t: i for i, t in enumerate((*SPECIAL_TOKENS, *tokens))}


def _check_vocab(vocab: dict[str, int]) -> None:
    for i, special in enumerate(SPECIAL_TOKENS):
        if vocab.get(special) != i:
            raise ValueError(
                f"vocabulary must map {special!r} to id {i} (specials {SPECIAL_TOKENS} come "
                f"first), got {vocab.get(special)}; rebuild it with SmilesTokenizer.from_corpus"
            )
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError("vocabulary ids must be 0..V-1 without gaps or repeats")


class _SmilesTokenizerConfig(PretrainedConfig):
    """Placeholder config that lets ``AutoTokenizer`` resolve ``tokenizer_class: SmilesTokenizer``.

    ``AutoTokenizer`` finds classes named in ``tokenizer_config.json`` among registered ones; a
    registration needs a config class, and no model uses this one.
    """

    model_type = "proseco-smiles-tokenizer"


AutoTokenizer.register(_SmilesTokenizerConfig, slow_tokenizer_class=SmilesTokenizer, exist_ok=True)
