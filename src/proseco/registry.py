"""Name -> class registries: the one place where strings become strategy objects.

A :class:`Registry` maps short names (``"ancestral"``, ``"remdm"``, ``"argmax"`` ...) to small
frozen dataclasses. Adding a strategy is one class plus one ``@REGISTRY.register("name")`` line; the
command line's choices, ``SamplingConfig``'s JSON form and error messages all read the registry, so
nothing else needs to change::

    @UNMASKING.register("random_order")
    @dataclass(frozen=True)
    class RandomOrder: ...

Objects round-trip through plain dicts: ``registry.to_dict(obj) == {"name": ..., **fields}`` and
``registry.build({"name": ..., **fields})`` gives the object back. Spec strings
``"name:field=value,field=value"`` (as typed on the command line) build objects too, each value
converted to the field's declared type.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from proseco.errors import ConfigError

__all__ = ["Registry", "closest"]

T = TypeVar("T")


def closest(name: str, choices: list[str]) -> str:
    """``" (did you mean 'x'?)"`` for the nearest of ``choices``, or ``""`` if none is close."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Registry(Generic[T]):
    """Names to classes, for one kind of object (``kind`` is used in error messages).

    Args:
        kind: what the registered classes are, e.g. ``"unmasking strategy"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: register ``cls`` under ``name`` and set ``cls.name = name``."""

        def add(cls: type) -> type:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._classes[name] = cls
            cls.name = name
            return cls

        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and interactive sessions)."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._classes)

    def __iter__(self):
        """Iterate over the registered names."""
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, name: str) -> type:
        """The class registered under ``name``; an unknown name lists the known ones."""
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}{closest(str(name), self.names())}; "
                f"choose one of {self.names()}"
            ) from None

    def name_of(self, obj: Any) -> str | None:
        """The registered name of ``obj``'s class, or ``None`` for an unregistered object."""
        for name, cls in self._classes.items():
            if type(obj) is cls:
                return name
        return None

    def build(self, spec: Any, **kwargs: Any) -> T:
        """An object from a name, a spec string, a dict ``{"name": ..., **fields}`` or an object.

        Objects pass through unchanged; ``kwargs`` add fields to a name or spec string.
        """
        if isinstance(spec, str):
            name, fields = parse_spec(spec)
            return self._make(name, {**fields, **kwargs}, from_text=True)
        if isinstance(spec, Mapping):
            fields = dict(spec)
            if "name" not in fields:
                raise ConfigError(
                    f"a {self.kind} given as a dict needs a 'name' key, one of {self.names()}"
                )
            return self._make(fields.pop("name"), {**fields, **kwargs}, from_text=False)
        return spec

    def _make(self, name: str, fields: dict[str, Any], from_text: bool) -> T:
        cls = self.get(name)
        if not dataclasses.is_dataclass(cls):
            if fields:
                raise ConfigError(f"{self.kind} {name!r} takes no settings, got {sorted(fields)}")
            return cls()
        known = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in fields:
            if key not in known:
                raise ConfigError(
                    f"{self.kind} {name!r} has no setting {key!r}{closest(key, list(known))}; "
                    f"its settings are {list(known)}"
                )
        if from_text:
            hints = typing.get_type_hints(cls)
            fields = {k: _convert(v, hints.get(k), f"{name}:{k}") for k, v in fields.items()}
        try:
            return cls(**fields)
        except TypeError as e:
            raise ConfigError(f"cannot build {self.kind} {name!r}: {e}") from None

    def to_dict(self, obj: Any) -> dict[str, Any]:
        """``{"name": registered name, **dataclass fields}`` (JSON-ready for plain fields)."""
        name = self.name_of(obj)
        if name is None:
            raise ConfigError(
                f"{type(obj).__name__} is not a registered {self.kind}, so it cannot be saved; "
                f"register it with @{self.kind.upper().replace(' ', '_')}.register('name')"
            )
        fields = {}
        if dataclasses.is_dataclass(obj):
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        return {"name": name, **fields}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"remdm:strategy=loop,eta=0.02"`` -> ``("remdm", {"strategy": "loop", "eta": "0.02"})``."""
    name, _, rest = spec.partition(":")
    fields: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"cannot read {item!r} in {spec!r}; write settings as name:key=value,key=value"
            )
        fields[key.strip()] = value.strip()
    return name.strip(), fields


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Convert a command-line string to the field's declared type (int, float, bool, str)."""
    if not isinstance(value, str) or hint is None:
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) is not None else (hint,)
    if typing.get_origin(hint) is typing.Literal:
        options = (str,)
    for option in options:
        if option is type(None) and value.lower() in ("none", "null"):
            return None
    for option in options:
        try:
            if option is bool:
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                continue
            if option in (int, float):
                return option(value)
        except ValueError:
            continue
        if option is str:
            return value
    raise ConfigError(f"{where}: cannot read {value!r} as {hint}")
