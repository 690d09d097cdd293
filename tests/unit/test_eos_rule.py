"""A molecule ends at its end token: the metric path of the demo and the QM9 benchmark
(``eval.study.evaluate_setting``) decodes up to the first ``<eos>``; the research rule is an option."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("rdkit")

from proseco.data.smiles import SmilesTokenizer  # noqa: E402
from proseco.eval.study import SamplerSetting, evaluate_setting  # noqa: E402
from proseco.sampling import SamplingConfig  # noqa: E402


class Writes(torch.nn.Module):
    """Predicts the same row of tokens whatever it is shown (one-hot logits)."""

    def __init__(self, row: list[int], vocab_size: int) -> None:
        super().__init__()
        self.row = torch.tensor(row)
        self.vocab_size = vocab_size
        self.config = SimpleNamespace(vocab_size=vocab_size, max_length=len(row))

    def forward(self, input_ids):
        logits = torch.full((*input_ids.shape, self.vocab_size), -30.0)
        logits[:, torch.arange(len(self.row)), self.row] = 30.0
        return logits


@pytest.mark.parametrize("steps, corrector", [(1, None), (4, None), (4, {"steps": 1})])
def test_tokens_after_the_first_eos_are_not_part_of_the_molecule(steps, corrector):
    tok = SmilesTokenizer()
    v = tok.get_vocab()
    # <bos> C C O <eos> ( ( <pad>: the research rule glues "((" on and breaks the molecule
    row = [v["<bos>"], v["C"], v["C"], v["O"], v["<eos>"], v["("], v["("], v["<pad>"]]
    models = {"m": (Writes(row, len(tok)), tok)}
    setting = SamplerSetting("x", "m", SamplingConfig(steps=steps, corrector=corrector))
    kwargs = dict(train_smiles=None, num_samples=6, batch_size=3, seed=0)
    first, smiles = evaluate_setting(models, setting, **kwargs)
    assert smiles == ["CCO"] * 6
    assert first["validity"] == 1.0 and first["eos_rule"] == "first"
    assert first["validity_other_rule"] == 0.0
    research, smiles = evaluate_setting(models, setting, eos_rule="research", **kwargs)
    assert smiles == ["CCO(("] * 6
    assert research["validity"] == 0.0 and research["validity_other_rule"] == 1.0
