"""Loading a config: TOML -> the schema's dataclasses, every problem collected and named.

:func:`load_config` reads a TOML file, rejects unknown keys, wrong types and out-of-range
values, then checks the relations between sections (:mod:`.relations`). All problems are
reported together in one :class:`~bin_agent.errors.ConfigError`, each naming its key and the
fix. Checks that open files (the model, password and TLS files, replay images) are
:mod:`bin_agent.preflight`'s; callers that need them pass ``extra_checks`` (the CLI's
``load_or_exit`` does), so a file problem and a relation problem are still reported at once.

Relative paths are resolved against the directory of the config file, so a config and the
files it names can be moved together.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from .relations import check_relations
from .schema import Check, Config, control_character_problem, quoted

log = logging.getLogger(__name__)

ExtraChecks = Callable[[Config, list[str]], "list[str] | None"]
"""Checks that open files (preflight's): add their problems, return the model's labels (None: not read)."""

# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, *, extra_checks: ExtraChecks | None = None) -> Config:
    """Read, type-check and cross-check a TOML config file.

    :param extra_checks: checks that open files (see :mod:`bin_agent.preflight`).
    :raises ConfigError: with every problem found.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(["no such file; create one from config/bin-agent.toml"], path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the file ({exc})"], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], path) from None
    return config_from_dict(raw, base_dir=path.parent, source=path, extra_checks=extra_checks)


def config_from_dict(
    raw: dict[str, Any],
    *,
    base_dir: Path = Path("."),
    source: Path | str | None = None,
    extra_checks: ExtraChecks | None = None,
) -> Config:
    """Build a :class:`Config` from parsed TOML (see :func:`load_config`)."""
    problems: list[str] = []
    config = _build(Config, raw, "", problems, base_dir)
    config.source_path = Path(source) if source else None
    # The files and the relations are checked even when some values were refused, so that one
    # run shows every problem. A refused value's default stands in for it, so a later problem
    # that names a refused key would be about that default: it is left out.
    refused = [problem.split(": ", 1)[0] for problem in problems]
    later: list[str] = []
    labels = extra_checks(config, later) if extra_checks is not None else None
    check_relations(config, later, labels)
    problems += [problem for problem in later if not any(_names(problem, key) for key in refused)]
    if problems:
        raise ConfigError(problems, source)
    return config


def _names(problem: str, key: str) -> bool:
    """Whether ``problem`` mentions ``key`` or a key inside it (``camera`` in ``camera.fps``)."""
    return re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", problem) is not None


def _build(cls: type, raw: Any, where: str, problems: list[str], base_dir: Path) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"{where or 'top level'}: expected a table, got {_kind(raw)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = _key_path(where, key)
        if key_path in _REFUSED_KEYS:
            problems.append(f"{key_path}: {_REFUSED_KEYS[key_path]}")
            continue
        if key_path in _RETIRED_KEYS:
            log.warning("%s: %s", key_path, _RETIRED_KEYS[key_path])
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            problems.append(f"{key_path}: unknown key{hint}")
            continue
        was_none = fields[key].metadata.get("was_none")
        if was_none is not None and type(value) is int and value == was_none:
            # An upgrade keeps the installed config: an old "none" must not stop the bin.
            log.warning("%s: %d meant none in earlier releases; read as unset, delete this line", key_path, value)
            continue
        old_default = fields[key].metadata.get("old_default")
        if old_default is not None and type(value) is type(old_default[0]) and value == old_default[0]:
            log.warning("%s = %r: %s", key_path, value, old_default[1])
        converted = _convert(hints[key], value, key_path, problems, base_dir)
        if converted is not _INVALID and _check_value(fields[key], converted, key_path, problems):
            values[key] = converted
    for name, spec in fields.items():
        if spec.metadata.get("required") and name not in raw:
            problems.append(f"{_key_path(where, name)}: required (no default)")
    return cls(**values)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key_path(where: str, key: str) -> str:
    """``where.key``, the key quoted as TOML would (one line) unless it is a bare key."""
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{where}.{shown}" if where else shown


_INVALID = object()

_REFUSED_KEYS = {
    "mqtt.password": "a password never goes in the config file (it is copied, backed up and "
    "shown in check-config output); put it in a file readable only by the agent and set "
    "password_file, or set password_env to the name of an environment variable holding it",
}
"""Keys that are refused with their own explanation instead of 'unknown key'."""

_RETIRED_KEYS = {
    "learning.holdout_share": "no longer used: bin-agent learn judges every label by a head refitted "
    "without it (learning.verdict_blocks) instead of holding the newest out; delete this line",
}
"""Keys of earlier releases that an installed config may still have (the installer keeps
the config): ignored with a warning naming them, so an upgrade does not stop the bin."""


def _convert(hint: Any, value: Any, where: str, problems: list[str], base_dir: Path) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where, problems, base_dir)
    if origin is Literal:
        choices = typing.get_args(hint)
        # Compared with their type: true == 1 in Python, but `views = true` is a mistake.
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            shown = (
                quoted(value)
                if isinstance(value, str)
                else (repr(value) if type(value) in (int, float) else _kind(value))
            )
            problems.append(f"{where}: {shown} is not one of {', '.join(repr(c) for c in choices)}")
            return _INVALID
        return value
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, got {_kind(value)}")
            return _INVALID
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected a whole number, got {_kind(value)}")
            return _INVALID
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {_kind(value)}")
            return _INVALID
        if not math.isfinite(value):
            problems.append(f"{where}: expected a finite number, got {value}")
            return _INVALID
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {_kind(value)}")
            return _INVALID
        return _text(value, where, problems)
    if hint is Path:
        if not isinstance(value, str) or not value:
            problems.append(f"{where}: expected a path string, got {_kind(value)}")
            return _INVALID
        if _text(value, where, problems) is _INVALID:
            return _INVALID
        path = Path(value).expanduser()
        # normpath, not resolve(): tidy "config/../x" for messages, keep symlinks as given.
        return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_kind(value)}")
            return _INVALID
        elements = [_convert(item_hint, v, f"{where}[{i}]", problems, base_dir) for i, v in enumerate(value)]
        return _INVALID if any(e is _INVALID for e in elements) else elements
    if origin is dict:
        _, item_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a table, got {_kind(value)}")
            return _INVALID
        entries = {}
        for name, item in value.items():
            name_path = _key_path(where, name)
            entries[name] = _convert(item_hint, item, name_path, problems, base_dir)
            if _text(name, name_path, problems) is _INVALID:
                entries[name] = _INVALID
        return _INVALID if any(v is _INVALID for v in entries.values()) else entries
    if origin in (types.UnionType, typing.Union):
        # "X | None": unset by default. TOML has no null, so a value given is always an X.
        kinds = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(kinds) != 1:
            raise TypeError(f"unsupported union in schema at {where}")
        return _convert(kinds[0], value, where, problems, base_dir)
    raise TypeError(f"unsupported type {hint!r} in schema at {where}")


def _text(value: str, where: str, problems: list[str]) -> Any:
    problem = control_character_problem(value)
    if problem:
        problems.append(f"{where}: {problem}")
        return _INVALID
    return value


def _check_value(spec: dataclasses.Field, value: Any, where: str, problems: list[str]) -> bool:
    """The field's range and rule; False (and a problem named ``where``) if one fails."""
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and value < low:
            problems.append(f"{where}: {value} is below the minimum {low}")
            return False
        if high is not None and value > high:
            problems.append(f"{where}: {value} is above the maximum {high}")
            return False
    check: Check | None = spec.metadata.get("check")
    problem = check(value) if check is not None else None
    if problem:
        problems.append(f"{where}: {problem}")
        return False
    return True


def _kind(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "a whole number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"[:80]
