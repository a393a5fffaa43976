"""Every config key: the lookup of a dotted key's field, the closest valid key of a misspelled
one, and the check of one value against its field's type, choices and range (one line naming
the key and what is allowed). `jaxsim.config.build` checks whole sections with these.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any

from jaxsim.config.schema import CORE_SECTIONS, DEFAULT_TASK, SECTION_NAMES
from jaxsim.errors import ConfigError

INT32_MAX = 2**31 - 1   # every int field becomes an int32 array (a step, a count, a size)


def _testbed(name: str):
    from jaxsim import testbeds  # the registry imports testbed packages, which import config
    return testbeds.get(name)


def _classes(task_cls: type) -> dict[str, type]:
    return {"task": task_cls, **CORE_SECTIONS}


def all_keys(task_cls: type | None = None) -> list[str]:
    """Every dotted key of a config whose task section is `task_cls` (default: the default
    testbed's)."""
    task_cls = task_cls or _testbed(DEFAULT_TASK).config
    return [f"{s}.{f.name}" for s, cls in _classes(task_cls).items()
            for f in dataclasses.fields(cls)]


def field_info(key: str, task_cls: type | None = None) -> dataclasses.Field:
    section, name = key.split(".", 1)
    cls = (task_cls or _testbed(DEFAULT_TASK).config) if section == "task" else CORE_SECTIONS[section]
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_key(key: str, options: list[str], what: str = "key", where: str = "") -> ConfigError:
    return ConfigError(f"unknown {what} '{key}'{where}{_suggest(key, options)}; "
                       f"valid: {', '.join(options)}")


def _unknown_dotted(key: str, options: list[str], what: str = "key", where: str = "",
                    sections: tuple[str, ...] = SECTION_NAMES) -> ConfigError:
    """An unknown dotted key: a bad section lists the sections (suggesting the closest), a bad
    name in a known section lists that section's keys only."""
    section = key.split(".", 1)[0]
    if section not in sections or "." not in key:
        return ConfigError(f"unknown {what} '{key}': no section '{section}'"
                           f"{_suggest(section, list(sections))}; sections: {', '.join(sections)}")
    return unknown_key(key, [k for k in options if k.split(".", 1)[0] == section], what, where)


def coerce(key: str, value: Any, where: str | None = None, task_cls: type | None = None) -> Any:
    """Check `value` against the type and range of field `key`; returns the typed value."""
    f = field_info(key, task_cls)
    where = where or key
    if key == "sweep.save_steps":
        if value is None:
            return None
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= INT32_MAX
                for v in value):
            raise ConfigError(f"{where} must be null or a list of positive integers "
                              f"(<= 2**31 - 1 = {INT32_MAX}), got {value!r}")
        return tuple(sorted(set(value)))
    if key in ("sweep.axes", "sweep.grids"):
        return value
    if key == "sweep.memory_budget":
        return _check_budget(value, where)
    return check_value(f, value, where)


def check_value(f: dataclasses.Field, value: Any, where: str) -> Any:
    """Check `value` against the type, choices and range of a `field(...)`-declared dataclass
    field (`where` names it in the error); returns the typed value."""
    kind = type(f.default) if f.default is not None else None
    meta = {"choices": None, "min": None, "max": None, "min_exclusive": False, **f.metadata}
    if kind is tuple:    # a list of integers (model.channels), each in the field's range
        return _check_int_list(value, meta, where)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise ConfigError(f"{where} must fit an int32 (<= 2**31 - 1 = {INT32_MAX}), "
                              f"got {value!r}")
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        value = float(value)
    elif kind is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(meta['choices'])}; got {value!r}")
    lo, hi = meta["min"], meta["max"]
    if lo is not None and (value < lo or (meta["min_exclusive"] and value == lo)):
        rel = ">" if meta["min_exclusive"] else ">="
        raise ConfigError(f"{where} must be {rel} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where} must be <= {hi}, got {value!r}")
    return value


def _check_int_list(value: Any, meta: dict, where: str) -> tuple:
    """A non-empty list of integers, each within [min, max], as a tuple (hashable: static)."""
    lo, hi = meta["min"], meta["max"]
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or any((lo is not None and v < lo) or (hi is not None and v > hi)
                   or abs(v) > INT32_MAX for v in value)):
        bounds = f" each >= {lo}" if lo is not None else ""
        bounds += f" and <= {hi}" if hi is not None else ""
        raise ConfigError(f"{where} must be a non-empty list of integers{bounds}, got {value!r}")
    return tuple(value)


def _check_budget(value: Any, where: str) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where} must be a positive number of GiB, got {value!r}")
        return float(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("auto", "none") or (text and re.fullmatch(r"\d+(\.\d+)?\s*%", text)
                                    and 0 < float(text.rstrip("% ")) <= 100):
        return text
    raise ConfigError(f"{where} must be 'auto', 'none', a positive number of GiB or a share "
                      f"like '25%' (at most 100%), got {value!r}")


