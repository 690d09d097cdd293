"""Text metrics (`proseco.eval.text`): gen-PPL, entropy, MAUVE's skip path, the EOS cut, NELBO.

The evaluator here is a bigram table wrapped as a causal LM, over a word-level tokenizer: it
knows word order (a fluent sentence beats its shuffled words) and its perplexities can be
computed by hand.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from proseco.errors import DataError
from proseco.eval.text import (
    Evaluator,
    cut_at_eos,
    distinct_n,
    evaluator_features,
    generative_nll_per_sample,
    generative_perplexity,
    mauve_score,
    sample_entropy,
    score_texts,
    text_metrics,
    validation_nelbo,
)

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the rug",
    "a cat ran to the dog",
    "the dog ran to a cat",
    "a bird sat on the mat",
]
SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"]


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in CORPUS for w in s.split()})
    vocab = {t: i for i, t in enumerate(SPECIALS + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>",
    )  # fmt: skip


class BigramLM(nn.Module):
    """``logits[b, l] = log P(next | ids[b, l])``: a causal LM that looks one token back."""

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(log_probs.clone())
        self.config = SimpleNamespace(max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        rows = self.table[input_ids]
        return SimpleNamespace(logits=rows, hidden_states=(rows,) if output_hidden_states else None)


def bigram_evaluator(smoothing: float = 0.01) -> Evaluator:
    """Bigram counts of the corpus (each sentence after <s>), add-``smoothing``, normalised."""
    tok = word_tokenizer()
    size = len(tok)
    counts = torch.full((size, size), smoothing)
    for sentence in CORPUS:
        ids = [tok.bos_token_id, *tok(sentence, add_special_tokens=False)["input_ids"]]
        for a, b in zip(ids, ids[1:]):
            counts[a, b] += 1
    return Evaluator(BigramLM((counts / counts.sum(1, keepdim=True)).log()), tok, "bigram")


def by_hand_ppl(evaluator: Evaluator, texts: list[str]) -> float:
    tok, table = evaluator.tokenizer, evaluator.model.table.detach()
    nll, n = 0.0, 0
    for text in texts:
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        for a, b in zip(ids, ids[1:]):
            nll -= float(table[a, b])
            n += 1
    return math.exp(nll / n)


# --- generative perplexity -------------------------------------------------------------------


def test_fluent_sentence_beats_its_shuffled_words():
    ev = bigram_evaluator()
    fluent = "the cat sat on the rug"  # not in the corpus, but every bigram is
    shuffled = "rug the on cat sat the"
    assert sorted(fluent.split()) == sorted(shuffled.split())
    good = generative_perplexity([fluent], ev)
    bad = generative_perplexity([shuffled], ev)
    assert good < 3.0 and bad > 30.0


def test_gen_ppl_equals_the_hand_computation_and_ignores_batching():
    ev = bigram_evaluator()
    texts = ["the cat sat", "a dog ran to the mat on the rug", "cat", "mat the"]
    expected = by_hand_ppl(ev, texts)
    for batch_size in (1, 2, 16):
        assert generative_perplexity(texts, ev, batch_size=batch_size) == pytest.approx(
            expected, rel=1e-6
        )


def test_gen_ppl_is_token_weighted_and_scores_the_first_token_after_bos():
    ev = bigram_evaluator()
    tok, table = ev.tokenizer, ev.model.table.detach()
    bos, the, cat = tok.bos_token_id, *tok("the cat", add_special_tokens=False)["input_ids"]
    # "the cat": two scored tokens, P(the | <s>) and P(cat | the); "cat": one, P(cat | <s>)
    nll = -(table[bos, the] + table[the, cat] + table[bos, cat])
    assert generative_perplexity(["the cat", "cat"], ev) == pytest.approx(
        math.exp(float(nll) / 3), rel=1e-6
    )


def test_gen_ppl_truncates_to_max_length():
    ev = bigram_evaluator()
    assert generative_perplexity(["the cat sat on the mat"], ev, max_length=2) == pytest.approx(
        by_hand_ppl(ev, ["the cat"]), rel=1e-6
    )


def test_gen_ppl_of_nothing_is_an_error():
    with pytest.raises(DataError, match="empty"):
        generative_perplexity(["", ""], bigram_evaluator())


def test_per_sample_nll_is_each_text_by_hand_in_input_order():
    ev = bigram_evaluator()
    texts = ["a dog ran to the mat on the rug", "the cat sat", "cat"]
    for batch_size in (1, 2, 16):
        nll, count = generative_nll_per_sample(texts, ev, batch_size=batch_size)
        assert count.tolist() == [9, 3, 1]
        for i, text in enumerate(texts):
            by_hand = math.log(by_hand_ppl(ev, [text])) * count[i].item()
            assert nll[i].item() == pytest.approx(by_hand, rel=1e-6)


def test_score_texts_gives_the_features_of_evaluator_features_in_the_same_pass():
    ev = bigram_evaluator()
    texts = ["a dog ran to the mat", "the cat sat", "cat"]
    out = score_texts(texts, ev, batch_size=2, features=True)
    assert torch.allclose(out["features"], evaluator_features(texts, ev))
    assert torch.equal(out["count"], generative_nll_per_sample(texts, ev)[1])


# --- distinct-n ------------------------------------------------------------------------------


def test_distinct_n_by_hand():
    rows = [[1, 2, 1, 2, 1], [5, 6, 7], [4], []]
    assert distinct_n(rows, 1) == [2 / 5, 1.0, 1.0, 0.0]
    assert distinct_n(rows, 2) == [2 / 4, 1.0, 0.0, 0.0]  # (1,2) (2,1) (1,2) (2,1)
    assert distinct_n(torch.tensor([[3, 3, 3, 3]]), 2) == [1 / 3]
    with pytest.raises(Exception, match="n must be >= 1"):
        distinct_n(rows, 0)


# --- entropy ---------------------------------------------------------------------------------


def test_entropy_against_hand_computed_values():
    samples = [[1, 1, 2, 2], [5, 5, 5], [1, 2, 3, 4], [7, 7, 7, 9], []]
    expected = [
        math.log(2),  # two tokens, half each
        0.0,  # one token
        math.log(4),  # four distinct tokens
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)),  # 0.5623...
        0.0,  # empty sample
    ]
    assert sample_entropy(samples) == pytest.approx(expected, abs=1e-12)
    assert expected[3] == pytest.approx(0.5623351446, abs=1e-9)


def test_entropy_matches_the_research_formula_on_a_tensor():
    x = torch.randint(0, 7, (5, 40), generator=torch.Generator().manual_seed(0))
    ours = sample_entropy(x)
    for row, value in zip(x, ours):
        counts = torch.unique(row, return_counts=True)[1]
        ref = torch.special.entr(counts.double() / counts.sum()).sum().item()
        assert value == pytest.approx(ref, abs=1e-12)


# --- the EOS cut -----------------------------------------------------------------------------


def test_cut_at_eos():
    assert cut_at_eos([5, 6, 2, 7, 2], 2) == [5, 6]
    assert cut_at_eos([5, 6, 7], 2) == [5, 6, 7]
    assert cut_at_eos([5, 2, 7], None) == [5, 2, 7]
    assert cut_at_eos([2, 5], 2) == []
    assert cut_at_eos(torch.tensor([4, 3, 9]), 3) == [4]
    # a layout whose BOS is its EOS (GPT-2's <|endoftext|>): skip the leading one
    assert cut_at_eos([0, 5, 6, 0, 7], 0, bos_id=0) == [5, 6]
    assert cut_at_eos([1, 5, 6, 2, 7], 2, bos_id=1) == [5, 6]
    assert cut_at_eos([5, 6, 2], 2, bos_id=1) == [5, 6]


def test_text_metrics_uses_one_cut_for_every_metric():
    ev = bigram_evaluator()
    tok = ev.tokenizer
    bos, eos = tok.bos_token_id, tok.eos_token_id
    body = tok("the cat sat", add_special_tokens=False)["input_ids"]
    junk = tok("mat mat mat", add_special_tokens=False)["input_ids"]
    rows = [[bos, *body, eos, *junk], [bos, *body, eos, *body]]
    out = text_metrics(None, ev, token_ids=rows, tokenizer=tok, eos_id=eos, bos_id=bos)
    assert out["num_samples"] == 2 and out["mean_tokens"] == 3
    assert out["entropy"] == pytest.approx(math.log(3))  # "the cat sat": 3 distinct words
    assert out["gen_ppl"] == pytest.approx(by_hand_ppl(ev, ["the cat sat"] * 2), rel=1e-6)
    assert out["mauve"] is None and out["reference_gen_ppl"] is None


# --- MAUVE -----------------------------------------------------------------------------------


def test_mauve_is_skipped_with_one_clear_message_when_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "mauve", None)  # makes `import mauve` raise ImportError
    ev = bigram_evaluator()
    with pytest.warns(UserWarning, match=r"mauve-text.*proseco\[mauve\]") as record:
        assert mauve_score(CORPUS, CORPUS, ev) is None
    assert len(record) == 1
    with pytest.warns(UserWarning, match="MAUVE skipped"):
        out = text_metrics(CORPUS[:2], ev, reference=CORPUS)
    assert out["mauve"] is None
    assert out["reference_gen_ppl"] == pytest.approx(by_hand_ppl(ev, CORPUS), rel=1e-6)


def test_mauve_of_a_set_against_itself_is_high():
    pytest.importorskip("mauve")
    ev = bigram_evaluator()
    texts = [" ".join(s.split()[i:]) for s in CORPUS for i in range(4)] * 2
    assert mauve_score(texts, texts, ev, num_buckets=4) > 0.9


# --- validation NELBO ------------------------------------------------------------------------


class Uniform(nn.Module):
    """Zero logits: ``p = 1 / (V - 1)`` over the non-mask tokens."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab_size = vocab
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        return torch.zeros(*input_ids.shape, self.vocab_size) * self.w


