"""SMILES tokenizer: regex split, fixed vocabulary, batch layout, decoding of masks, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from proseco.data.smiles import QM9_TOKENS, SPECIAL_TOKENS, SmilesTokenizer, tokenize_smiles

# Real QM9 canonical SMILES that together contain every token of QM9_TOKENS.
QM9_TOKEN_COVER = [
    "C", "N", "O", "C#C", "C=O", "C1CC1", "CC(C)C", "c1ccoc1", "c1cnoc1", "C1C2CC1C2",
    "FC(F)(F)F", "c1c[nH]cn1", "C1C2C3CC2C13", "c1cc2ccnc-2on1", "C1C2C3C4C1N2C34",
    "[NH3+]CCC(=O)[O-]", "NC=[NH+]c1cnn[n-]1", "C1C2C3C4C5C1C2N5C34", "C[NH2+]CC(CO)=N[O-]",
    "O=[N+]([O-])c1ccco1", "N#C[C-](C#N)[NH+]=CN", "N=c1cn[n-]c(N)[nH+]1",
    "C[NH2+]CC[N-]C(=O)C#N", "[NH3+][c-]1ccc2nonc21", "O=C1C=C2CC[NH+]2[CH-]1",
    "[NH2+]=c1ccc(=O)[cH-]o1",
]  # fmt: skip


@pytest.fixture(scope="module")
def tok() -> SmilesTokenizer:
    return SmilesTokenizer()


def test_specials_have_the_research_codes_ids(tok):
    ids = [
        tok.bos_token_id,
        tok.eos_token_id,
        tok.mask_token_id,
        tok.pad_token_id,
        tok.unk_token_id,
    ]
    assert ids == [0, 1, 2, 3, 4]
    names = (tok.bos_token, tok.eos_token, tok.mask_token, tok.pad_token, tok.unk_token)
    assert names == SPECIAL_TOKENS
    assert len(tok) == tok.vocab_size == 5 + len(QM9_TOKENS) == 35


@pytest.mark.parametrize(
    ("smiles", "tokens"),
    [
        ("CCO", ["C", "C", "O"]),
        ("[NH3+]CC(=O)[O-]", ["[NH3+]", "C", "C", "(", "=", "O", ")", "[O-]"]),
        ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
        ("C%10CC%10Cl", ["C", "%10", "C", "C", "%10", "Cl"]),
        (
            "Br[C@@H](F)/C=C\\[13CH3-]",
            ["Br", "[C@@H]", "(", "F", ")", "/", "C", "=", "C", "\\", "[13CH3-]"],
        ),
        ("C<mask>C<unk>", ["C", "<mask>", "C", "<unk>"]),
        ("C?X", ["C", "?", "X"]),
    ],
)
def test_regex_splits_atoms_bonds_ring_closures_and_literal_specials(smiles, tokens):
    assert tokenize_smiles(smiles) == tokens
    assert "".join(tokens) == smiles


def test_encode_batch_lays_out_bos_tokens_eos_pad(tok):
    ids = tok.encode_batch(["CCO", "C#N"], length=7)
    v = tok.get_vocab()
    assert ids.dtype == torch.long and ids.shape == (2, 7)
    assert ids[0].tolist() == [0, v["C"], v["C"], v["O"], 1, 3, 3]
    assert ids[1].tolist() == [0, v["C"], v["#"], v["N"], 1, 3, 3]


def test_round_trip_covers_every_qm9_token(tok):
    covered = {t for s in QM9_TOKEN_COVER for t in tokenize_smiles(s)}
    assert covered == set(QM9_TOKENS)
    ids = tok.encode_batch(QM9_TOKEN_COVER, length=32)
    assert (ids != tok.unk_token_id).all()
    assert tok.decode_batch(ids) == QM9_TOKEN_COVER


def test_round_trip_bracket_atoms_charges_and_two_digit_ring_closures():
    smiles = [
        "C%10CCCCCCCCC%10",
        "[C@@H](Cl)(Br)F",
        "[13CH3-]",
        "[Na+].[Cl-]",
        "c1ccc2c(c1)[nH]c1ccccc12",
    ]
    tok = SmilesTokenizer.from_corpus(smiles)
    assert "%10" in tok.get_vocab() and "[C@@H]" in tok.get_vocab()
    assert tok.decode_batch(tok.encode_batch(smiles, length=24)) == smiles


def test_round_trip_on_rdkit_nci_fixture():
    from proseco.data.qm9 import fixture_smiles

    smiles = fixture_smiles()  # 4,999 drug-like molecules, raw (Kekulé) SMILES
    tok = SmilesTokenizer.from_corpus(smiles)
    longest = max(len(tokenize_smiles(s)) for s in smiles)
    assert tok.decode_batch(tok.encode_batch(smiles, length=longest + 2)) == smiles


def test_unknown_tokens_raise_unless_allowed_and_then_decode_as_unk(tok):
    with pytest.raises(ValueError, match=r"\['Cl'\] are not in the vocabulary"):
        tok.encode_batch(["CCl"], length=8)
    ids = tok.encode_batch(["CCl"], length=8, allow_unknown=True)
    assert ids[0, 2].item() == tok.unk_token_id
    assert tok.decode_batch(ids) == ["C<unk>"]


def test_too_long_molecules_raise_or_are_truncated_with_a_count(tok):
    with pytest.raises(ValueError, match="1 of 2 molecules have more than length-2=3 tokens"):
        tok.encode_batch(["CCCC", "CC"], length=5)
    with pytest.warns(UserWarning, match="1 of 2 molecules.*truncated"):
        ids = tok.encode_batch(["CCCC", "CC"], length=5, overflow="truncate")
    assert tok.decode_batch(ids) == ["CCC", "CC"]
    assert ids[0].tolist()[-1] == tok.eos_token_id


def test_left_over_mask_stays_in_the_text_and_makes_the_molecule_invalid(tok):
    from rdkit import Chem

    ids = tok.encode_batch(["CCO"], length=8)
    ids[0, 2] = tok.mask_token_id
    (text,) = tok.decode_batch(ids)
    assert text == "C<mask>O"
    assert Chem.MolFromSmiles(text) is None
    # the generic HF path keeps it too
    assert tok.batch_decode(ids, skip_special_tokens=True) == ["C<mask>O"]
    # and it re-encodes as the mask token
    assert tok.encode_batch([text], length=8)[0].tolist() == ids[0].tolist()


def test_ids_outside_the_vocabulary_decode_as_unk(tok):
    assert tok.decode_batch([[0, 5, 99, 1]]) == [tok.convert_ids_to_tokens(5) + "<unk>"]


def test_a_molecule_ends_at_its_first_eos_unless_the_research_rule_is_asked_for(tok):
    v = tok.get_vocab()
    row = [0, v["C"], v["C"], 1, 3, v["O"], 3]
    assert tok.decode_batch([row]) == ["CC"]
    # research code: strip <bos>/<eos>/<pad> anywhere, gluing later tokens on
    assert tok.decode_batch([row], eos_rule="research") == ["CCO"]
    with pytest.raises(ValueError, match="eos_rule"):
        tok.decode_batch([row], eos_rule="last")


def test_hf_call_matches_encode_batch(tok):
    smiles = ["CCO", "c1ccoc1", "[NH3+]CC(=O)[O-]"]
    enc = tok(smiles, padding="max_length", max_length=16, return_tensors="pt")
    ids = tok.encode_batch(smiles, length=16)
    assert torch.equal(enc["input_ids"], ids)
    assert torch.equal(enc["attention_mask"], (ids != tok.pad_token_id).long())


def test_save_pretrained_and_from_pretrained_round_trip(tmp_path):
    tok = SmilesTokenizer.from_corpus(["CCCl", "BrC", "C%10CC%10"])
    tok.save_pretrained(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert list(vocab)[:5] == list(SPECIAL_TOKENS) and list(vocab.values()) == list(
        range(len(vocab))
    )
    loaded = SmilesTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.mask_token == "<mask>" and loaded.mask_token_id == 2
    ids = loaded.encode_batch(["ClCBr"], length=8)
    assert loaded.decode_batch(ids) == ["ClCBr"]


def test_bad_vocabularies_and_special_tokens_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="fixed special tokens"):
        SmilesTokenizer(mask_token="[MASK]")
    bad = tmp_path / "vocab.json"
    bad.write_text(
        json.dumps({"C": 0, "<bos>": 1, "<eos>": 2, "<mask>": 3, "<pad>": 4, "<unk>": 5})
    )
    with pytest.raises(ValueError, match="must map '<bos>' to id 0"):
        SmilesTokenizer(vocab_file=bad)
    with pytest.raises(ValueError, match="duplicates"):
        SmilesTokenizer(tokens=["C", "C"])
