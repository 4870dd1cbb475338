"""Checks of option values against the types that declare them.

An option with a fixed set of values is declared once, as a ``Literal`` type next to the
function or class that takes it. The CLI (jsonargparse) already refuses other values;
:func:`check_choice` gives Python callers the same refusal, with the valid values read
from the type itself, so the list is never written twice. :func:`parse_record` builds a
typed dataclass from a YAML mapping (the ``h2mv compare`` spec) the same way: the
dataclass is the one declaration of its keys, their types and defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def choices(kind: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` type (or any iterable of values), in declaration order."""
    values = get_args(kind)
    return tuple(values) if values else tuple(kind)


def alternatives(values: Iterable[Any]) -> str:
    """``a, b or c``: the values as a sentence names them."""
    names = [str(v) for v in values]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_choice(name: str, value: Any, kind: Any, error: type[Exception] = ValueError
                 ) -> Any:
    """``value`` if it is one of ``kind``'s values; else an error naming the option.

    Args:
        name: the option, as the user writes it (``physics``, ``chunk_mode`` …).
        value: the value given.
        kind: a ``Literal`` type (or an iterable of the valid values).
        error: the exception raised (a ``StoreError`` for a store's mapping, say).
    """
    valid = choices(kind)
    if value not in valid:
        raise error(f"{name}: expected {alternatives(valid)}, found {value!r}")
    return value


def parse_record(cls: type[T], raw: Any, where: str) -> T:
    """A dataclass ``cls`` from a mapping (a YAML spec), every field checked by its type.

    Unknown keys, missing required keys and values of the wrong type (``Literal`` values,
    lists, mappings, nested dataclasses) are refused with the key path, the expected and
    the found. ``where`` names the mapping (``spec.yaml: variants[0]``).
    """
    names = [f.name for f in fields(cls)]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping with keys among {', '.join(names)}, "
                         f"found {raw!r}")
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ValueError(f"{where}: expected keys among {', '.join(names)}, found "
                         f"{', '.join(map(str, unknown))}")
    required = [f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING]
    if any(k not in raw for k in required):
        optional = [n for n in names if n not in required]
        raise ValueError(f"{where}: expected keys {', '.join(required)} (and optionally "
                         f"{', '.join(optional)}), found {dict(raw)!r}")
    hints = get_type_hints(cls)
    return cls(**{k: _value(hints[k], v, f"{where}: {k}") for k, v in raw.items()})


def _value(kind: Any, value: Any, where: str) -> Any:
    """``value`` checked (and converted: Path, nested records) against the type ``kind``."""
    origin, args = get_origin(kind), get_args(kind)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {', '.join(map(str, args))}, found "
                             f"{value!r}")
        return value
    if origin in (Union, UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        arms = [a for a in args if a is not type(None)]
        # The form of the value's own shape (a list, a mapping) reports its error: "expected
        # keys among …" says more than "expected one of the forms …".
        shaped = [a for a in arms if (get_origin(a) is list) == isinstance(value, list)
                  and (is_dataclass(a) or get_origin(a) is dict or a is dict)
                  == isinstance(value, Mapping)]
        for inner in (shaped if len(shaped) == 1 else arms):
            try:
                return _value(inner, value, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else
                         f"{where}: expected one of the forms {kind}, found {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, found {value!r}")
        return [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or kind is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping of settings, found {value!r}")
        if len(args) == 2 and is_dataclass(args[1]):
            return {k: parse_record(args[1], v, f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if is_dataclass(kind):
        return parse_record(kind, value, where)
    if kind is Path:
        return Path(value)
    if kind in (int, str) and not (isinstance(value, kind) and not isinstance(value, bool)):
        expected = "an integer" if kind is int else "a string"
        raise ValueError(f"{where}: expected {expected}, found {value!r}")
    return value