def test_validation_nelbo_of_a_uniform_model_is_log_vocab():
    # E[sum over masked of w(t) * log(V-1)] = L log(V-1) for the log-linear schedule
    x = torch.randint(0, 5, (128, 16), generator=torch.Generator().manual_seed(0))
    out = validation_nelbo(Uniform(6), x, mask_id=5, batch_size=32, num_draws=4)
    assert out["tokens"] == 128 * 16
    assert out["nelbo"] == pytest.approx(math.log(5), rel=0.1)
    assert out["ppl"] == pytest.approx(math.exp(out["nelbo"]))
    again = validation_nelbo(Uniform(6), x, mask_id=5, batch_size=32, num_draws=4)
    assert again == out  # seeded


def test_validation_nelbo_counts_only_loss_positions():
    x = torch.randint(0, 5, (4, 8), generator=torch.Generator().manual_seed(1))
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep[:, :3] = True
    assert validation_nelbo(Uniform(6), x, mask_id=5, loss_mask=keep)["tokens"] == 12


# --- the real evaluator ----------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_prefers_fluent_english():
    pytest.importorskip("gguf")
    from proseco.eval.text import load_evaluator

    ev = load_evaluator()
    fluent = "The old man walked slowly down the road to the village market."
    words = fluent.rstrip(".").split()
    shuffled = " ".join(words[i] for i in (5, 2, 9, 0, 7, 11, 3, 8, 1, 10, 4, 6)) + "."
    assert Counter(shuffled.rstrip(".").split()) == Counter(words)
    assert generative_perplexity([fluent], ev) * 10 < generative_perplexity([shuffled], ev)


