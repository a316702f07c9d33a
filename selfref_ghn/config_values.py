"""Text and JSON values to the typed fields of :class:`~selfref_ghn.config.Config`, and the
error for a bad one (:class:`ConfigError`, re-exported by :mod:`selfref_ghn.config`).

``--set key=value`` strings and loaded ``config.json`` values are parsed, coerced to the
field's Python type and type-checked here; :mod:`selfref_ghn.config` validates the values.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A user error in a run configuration: one field, its value, and what is allowed."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        # repr: a name read from a file or --set shows its control characters escaped
        super().__init__(f"invalid config field {str(field)!r} = {value!r}: {allowed}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(name: str, value: Any, tp: Any) -> None:
    origin = typing.get_origin(tp)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        ok = isinstance(value, tuple)
        args = typing.get_args(tp)
        if ok and args and args[-1] is Ellipsis and args[0] is int:
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        elif ok and args and args[-1] is Ellipsis and typing.get_origin(args[0]) is tuple:
            inner = typing.get_args(args[0])
            if inner and inner[0] is int:
                ok = all(
                    isinstance(v, tuple)
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                    for v in value
                )
    else:
        ok = True
    if not ok:
        raise ConfigError(name, value, f"expected {_type_name(tp)}")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """JSON values -> the field's Python type (lists to tuples, ints to floats)."""
    origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple:
        if name in ("env_kwargs", "baseline_params", "switch_options"):
            if isinstance(value, Mapping):
                return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
            if isinstance(value, (list, tuple)):
                try:
                    return tuple((str(k), _frozen(v)) for k, v in value)
                except (TypeError, ValueError):
                    pass
            raise ConfigError(name, value, "expected a mapping of option names to values")
        if isinstance(value, (list, tuple)):
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)
        raise ConfigError(name, value, f"expected a list ({_type_name(tp)})")
    return value


def _frozen(value: Any) -> Any:
    """An option value as a config holds it: lists (from JSON) as tuples, at any depth, so a
    config read back from ``config.json`` equals the one written."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        low = raw.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        return raw
