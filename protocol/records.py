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
        return {name: _plain(getattr(self, name)) for name in _layout(type(self)).names}

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        """The record from JSON data, or ProtocolError naming the first thing wrong."""
        what = cls.WHAT or cls.__name__
        if not isinstance(data, dict):
            raise ProtocolError(f"{what}: expected an object, got {type(data).__name__}")
        layout = _layout(cls)
        unknown = data.keys() - layout.converters.keys()
        if unknown:
            unknown = sorted(unknown)
            raise ProtocolError(f"{what}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        values = {}
        for name, convert in layout.converters.items():
            if name not in data:
                if name in layout.required:
                    raise ProtocolError(f"{what}: missing field {name!r}")
                continue
            try:
                values[name] = convert(data[name])
            except _Mismatch as mismatch:
                raise ProtocolError(f"{what}.{name}{mismatch.where}: {mismatch.reason}") from None
        record = cls(**values)
        check = getattr(record, "check", None)
        if check is not None:
            check()
        return record


# -- how a record class is read and written, worked out once per class ---------------------------------
# Every message on a worker connection (a job's frames: one header each) goes through `from_dict` on one
# end and `to_dict` on the other; reading the annotations again for each one cost ~20 us a header.

class _Layout(typing.NamedTuple):
    names: tuple[str, ...]  # every field, in order (what `to_dict` writes)
    converters: dict[str, Any]  # field -> its checking converter (init fields)
    required: frozenset[str]  # fields without a default


@lru_cache(maxsize=None)
def _layout(cls: type) -> _Layout:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    return _Layout(
        names=tuple(f.name for f in fields),
        converters={f.name: _converter(hints[f.name]) for f in fields if f.init},
        required=frozenset(f.name for f in fields if f.init and f.default is dataclasses.MISSING
                           and f.default_factory is dataclasses.MISSING),
    )


class _Mismatch(ProtocolError):
    """A value that does not fit its annotation; `where`: the path below the field ("[2].size")."""

    def __init__(self, reason: str, where: str = ""):
        super().__init__(reason)
        self.reason, self.where = reason, where

    def inside(self, step: str) -> _Mismatch:
        return _Mismatch(self.reason, step + self.where)


def _plain(value: Any) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
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


def _refused(annotation: Any, value: Any) -> _Mismatch:
    return _Mismatch(f"expected {_type_name(annotation)}, got {_shown(value)}")


@lru_cache(maxsize=None)
def _converter(annotation: Any):
    """A function that returns a value checked against `annotation` (nested records and tuples built)
    or raises `_Mismatch` (a nested record's own refusal: ProtocolError, naming that record)."""
    if annotation is Any:
        return lambda value: value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union or origin is types.UnionType:
        options = [_converter(option) for option in args]

        def union(value):
            for option in options:
                try:
                    return option(value)
                except ProtocolError:
                    continue
            raise _refused(annotation, value)
        return union
    if origin is Literal:
        def literal(value):
            if value in args and type(value) in {type(a) for a in args}:
                return value
            raise _Mismatch(f"expected one of {', '.join(map(repr, args))}, got {_shown(value)}")
        return literal
    if origin is list or origin is tuple:
        return _sequence_converter(_converter(args[0] if args else Any), tuple if origin is tuple else list)
    if origin is dict:
        return _mapping_converter(_converter(args[1] if len(args) == 2 else Any))
    if isinstance(annotation, type) and issubclass(annotation, Record):
        return annotation.from_dict
    return _scalar_converter(annotation)


def _sequence_converter(item, kind):
    def sequence(value):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"expected a list, got {_shown(value)}")
        converted = []
        for index, entry in enumerate(value):
            try:
                converted.append(item(entry))
            except _Mismatch as mismatch:
                raise mismatch.inside(f"[{index}]") from None
        return kind(converted)
    return sequence


def _mapping_converter(item):
    def mapping(value):
        if not isinstance(value, dict):
            raise _Mismatch(f"expected an object, got {_shown(value)}")
        converted = {}
        for key, entry in value.items():
            try:
                converted[str(key)] = item(entry)
            except _Mismatch as mismatch:
                raise mismatch.inside(f".{key}") from None
        return converted
    return mapping


def _scalar_converter(annotation: Any):
    if annotation is type(None) or annotation is None:
        def none(value):
            if value is None:
                return None
            raise _refused(annotation, value)
        return none
    if annotation is float:
        def real(value):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
            raise _refused(annotation, value)
        return real
    if annotation is int:
        def integer(value):
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise _refused(annotation, value)
        return integer
    if annotation in (str, bool):
        def exact(value):
            if isinstance(value, annotation):
                return value
            raise _refused(annotation, value)
        return exact
    raise TypeError(f"annotation {annotation!r} is not supported by Record")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