# --- the command -----------------------------------------------------------------------------


def write_samples(path, tok) -> None:
    import json

    bos, eos = tok.bos_token_id, tok.eos_token_id
    rows = [
        [bos, *tok("the cat sat", add_special_tokens=False)["input_ids"], eos, eos],
        [bos, *tok("the dog ran", add_special_tokens=False)["input_ids"], eos, bos],
    ]
    with path.open("w") as f:
        for i, row in enumerate(rows):
            record = {"index": i, "text": tok.decode(row[1:4]), "tokens": row, "nfe": 8 + i,
                      "sampling_config": {"eos_id": eos}}  # fmt: skip
            f.write(json.dumps(record) + "\n")


def test_eval_text_command(tmp_path, monkeypatch, capsys):
    import json

    from proseco import commands
    from proseco.eval import text as text_module

    ev = bigram_evaluator()
    monkeypatch.setattr(text_module, "load_evaluator", lambda name, device="cpu": ev)
    samples, out = tmp_path / "samples.jsonl", tmp_path / "m.json"
    write_samples(samples, ev.tokenizer)
    reference = tmp_path / "ref.jsonl"
    reference.write_text("".join(json.dumps({"text": s}) + "\n" for s in CORPUS))
    argv = ["eval", "text", str(samples), "--reference", str(reference), "--no-mauve",
            "--bos-id", str(ev.tokenizer.bos_token_id), "--output", str(out)]  # fmt: skip
    assert commands.main(argv) == 0
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert report["eos_id"] == ev.tokenizer.eos_token_id and report["num_reference"] == 2
    assert metrics["entropy"] == pytest.approx(math.log(3))  # both cut to three distinct words
    assert metrics["mean_tokens"] == 3 and metrics["mean_nfe"] == 8.5
    texts = ["the cat sat", "the dog ran"]
    assert metrics["gen_ppl"] == pytest.approx(by_hand_ppl(ev, texts), rel=1e-6)
    assert metrics["reference_gen_ppl"] == pytest.approx(by_hand_ppl(ev, CORPUS[:2]), rel=1e-6)
    assert metrics["mauve"] is None
    assert "gen_ppl" in capsys.readouterr().out


