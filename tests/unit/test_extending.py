"""Extending the sampler: the README's user-written strategy runs as printed, and a new strategy or
corrector update is one class plus one registration line (config JSON, spec strings, CLI choices)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import proseco
from proseco.sampling import CORRECTOR_UPDATES, UNMASKING, Corrector, SamplingConfig, sample
from proseco.sampling.testing import ToyDenoiser

README = Path(__file__).resolve().parents[2] / "README.md"
V, MASK = 12, 11


def readme_block(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def clean_registries():
    before = (UNMASKING.names(), CORRECTOR_UPDATES.names())
    yield
    for registry, names in zip((UNMASKING, CORRECTOR_UPDATES), before):
        for name in registry.names():
            if name not in names:
                registry.unregister(name)


def test_the_readme_strategy_example_runs_and_decodes_left_to_right(clean_registries):
    namespace: dict = {}
    exec(compile(readme_block("### Write your own strategy"), "README.md", "exec"), namespace)
    assert "left_to_right" in UNMASKING.names()
    out = sample(
        ToyDenoiser(vocab_size=V), mask_id=MASK, batch_size=3, length=8, steps=4,
        unmasking="left_to_right:per_step=2", return_history=True,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    for k, record in enumerate(r for r in out.history if r.kind == "step"):
        revealed = record.unmasked.nonzero(as_tuple=True)[1].view(3, 2)
        assert (revealed == torch.tensor([2 * k, 2 * k + 1])).all()  # strictly left to right
    config = SamplingConfig(unmasking="left_to_right:per_step=3")
    assert config.to_dict()["unmasking"] == {"name": "left_to_right", "per_step": 3}
    assert SamplingConfig.from_json(config.to_json()) == config


def test_a_registered_name_becomes_a_command_line_choice(clean_registries, capsys):
    @UNMASKING.register("everything_at_once")
    @dataclass(frozen=True)
    class EverythingAtOnce:
        stop_when_done = True
        final_fill = "sample"
        uses_scores = False

        def __call__(self, logits, xt, step):
            reveal = step.active & (xt == step.mask_id)
            return proseco.draw_at(logits, reveal, step.processor, step.generator)

    from proseco.commands import build_parser

    with pytest.raises(SystemExit):
        build_parser("sample").parse_args(["sample", "--help"])
    assert "everything_at_once" in capsys.readouterr().out
    out = sample(ToyDenoiser(vocab_size=V), mask_id=MASK, length=8, steps=4,
                 unmasking="everything_at_once")  # fmt: skip
    assert out.num_steps == 1 and out.nfe == 1


def test_a_user_corrector_update_plugs_in_and_its_determinism_allows_early_exit(clean_registries):
    @CORRECTOR_UPDATES.register("keep")
    @dataclass(frozen=True)
    class Keep:
        """Never changes the draft: every corrector loop is a fixed point after one call."""

        deterministic = True

        def __call__(self, logits, y, region, processor, generator):
            return y

    def run(corrector):
        return sample(ToyDenoiser(vocab_size=V), mask_id=MASK, length=8, steps=4,
                      corrector=corrector, generator=torch.Generator().manual_seed(0))  # fmt: skip

    out = run(Corrector(steps=3, update="keep"))
    no_exit = run(Corrector(steps=3, update="keep", early_exit=False))
    assert out.corrector_nfe <= 4  # one call per firing, then the fixed point ends the loop
    assert no_exit.corrector_nfe == 3 * out.corrector_nfe
    assert torch.equal(out.tokens, no_exit.tokens)
    assert Corrector(update="keep").to_dict()["update"] == {"name": "keep"}


def test_unknown_names_list_the_known_ones_and_suggest_the_closest():
    with pytest.raises(ValueError, match=r"did you mean 'confidence'.*choose one of \["):
        SamplingConfig(unmasking="confidance")
    with pytest.raises(ValueError, match="did you mean 'sample'"):
        Corrector(update="sampel")
    with pytest.raises(ValueError, match="has no setting 'strategy'.*'mode'"):
        SamplingConfig(unmasking="remdm:strategy=loop")
