"""Training configs: recipes, strict fields, dotted overrides and the ``proseco train`` arguments."""

from __future__ import annotations

import argparse

import pytest
import yaml

from proseco.commands.train import add_arguments, split_overrides
from proseco.training.config import TrainConfig
from proseco.training.config_io import (
    apply_overrides,
    config_diff,
    config_from_dict,
    config_to_dict,
    list_recipes,
    load_config,
    save_config,
)

SHIPPED = {
    "text-cpu-tiny",
    "qm9-mdlm-cpu",
    "qm9-mdlm-ring-cpu",
    "qm9-proseco-cpu",
    "qm9-proseco-ring-cpu",
    "qm9-proseco-small-gpu",
    "sft-cpu-tiny",
}


def test_every_shipped_recipe_loads_and_round_trips_through_yaml(tmp_path):
    assert set(list_recipes()) >= SHIPPED
    for name in list_recipes():
        config = load_config(name)
        path = save_config(config, tmp_path / f"{name}.yaml")
        assert load_config(path) == config


@pytest.mark.parametrize("suffix", ["cpu", "ring-cpu"])
def test_qm9_cpu_recipes_differ_only_in_the_corrector_weight(suffix):
    mdlm, proseco = load_config(f"qm9-mdlm-{suffix}"), load_config(f"qm9-proseco-{suffix}")
    assert config_diff(mdlm, proseco) == ["loss.sc_weight"]
    assert (mdlm.loss.sc_weight, proseco.loss.sc_weight) == (0.0, 1.0)


def test_paper_gpu_recipe_has_the_paper_settings():
    c = load_config("qm9-proseco-small-gpu")
    assert (c.model.preset, c.train.global_batch_size, c.train.max_steps) == ("small", 2048, 25000)
    assert (c.loss.t_min, c.loss.cond_dropout, c.optim.lr_schedule) == (0.1, 0.1, "cosine")
    assert c.data.num_classes == 2 and c.data.train_on_padding


def test_unknown_field_is_rejected_with_the_valid_names():
    with pytest.raises(
        ValueError, match=r"train\.max_stepz.*valid fields of 'train': seed, max_steps"
    ):
        config_from_dict({"data": {"kind": "qm9"}, "train": {"max_stepz": 3}})


def test_unknown_section_is_rejected_with_the_valid_sections():
    with pytest.raises(
        ValueError, match="unknown section.*'optimizer'.*model, data, loss, optim, train"
    ):
        config_from_dict({"data": {"kind": "qm9"}, "optimizer": {}})


def test_recipe_file_with_unknown_field_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"kind": "qm9", "colour": "red"}}))
    with pytest.raises(ValueError, match=r"bad\.yaml.*data\.colour"):
        load_config(path)


def test_unknown_recipe_name_lists_shipped_recipes():
    with pytest.raises(ValueError, match="shipped recipes: .*text-cpu-tiny"):
        load_config("no-such-recipe")


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("train", {"max_steps": "ten"}, r"train\.max_steps must be an integer"),
        ("train", {"progress_bar": "yes"}, r"train\.progress_bar must be true or false"),
        ("optim", {"lr_schedule": "linear"}, r"optim\.lr_schedule must be one of"),
        ("optim", {"betas": [0.9]}, r"optim\.betas must be a list of 2"),
        ("loss", {"proposal": "greedy"}, "proposal must be one of"),
        ("loss", {"cond_dropout": 1.5}, r"loss\.cond_dropout must lie in \[0, 1\]"),
        ("data", {"layout": "packed"}, r"data\.layout must be one of"),
    ],
)
def test_bad_values_are_rejected(section, values, message):
    data = {"data": {"kind": "qm9"}, section: values}
    if section == "data":
        data["data"] = {"kind": "qm9", **values}
    with pytest.raises(ValueError, match=message):
        config_from_dict(data)


def test_text_data_requires_a_source():
    with pytest.raises(ValueError, match=r"data\.source is required"):
        config_from_dict({"data": {"kind": "text"}})


def test_overrides_parse_yaml_values_and_equals_syntax():
    base = load_config("text-cpu-tiny")
    new = apply_overrides(
        base,
        ["--optim.lr", "1e-2", "--loss.sc_weight=0", "--optim.betas", "[0.8, 0.9]",
         "--train.micro_batch_size", "null", "--train.progress_bar", "false"],
    )  # fmt: skip
    assert new.optim.lr == 0.01 and new.loss.sc_weight == 0.0
    assert new.optim.betas == (0.8, 0.9) and new.train.micro_batch_size is None
    assert new.train.progress_bar is False
    assert sorted(config_diff(base, new)) == [
        "loss.sc_weight", "optim.betas", "optim.lr", "train.progress_bar",
    ]  # fmt: skip


def test_override_of_unknown_field_or_section_fails():
    base = load_config("text-cpu-tiny")
    with pytest.raises(ValueError, match=r"optim\.learning_rate"):
        apply_overrides(base, {"optim.learning_rate": 1})
    with pytest.raises(ValueError, match="SECTION.FIELD"):
        apply_overrides(base, ["--lr", "1"])
    with pytest.raises(ValueError, match="needs a value"):
        apply_overrides(base, ["--optim.lr"])


def test_loss_section_carries_every_loss_config_field():
    config = load_config("qm9-proseco-cpu")
    loss_config = config.loss.loss_config()
    assert loss_config.t_min == 0.1 and loss_config.sc_weight == 1.0
    assert set(config_to_dict(config)["loss"]) >= {"proposal", "corrector_input", "start_step"}


def test_default_config_is_a_valid_qm9_run():
    assert TrainConfig().data.kind == "qm9"


def _parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_arguments(sub.add_parser("train"))
    return parser.parse_args(["train", *argv])


@pytest.mark.parametrize(
    "argv",
    [
        ["r.yaml", "--optim.lr", "1e-3", "--output-dir", "d", "--resume"],
        ["--output-dir", "d", "r.yaml", "--resume", "--optim.lr=1e-3"],
        ["--resume", "--output-dir", "d", "r.yaml", "--optim.lr", "1e-3"],
    ],
)
def test_cli_accepts_flags_before_or_after_the_overrides(argv):
    args = _parse(argv)
    flags, tokens = split_overrides(args.overrides)
    output_dir = flags.get("output_dir", args.output_dir)
    resume = flags.get("resume", args.resume)
    assert (args.recipe, output_dir, resume) == ("r.yaml", "d", True)
    assert apply_overrides(load_config("text-cpu-tiny"), tokens).optim.lr == 1e-3


def test_proseco_train_prints_the_resolved_config_and_rejects_bad_input(capsys, tmp_path):
    from proseco.commands import main

    assert main(["train", "qm9-proseco-cpu", "--print-config", "--optim.lr", "5e-4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 5e-4 and printed["loss"]["sc_weight"] == 1.0
    out_dir = tmp_path / "run"
    assert main(["train", "qm9-proseco-cpu", "--optim.lrr", "1", "--output-dir", str(out_dir)]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert main(["train", "qm9-proseco-cpu"]) == 2
    assert "--output-dir DIR is required" in capsys.readouterr().err
    assert not out_dir.exists()
