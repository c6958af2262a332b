"""Checking values that come from outside before anything is built from them.

Model options arrive from ``--set`` (a dict of name -> int/float/bool/str) and from
checkpoint files (anything ``torch.load(weights_only=True)`` can hold); both are checked
here against the config dataclass's field types and a table of bounds, so that a bad value
is one line naming the field, never a traceback from deep inside a module's constructor
or a 20 GB allocation.

The field's annotation gives its type: ``int``, ``float``, ``bool``, ``str``, ``list[int]``
or ``str | None``. Integers are accepted for float fields (``--set alpha_c=1``); floats must
be finite; a bool is never taken for an int.
"""

from __future__ import annotations

import math
import numbers
import typing
from dataclasses import MISSING, dataclass, fields

from .errors import AttendError

MAX_DIM = 65536  # any layer width, embedding or feature dimension
MAX_VOCAB = 1_000_000  # words of a vocabulary, answers of an answer list
MAX_GRID = 64  # cells per side of the feature grid (2048 px / 32)


@dataclass(frozen=True)
class Bound:
    """What a field may hold beyond its type: ``low``..``high`` inclusive (numbers), one of
    ``choices`` (strings), a multiple of ``multiple_of`` (ints), ``length`` items (lists,
    each item within low..high)."""

    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    multiple_of: int = 1
    length: int | None = None


class Invalid(ValueError):
    """A value that does not fit its field; the message says what was expected."""


class Mismatch(AttendError):
    """A dict of options with an unknown or a missing field: written by another version."""


def field_kinds(cls) -> dict[str, str]:
    """name -> "int" | "float" | "bool" | "str" | "list[int]" | "str|None" for a config dataclass."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        if hint in (int, float, bool, str):
            kinds[f.name] = hint.__name__
        elif typing.get_origin(hint) is list and args == (int,):
            kinds[f.name] = "list[int]"
        elif set(args) == {str, type(None)}:
            kinds[f.name] = "str|None"
        else:  # a new kind of field: teach this module about it
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported field type {hint}")
    return kinds


def expected(kind: str, bound: Bound | None) -> str:
    """What a field takes, in words: "an integer from 1 to 65536", "one of lstm, gru, rnn"."""
    bound = bound or Bound()
    if kind == "bool":
        return "true or false"
    if kind in ("str", "str|None"):
        text = "one of " + ", ".join(map(str, bound.choices)) if bound.choices else "a string"
        return text + (" or none" if kind == "str|None" else "")
    names = {"int": "an integer", "float": "a finite number", "list[int]": f"a list of {bound.length or ''} integers"}
    what = names[kind].replace("of  ", "of ")
    if bound.multiple_of > 1:
        what += f", a multiple of {bound.multiple_of},"
    if bound.low is not None and bound.high is not None:
        what += f" from {_number(bound.low)} to {_number(bound.high)}"
    elif bound.low is not None:
        what += f" of at least {_number(bound.low)}"
    elif bound.high is not None:
        what += f" of at most {_number(bound.high)}"
    return what


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _in_range(value, bound: Bound) -> bool:
    return (bound.low is None or value >= bound.low) and (bound.high is None or value <= bound.high)


def convert(value, kind: str, bound: Bound | None = None):
    """``value`` as the field's type (ints widened to float for float fields), or ``Invalid``."""
    bound = bound or Bound()
    problem = Invalid(f"expected {expected(kind, bound)}")
    if kind == "bool":
        if not isinstance(value, bool):
            raise problem
        return value
    if kind == "int":
        if not _is_int(value) or not _in_range(value, bound) or value % bound.multiple_of:
            raise problem
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise problem
        value = float(value)
        if not math.isfinite(value) or not _in_range(value, bound):
            raise problem
        return value
    if kind in ("str", "str|None"):
        if value is None and kind == "str|None":
            return None
        if not isinstance(value, str) or len(value) > 4096 or (bound.choices and value not in bound.choices):
            raise problem
        return value
    if kind == "list[int]":
        if not isinstance(value, (list, tuple)) or (bound.length is not None and len(value) != bound.length):
            raise problem
        if not all(_is_int(v) and _in_range(v, bound) for v in value):
            raise problem
        return [int(v) for v in value]
    raise TypeError(f"unknown field kind {kind!r}")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_options(cls, options: dict, bounds: dict[str, Bound], derived: tuple[str, ...] = ()) -> dict:
    """``--set`` model options -> the same dict with checked, converted values.

    Args:
        derived: fields set from the data or the features (vocabulary size, grid ...), which
            ``--set`` may not change.
    Raises:
        AttendError: one line naming the option: unknown, derived or a bad value.
    """
    kinds = field_kinds(cls)
    unknown = sorted(set(options) - set(kinds))
    if unknown:
        known = ", ".join(sorted(set(kinds) - set(derived)))
        raise AttendError(f"unknown model option(s): {', '.join(unknown)} (known: {known})")
    fixed = sorted(set(options) & set(derived))
    if fixed:
        raise AttendError(f"--set {fixed[0]}: set from the data and the features, it cannot be changed")
    checked = {}
    for name, value in options.items():
        try:
            checked[name] = convert(value, kinds[name], bounds.get(name))
        except Invalid as e:
            raise AttendError(f"--set {name}={_shown(value)}: {e}") from None
    return checked


def check_fields(cls, values, bounds: dict[str, Bound], where: str, defaults: bool = True) -> dict:
    """A dict read from a file (a checkpoint's ``config`` or ``encoder``) -> checked values for
    ``cls(**...)``. ``where``: how the message names the dict, e.g. "PATH: config".

    Missing fields that have a default get it when ``defaults``; missing fields without one,
    unknown fields raise ``Mismatch``, bad values ``AttendError``, naming the field.
    """
    if not isinstance(values, dict):
        raise AttendError(f"{where}: expected a dict of options, found {type(values).__name__}")
    kinds = field_kinds(cls)
    unknown = sorted(str(k) for k in set(values) - set(kinds))
    if unknown:
        raise Mismatch(f"{where}: unknown option {unknown[0]!r}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in (required if defaults else kinds) if name not in values]
    if missing:
        raise Mismatch(f"{where}: option {missing[0]!r} is missing")
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = convert(value, kinds[name], bounds.get(name))
        except Invalid as e:
            raise AttendError(f"{where}.{name} is {_shown(value)} ({e})") from None
    return checked
