"""Python expressions for generated code, laid out within the line length as `ruff format` does.

A proposed migration is committed as it is written, so its source must pass
`ruff format --check`. Expressions are built as a small tree; each is written on one
line when it fits, else split at its brackets, one part a line, the way the
formatter splits conditionals, comprehensions, calls and list displays.
"""

from __future__ import annotations

from dataclasses import dataclass

LINE_LENGTH = 100
STEP = "    "


@dataclass(frozen=True, slots=True)
class Atom:
    """Text that is never split: a name, a subscript, a literal."""

    text: str


@dataclass(frozen=True, slots=True)
class Conditional:
    """`v0 if c0 else v1 if c1 else otherwise`."""

    branches: tuple[tuple[Expr, str], ...]
    otherwise: Expr


@dataclass(frozen=True, slots=True)
class Comprehension:
    """`[element for x in xs]` or `{key: value for ...}` (the key in a `Prefixed` element)."""

    open: str
    element: Expr
    clause: str
    close: str


@dataclass(frozen=True, slots=True)
class Call:
    """`function(argument)`."""

    function: str
    argument: Expr


@dataclass(frozen=True, slots=True)
class Display:
    """`[a, b, *c]`."""

    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Prefixed:
    """`prefix` glued to an expression: `*` of a starred item, `key: ` of a dict element."""

    prefix: str
    inner: Expr


Expr = Atom | Conditional | Comprehension | Call | Display | Prefixed


def flat(expr: Expr) -> str:
    """The expression on one line."""
    if isinstance(expr, Atom):
        return expr.text
    if isinstance(expr, Conditional):
        parts = [f"{flat(value)} if {condition} else " for value, condition in expr.branches]
        return "".join(parts) + flat(expr.otherwise)
    if isinstance(expr, Comprehension):
        return f"{expr.open}{flat(expr.element)} {expr.clause}{expr.close}"
    if isinstance(expr, Call):
        return f"{expr.function}({flat(expr.argument)})"
    if isinstance(expr, Display):
        return "[" + ", ".join(flat(item) for item in expr.items) + "]"
    return expr.prefix + flat(expr.inner)


def statement(head: str, expr: Expr, *, indent: str) -> list[str]:
    """`head` (`x = `, `return `) and the expression, as lines at `indent`."""
    one_line = f"{indent}{head}{flat(expr)}"
    if len(one_line) <= LINE_LENGTH or isinstance(expr, Atom):
        return [one_line]
    if isinstance(expr, Conditional):
        return [f"{indent}{head}(", *_part("", expr, "", indent + STEP), f"{indent})"]
    first, *rest = _split(expr, indent)
    return [f"{indent}{head}{first.lstrip()}", *rest]


def _fits(prefix: str, expr: Expr, suffix: str = "") -> bool:
    return len(prefix) + len(flat(expr)) + len(suffix) <= LINE_LENGTH


def _part(prefix: str, expr: Expr, suffix: str, indent: str) -> list[str]:
    """One part of a split expression: on its own line(s) at `indent`."""
    if _fits(indent + prefix, expr, suffix) or isinstance(expr, Atom):
        return [f"{indent}{prefix}{flat(expr)}{suffix}"]
    first, *rest = _split(expr, indent)
    lines = [f"{indent}{prefix}{first.lstrip()}", *rest]
    lines[-1] += suffix
    return lines


def _split(expr: Expr, indent: str) -> list[str]:
    """The expression over several lines; the first starts at `indent`."""
    inner = indent + STEP
    if isinstance(expr, Conditional):
        lines: list[str] = []
        prefix = ""
        for value, condition in expr.branches:
            lines += _part(prefix, value, "", indent)
            lines.append(f"{indent}if {condition}")
            prefix = "else "
        return lines + _part(prefix, expr.otherwise, "", indent)
    if isinstance(expr, Comprehension):
        together = f"{inner}{flat(expr.element)} {expr.clause}"
        if len(together) <= LINE_LENGTH:
            return [f"{indent}{expr.open}", together, f"{indent}{expr.close}"]
        return [
            f"{indent}{expr.open}",
            *_part("", expr.element, "", inner),
            f"{inner}{expr.clause}",
            f"{indent}{expr.close}",
        ]
    if isinstance(expr, Call):
        return [f"{indent}{expr.function}(", *_part("", expr.argument, "", inner), f"{indent})"]
    if isinstance(expr, Display):
        items = [line for item in expr.items for line in _part("", item, ",", inner)]
        return [f"{indent}[", *items, f"{indent}]"]
    if isinstance(expr, Prefixed):
        first, *rest = _split(expr.inner, indent)
        return [f"{indent}{expr.prefix}{first.lstrip()}", *rest]
    return [f"{indent}{expr.text}"]
