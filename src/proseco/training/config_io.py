"""Recipes: YAML <-> :class:`~proseco.training.config.TrainConfig`, and dotted overrides.

Unknown sections or fields are rejected with the list of valid names, and every value is checked
against its field's type, so a typo fails before any data is read. String values (from YAML or the
command line) are parsed as YAML: ``1e-3``, ``true``, ``[0.9, 0.95]``, ``null``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from proseco.errors import ConfigError
from proseco.training.config import ARCHITECTURE_FIELDS, SECTIONS, ModelSection, TrainConfig

__all__ = [
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "apply_overrides",
    "save_config",
    "list_recipes",
    "config_diff",
    "update_config",
]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int/float/bool/str, Optional, Literal, tuple)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ValueError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {list(choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):  # a nested section, e.g. model.lora
        return value if isinstance(value, tp) else _section_from_dict(where, tp, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[str, ...]: any length
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where} must be a list, got {value!r}")
            return tuple(_coerce(v, args[0], where) for v in value)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    raise TypeError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover


def _section_from_dict(name: str, cls: type, values: Any) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"section {name!r} must be a mapping of fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(f'{name}.{u}' for u in unknown)}; "
            f"valid fields of {name!r}: {', '.join(valid)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{name}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from nested dicts, rejecting unknown sections and fields."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a recipe must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(map(repr, unknown))}; valid sections: "
            f"{', '.join(SECTIONS)}"
        )
    if "data" not in data or not data["data"]:
        raise ConfigError("a recipe needs a 'data' section (at least data.kind and data.source)")
    return TrainConfig(**{k: _section_from_dict(k, SECTIONS[k], data.get(k)) for k in SECTIONS})


def _plain(value: Any) -> Any:
    """Tuples as lists and nested sections as dicts."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return list(value) if isinstance(value, tuple) else value


def config_to_dict(config: TrainConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dicts (tuples as lists), ready for YAML or JSON."""
    return {name: _plain(getattr(config, name)) for name in SECTIONS}


def _recipe_dir() -> Path:
    return Path(str(resources.files("proseco") / "recipes"))


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``proseco/recipes``."""
    return sorted(p.stem for p in _recipe_dir().glob("*.yaml"))


def load_config(recipe: str | Path | Mapping[str, Any] | TrainConfig) -> TrainConfig:
    """Load a recipe: a YAML path, a shipped recipe name, a dict or a :class:`TrainConfig`."""
    if isinstance(recipe, TrainConfig):
        return recipe
    if isinstance(recipe, Mapping):
        return config_from_dict(recipe)
    path = Path(recipe).expanduser()
    if not path.is_file():
        shipped = _recipe_dir() / f"{recipe}.yaml"
        if not shipped.is_file():
            raise ConfigError(
                f"recipe {str(recipe)!r} is neither a file nor a shipped recipe; shipped "
                f"recipes: {', '.join(list_recipes())}"
            )
        path = shipped
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
    try:
        return config_from_dict(data or {})
    except ValueError as err:
        raise ConfigError(f"recipe {path}: {err}") from None


def _parse_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    if text.strip().lower() in ("none", "null", "~"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(
    config: TrainConfig, overrides: Mapping[str, Any] | Sequence[str] | None
) -> TrainConfig:
    """Return ``config`` with dotted overrides applied.

    ``model.pretrained`` given here over a recipe that builds its model from scratch makes it
    a fine-tuning recipe: the recipe's architecture fields (``model.preset``, ``hidden_size``,
    ``num_layers``, ``num_heads``, ``cond_dim``, ``dropout``) describe the network it would have
    built and are cleared (the preset back to its default), and ``data.tokenizer`` becomes the
    pretrained model's own tokenizer when its directory has one (or it is a hub name). An
    architecture field given together with ``model.pretrained``, or over a recipe that has one,
    is an error: the pretrained model has its own.

    Args:
        config: the base config.
        overrides: ``{"optim.lr": 1e-3}`` or CLI tokens ``["--optim.lr", "1e-3",
            "--loss.sc_weight=0"]``. String values are parsed as YAML (``1e-3``, ``true``,
            ``[0.9, 0.95]``, ``null``).
    """
    if not overrides:
        return config
    pairs = _override_pairs(overrides) if not isinstance(overrides, Mapping) else overrides
    pairs = {**pairs, **_fine_tuning_defaults(config, pairs)}
    data = config_to_dict(config)
    for key, raw in pairs.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(
                f"override {key!r} must look like SECTION.FIELD with SECTION one of "
                f"{', '.join(SECTIONS)}"
            )
        head, _, sub = name.partition(".")
        if sub:  # a field of a nested section: --model.lora.r 16
            nested = data[section].get(head)
            nested = dict(nested) if isinstance(nested, Mapping) else {}
            data[section][head] = {**nested, sub: _parse_value(raw)}
        else:
            data[section][name] = _parse_value(raw)
    return config_from_dict(data)


_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json")


def _fine_tuning_defaults(config: TrainConfig, pairs: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides implied by ``model.pretrained`` set over a from-scratch recipe (see
    :func:`apply_overrides`)."""
    pretrained = _parse_value(pairs.get("model.pretrained"))
    if config.model.pretrained is not None or not isinstance(pretrained, str):
        return {}
    explicit = [f"model.{k}" for k in ("preset", *ARCHITECTURE_FIELDS)
                if _parse_value(pairs.get(f"model.{k}")) is not None]  # fmt: skip
    if explicit:
        raise ConfigError(
            f"--model.pretrained is given, so {', '.join(explicit)} cannot change the "
            "architecture (the pretrained model has its own); remove them"
        )
    implied: dict[str, Any] = {f"model.{k}": None for k in ARCHITECTURE_FIELDS}
    implied["model.preset"] = ModelSection.preset  # the default: the recipe's size is dropped too
    if "data.tokenizer" not in pairs and _has_tokenizer(pretrained):
        implied["data.tokenizer"] = pretrained
    return implied


def _has_tokenizer(location: str) -> bool:
    """A local model directory with tokenizer files, or a name that is not a local path (a hub
    model, whose tokenizer comes with it)."""
    from proseco.data.text import resolve_source

    path = Path(resolve_source(location)).expanduser()
    if path.exists():
        return any((path / name).is_file() for name in _TOKENIZER_FILES)
    return not location.startswith((".", "/", "~", "package:")) and location.count("/") <= 1


def _override_pairs(tokens: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    items = list(tokens)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(
                f"unexpected argument {token!r}; overrides look like --section.field VALUE"
            )
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ConfigError(f"override --{key} needs a value")
            value = items[i + 1]
            i += 2
        pairs[key.replace("-", "_")] = value
    return pairs


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write ``config`` as a YAML recipe (re-loadable with :func:`load_config`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    tmp.replace(path)
    return path


def config_diff(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted names of the fields whose values differ between ``a`` and ``b``."""
    da, db = config_to_dict(a), config_to_dict(b)
    return [f"{s}.{k}" for s in da for k in da[s] if da[s][k] != db[s][k]]


def update_config(config: TrainConfig, **sections: Mapping[str, Any]) -> TrainConfig:
    """``dataclasses.replace`` for sections: ``update_config(cfg, train={"max_steps": 5})``."""
    new = {
        name: dataclasses.replace(getattr(config, name), **values)
        for name, values in sections.items()
    }
    return dataclasses.replace(config, **new)
