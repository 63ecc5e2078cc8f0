"""Paths into a state: `results.rows.17`, `jobs[3].callback`, `config["a.b"]`.

A path is dot-separated keys; a key that is all digits indexes a list (or tuple),
or names the int key of a dict. Keys holding dots, brackets or quotes, or digit
strings meant as text, are written in brackets as JSON strings: `a["x.y"]`,
`a["17"]`. `[3]` indexes explicitly. The empty path is the whole state.
"""

from __future__ import annotations

import json
from typing import Any

PathKey = str | int


class PathError(ValueError):
    """A path that does not parse."""


def parse(path: str) -> list[PathKey]:
    """Split a path into keys.

    Example:
        >>> parse('jobs[3].meta["a.b"].0')
        ['jobs', 3, 'meta', 'a.b', 0]
    """
    keys: list[PathKey] = []
    i, n = 0, len(path)
    expect_key = True
    while i < n:
        ch = path[i]
        if ch == "[":
            end = _bracket_end(path, i)
            inner = path[i + 1 : end]
            if inner.startswith('"'):
                try:
                    keys.append(json.loads(inner))
                except json.JSONDecodeError as exc:
                    raise PathError(f"bad quoted key {inner} in path {path!r}") from exc
            elif inner.lstrip("-").isdigit():
                keys.append(int(inner))
            else:
                raise PathError(f'bad index [{inner}] in path {path!r}: use [3] or ["key"]')
            i = end + 1
            expect_key = False
        elif ch == ".":
            if expect_key:
                raise PathError(f"empty key in path {path!r}")
            i += 1
            expect_key = True
        else:
            if not expect_key:
                raise PathError(f"expected '.' or '[' at position {i} of path {path!r}")
            end = i
            while end < n and path[end] not in ".[":
                end += 1
            token = path[i:end]
            keys.append(int(token) if token.isdigit() else token)
            i = end
            expect_key = False
    if expect_key and keys:
        raise PathError(f"path {path!r} ends with '.'")
    return keys


def _bracket_end(path: str, start: int) -> int:
    i = start + 1
    if i < len(path) and path[i] == '"':
        i += 1
        while i < len(path) and path[i] != '"':
            i += 2 if path[i] == "\\" else 1
        i += 1
    end = path.find("]", i)
    if end < 0:
        raise PathError(f"unclosed '[' in path {path!r}")
    return end


def format_path(keys: list[PathKey]) -> str:
    """The canonical text of a key list (the inverse of `parse`)."""
    out = ""
    for key in keys:
        if isinstance(key, int):
            out += f"[{key}]"
        elif key and not key.isdigit() and all(c not in key for c in '.[]"'):
            out += f".{key}" if out else key
        else:
            out += f"[{json.dumps(key)}]"
    return out


def lookup(value: Any, path: str | list[PathKey]) -> Any:
    """The value at `path` inside `value`.

    Raises:
        KeyError: a key or index on the path does not exist; the message names the
            part of the path that was found.
    """
    keys = parse(path) if isinstance(path, str) else path
    current = value
    for depth, key in enumerate(keys):
        current = step(current, key, keys[:depth])
    return current


def step(current: Any, key: PathKey, before: list[PathKey]) -> Any:
    """`current[key]`, for dicts, lists, tuples and records; `before` names where we are.

    Raises:
        KeyError: no such key, index or field (the message names the path so far).
    """
    where = format_path(before) or "the state"
    if isinstance(current, dict):
        if key in current:
            return current[key]
        if isinstance(key, int) and str(key) in current:
            return current[str(key)]
        raise KeyError(f"{where} has no key {key!r}")
    if isinstance(current, (list, tuple)):
        if not isinstance(key, int):
            raise KeyError(f"{where} is a list; index it with a number, not {key!r}")
        try:
            return current[key]
        except IndexError:
            raise KeyError(f"{where} has {len(current)} items; there is no [{key}]") from None
    fields = getattr(current, "__struct_fields__", None) or getattr(
        current, "__dataclass_fields__", None
    )
    if fields is None:
        fields = getattr(type(current), "model_fields", None)
    if fields is not None and isinstance(key, str) and key in fields:
        return getattr(current, key)
    inner = getattr(current, "fields", None)  # an UnknownRecord
    if isinstance(inner, dict) and key in inner:
        return inner[key]
    raise KeyError(f"{where} is a {type(current).__qualname__}, which has no {key!r}")
