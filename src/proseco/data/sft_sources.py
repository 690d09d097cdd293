"""Prompt/response datasets on the Hugging Face hub that SFT recipes name, and their fields.

The paper fine-tunes LLaDA-8B-Base on a blend of rStar-Coder (code) and OpenMathInstruct-2
(math). Reading them needs internet (``pip install "proseco[text]"``); what can be checked
offline is that a recipe names their fields, configs and splits correctly, so a typo fails
when the recipe is loaded rather than after a multi-gigabyte download.
:func:`check_sft_source` does that for the datasets in :data:`KNOWN_SFT_DATASETS`; any other
source is left alone. :func:`read_sft_mix` reads more of them (``data.mix``) into records
with the recipe's own prompt/response field names, to blend them with ``data.source``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["HubSFTDataset", "KNOWN_SFT_DATASETS", "check_sft_source", "parse_mix", "read_sft_mix"]


@dataclass(frozen=True)
class HubSFTDataset:
    """What a recipe must set to read one hub dataset as prompt/response pairs.

    Attributes:
        name: the hub name (``data.source``).
        prompt_field, response_field: the record fields (``data.prompt_field`` /
            ``data.response_field``).
        configs: the dataset's config names (``data.hub_config``); empty = it has none.
        splits: its splits (``data.split``).
    """

    name: str
    prompt_field: str
    response_field: str
    configs: tuple[str, ...]
    splits: tuple[str, ...]

    def settings(self) -> str:
        """The recipe lines that read this dataset (for error messages)."""
        config = f", hub_config: {self.configs[0]}" if self.configs else ""
        return (
            f"data: {{source: {self.name}{config}, split: {self.splits[0]}, prompt_field: "
            f"{self.prompt_field}, response_field: {self.response_field}}}"
        )


KNOWN_SFT_DATASETS: dict[str, HubSFTDataset] = {
    d.name.lower(): d
    for d in (
        # fields of both SFT configs: question, response (+ code, seed_question, ...)
        HubSFTDataset(
            name="microsoft/rStar-Coder",
            prompt_field="question",
            response_field="response",
            configs=("synthetic_sft", "seed_sft"),
            splits=("train",),
        ),
        # fields: problem, generated_solution, expected_answer, problem_source
        HubSFTDataset(
            name="nvidia/OpenMathInstruct-2",
            prompt_field="problem",
            response_field="generated_solution",
            configs=(),
            splits=("train", "train_1M", "train_2M", "train_5M"),
        ),
    )
}


def check_sft_source(
    source: str,
    *,
    prompt_field: str,
    response_field: str,
    hub_config: str | None,
    split: str,
) -> None:
    """Check the fields, config and split a recipe gives for a known hub dataset.

    Raises:
        ValueError: a field, config or split the dataset does not have; the message gives the
            settings that work.
    """
    known = KNOWN_SFT_DATASETS.get(source.lower())
    if known is None:
        return
    problems = []
    if prompt_field != known.prompt_field:
        problems.append(f"data.prompt_field is {prompt_field!r}, not {known.prompt_field!r}")
    if response_field != known.response_field:
        problems.append(f"data.response_field is {response_field!r}, not {known.response_field!r}")
    if known.configs and hub_config not in known.configs:
        problems.append(f"data.hub_config is {hub_config!r}, not one of {list(known.configs)}")
    if not known.configs and hub_config is not None:
        problems.append(f"data.hub_config is {hub_config!r} but the dataset has no configs")
    if split not in known.splits:
        problems.append(f"data.split is {split!r}, not one of {list(known.splits)}")
    if problems:
        raise ValueError(f"data.source {known.name}: {'; '.join(problems)}. Use {known.settings()}")


def parse_mix(entry: str) -> tuple[HubSFTDataset, str | None]:
    """``"NAME"`` or ``"NAME:CONFIG"`` of a known dataset -> (dataset, config).

    Raises:
        ValueError: an unknown dataset or config.
    """
    name, _, config = entry.partition(":")
    known = KNOWN_SFT_DATASETS.get(name.lower())
    if known is None:
        raise ValueError(
            f"data.mix entry {entry!r} is not a known SFT dataset; use one of "
            f"{[d.name for d in KNOWN_SFT_DATASETS.values()]} (optionally NAME:CONFIG), or "
            "put other data in data.source"
        )
    if not config:
        return known, known.configs[0] if known.configs else None
    if config not in known.configs:
        raise ValueError(
            f"data.mix entry {entry!r}: {known.name} has no config {config!r}; its configs are "
            f"{list(known.configs)}"
        )
    return known, config


def read_sft_mix(
    entries: Sequence[str],
    *,
    prompt_field: str,
    response_field: str,
    max_records: int | None = None,
) -> list[dict[str, Any]]:
    """Read each ``data.mix`` entry (first split) as ``{prompt_field: ..., response_field: ...}``.

    ``max_records`` applies to each entry. Needs internet and ``datasets``.
    """
    from proseco.data.text import read_records

    out: list[dict[str, Any]] = []
    for entry in entries:
        known, config = parse_mix(entry)
        records = read_records(
            known.name, split=known.splits[0], hub_config=config, max_records=max_records
        )
        out += [
            {prompt_field: r[known.prompt_field], response_field: r[known.response_field]}
            for r in records
        ]
    return out
