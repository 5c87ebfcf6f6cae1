"""Typed records: the base every message, manifest and file record of the contract is built on.

A record is a standard-library dataclass that derives from `Record`. Its annotations are the
contract: `to_dict()` writes exactly those fields, and `from_dict()` refuses, in one line, a field
it does not know, a required field that is missing, or a value of the wrong type. Writer and reader
use the same class, so a field cannot be written that the reader does not know.

Supported annotations: str, int, float (an int is accepted), bool, None, `X | None`, `list[X]`,
`tuple[X, ...]`, `dict[str, X]`, `Any` (any JSON value, unchecked), `Literal[...]` and nested
records. A bool is never accepted as an int or a float.

Written by hand, not with pydantic or attrs: Blender's Python has the standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import lru_cache
from typing import Any, ClassVar, Literal, TypeVar, Union


class ProtocolError(ValueError):
    """A message, record or job specification that cannot be accepted, as one line."""


R = TypeVar("R", bound="Record")


class Record:
    """Base of the contract's dataclasses: validated `to_dict` / `from_dict`.

    Subclasses are `@dataclass(frozen=True)` (or plain `@dataclass`) classes. `WHAT` names the
    record in error lines ("manifest", "progress event").
    """

    WHAT: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data; nested records become dicts."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        """The record from JSON data, or ProtocolError naming the first thing wrong."""
        what = cls.WHAT or cls.__name__
        if not isinstance(data, dict):
            raise ProtocolError(f"{what}: expected an object, got {type(data).__name__}")
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ProtocolError(f"{what}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        values = {}
        for name, f in fields.items():
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ProtocolError(f"{what}: missing field {name!r}")
                continue
            values[name] = _convert(hints[name], data[name], f"{what}.{name}")
        record = cls(**values)
        check = getattr(record, "check", None)
        if check is not None:
            check()
        return record


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _convert(annotation: Any, value: Any, where: str) -> Any:
    """`value` checked against `annotation` (nested records and tuples built), or ProtocolError."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union or origin is types.UnionType:
        for option in args:
            try:
                return _convert(option, value, where)
            except ProtocolError:
                continue
        raise ProtocolError(f"{where}: expected {_type_name(annotation)}, got {_shown(value)}")
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ProtocolError(f"{where}: expected one of {', '.join(map(repr, args))}, got {_shown(value)}")
    if origin is list or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ProtocolError(f"{where}: expected a list, got {_shown(value)}")
        item_type = args[0] if args else Any
        items = [_convert(item_type, item, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object, got {_shown(value)}")
        value_type = args[1] if len(args) == 2 else Any
        return {str(key): _convert(value_type, item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(annotation, type) and issubclass(annotation, Record):
        return annotation.from_dict(value)
    if annotation is type(None) or annotation is None:
        if value is None:
            return None
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation in (str, bool):
        if isinstance(value, annotation):
            return value
    else:
        raise TypeError(f"{where}: annotation {annotation!r} is not supported by Record")
    raise ProtocolError(f"{where}: expected {_type_name(annotation)}, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