def test_eval_text_command_errors_are_one_line(tmp_path, capsys):
    from proseco import commands

    missing = tmp_path / "nope.jsonl"
    assert commands.main(["eval", "text", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1


def test_eval_nelbo_command(tmp_path, capsys):
    import json

    from proseco import commands
    from proseco.data.text import encode_pretraining
    from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig

    tok = word_tokenizer()
    tok.add_special_tokens({"mask_token": "<mask>"})
    config = ProsecoDiTConfig(vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2,
                              cond_dim=8, max_length=8, mask_token_id=tok.mask_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = ProsecoDiT(config).eval()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps({"text": s}) + "\n" for s in CORPUS))
    out = tmp_path / "nelbo.json"
    argv = ["eval", "nelbo", str(tmp_path / "m"), "--data", str(data), "--num-draws", "2",
            "--output", str(out)]  # fmt: skip
    assert commands.main(argv) == 0
    report = json.loads(out.read_text())
    batch = encode_pretraining(CORPUS, tok, max_length=8)
    expected = validation_nelbo(model, batch["input_ids"], mask_id=tok.mask_token_id,
                                loss_mask=batch["loss_mask"], num_draws=2)  # fmt: skip
    assert report["sequences"] == batch["input_ids"].shape[0] and report["length"] == 8
    assert report["tokens"] == expected["tokens"] == batch["loss_mask"].sum()
    assert report["nelbo"] == pytest.approx(expected["nelbo"], rel=1e-6)
    assert "nelbo" in capsys.readouterr().out


def test_eval_nelbo_refuses_a_causal_model(tmp_path, capsys):
    from proseco import commands
    from proseco.models.dit import ProsecoDiT, ProsecoDiTConfig

    tok = word_tokenizer()
    tok.add_special_tokens({"mask_token": "<mask>"})
    config = ProsecoDiTConfig(vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=2,
                              cond_dim=8, max_length=8, mask_token_id=tok.mask_token_id,
                              causal=True)  # fmt: skip
    ProsecoDiT(config).save_pretrained(tmp_path / "ar")
    tok.save_pretrained(tmp_path / "ar")
    data = tmp_path / "heldout.jsonl"
    data.write_text('{"text": "a b"}\n')
    capsys.readouterr()  # drop the progress bars of save_pretrained
    assert commands.main(["eval", "nelbo", str(tmp_path / "ar"), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # (transformers' loading bar may precede it)
    assert "causal (AR) model" in err[-1] and "Traceback" not in "\n".join(err)
