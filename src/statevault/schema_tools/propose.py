"""Write the source of a migration module from a `SchemaDiff`.

The module registers one function with `@statevault.migration(name, N, M)`. Every
step the diff decided is written out; every step it could not decide (a required
field with no default, an unsafe type change, a rename to confirm) is a comment
marked `TODO(statevault)` above a call that raises `NotImplementedError`, so an
unedited proposal can never migrate state wrongly, only refuse to.

The source is formatted as `ruff format` writes it, so it can be committed as is.
"""

from __future__ import annotations

import keyword
import math
import re
import textwrap
from typing import Any

from statevault.schema_tools.diff import (
    ByTag,
    Change,
    Conversion,
    FieldAdded,
    FieldNowRequired,
    FieldRemoved,
    FieldRetyped,
    ForEachItem,
    ForEachPosition,
    ForEachValue,
    IntToFloat,
    LikelyRename,
    MigrateRecord,
    RecordDiff,
    SchemaDiff,
    SetConstant,
    Unchanged,
    UnlessNone,
    conversion_parts,
    undecided_in,
)
from statevault.schema_tools.layout import (
    LINE_LENGTH,
    Atom,
    Call,
    Comprehension,
    Conditional,
    Display,
    Expr,
    Prefixed,
    statement,
)

TODO_MARK = "TODO(statevault)"


def propose_migration(name: str, from_version: int, to_version: int, diff: SchemaDiff) -> str:
    """The source of a migration module for `diff`, from `from_version` to `to_version`.

    Args:
        name: the schema's registered name.
        from_version: the version the stored state has (the diff's old side).
        to_version: the next version, `from_version + 1` (or `- 1` for a way back).
        diff: what `diff_schemas` found between the two versions.

    Returns:
        Python source: a module that registers the migration when imported.

    Raises:
        ValueError: versions that are not one step apart, or an empty name.

    Example:
        >>> source = propose_migration("order", 2, 3, diff_schemas(old, new))  # doctest: +SKIP
        >>> pathlib.Path("myapp/migrations/order_3.py").write_text(source)  # doctest: +SKIP
    """
    if not name:
        raise ValueError("the schema name is empty; pass the name the schema is registered under")
    if abs(to_version - from_version) != 1:
        raise ValueError(
            f"a migration goes one version at a time, not {from_version} -> {to_version}; "
            f"propose {from_version} -> {from_version + 1} and chain the steps"
        )
    return _Writer(name, from_version, to_version, diff).module()


class _Writer:
    def __init__(self, name: str, from_version: int, to_version: int, diff: SchemaDiff) -> None:
        self.name = name
        self.from_version = from_version
        self.to_version = to_version
        self.diff = diff
        self.uses_todo = False
        self.uses_rename = False
        self.helpers = self._helper_names()

    def _helper_names(self) -> dict[int, str]:
        """A function name for every record migrated by a call, not inline in the root."""
        called = {
            part.record
            for record in self.diff.records
            for change in record.changes
            if isinstance(change, FieldRetyped)
            for part in conversion_parts(change.conversion)
            if isinstance(part, MigrateRecord)
        }
        if not isinstance(self.diff.root, MigrateRecord):
            called |= {
                p.record for p in conversion_parts(self.diff.root) if isinstance(p, MigrateRecord)
            }
        names: dict[int, str] = {}
        taken: set[str] = set()
        for index in sorted(called):
            base = f"_migrate_{_snake(self.diff.records[index].new_name)}"
            candidate, n = base, 2
            while candidate in taken:
                candidate, n = f"{base}_{n}", n + 1
            taken.add(candidate)
            names[index] = candidate
        return names

    def module(self) -> str:
        function = f"migrate_{_snake(self.name)}_{self.from_version}_to_{self.to_version}"
        main = self._main_function(function)
        helpers = [self._record_function(self.helpers[i], i) for i in sorted(self.helpers)]
        support = []
        if self.uses_todo or self.uses_rename:
            support.append(_TODO_SOURCE)
        if self.uses_rename:
            support.append(_RENAME_SOURCE)
        body = "\n\n\n".join([main, *helpers, *support])
        return f"{self._docstring()}\n\n{_IMPORTS}\n\n\n{body}\n"

    def _docstring(self) -> str:
        width = LINE_LENGTH - 4
        paragraphs = [
            f"Migration of schema {self.name!r} from version {self.from_version} to "
            f"{self.to_version}, proposed by statevault.",
            f"Written by statevault from the JSON Schema stored for version "
            f"{self.from_version} and the code's type for version {self.to_version}. Read every "
            f"step before relying on it; import this module where schemas are registered.",
        ]
        todos = self.diff.todos()
        if not todos:
            paragraphs.append("Every step was decided automatically.")
        else:
            paragraphs.append(
                f"To do before it runs (each is a {TODO_MARK} comment, and the migration "
                f"raises NotImplementedError until it is done):"
            )
        lines: list[str] = []
        for paragraph in paragraphs:
            lines += [*textwrap.wrap(paragraph, width), ""]
        for todo in todos:
            lines += textwrap.wrap(todo, width, initial_indent="- ", subsequent_indent="  ")
        body = "\n".join(lines).rstrip("\n")
        return '"""' + body.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + '\n"""'

    def _main_function(self, function: str) -> str:
        header = [
            f"@statevault.migration({_literal(self.name)}, {self.from_version}, {self.to_version})",
            f"def {function}(state: dict[str, Any]) -> dict[str, Any]:",
            f'    """{_docstring_text(self._summary())}"""',
        ]
        root = self.diff.root
        if isinstance(root, MigrateRecord) and root.record not in self.helpers:
            body = self._record_steps(self.diff.records[root.record], "state")
            return "\n".join([*header, *body, "    return state"])
        if isinstance(root, Unchanged):
            note = "    # Both versions accept the same values: nothing to change."
            return "\n".join([*header, note, "    return state"])
        undecided = undecided_in(root)
        if undecided is not None:
            self.uses_todo = True
            body = [
                *_comment(
                    f"{TODO_MARK}: the state's type changes and no conversion could be "
                    f"decided ({undecided.reason}). Convert `state` here, then delete the "
                    f"_todo line.",
                    indent=4,
                ),
                f"    _todo({_literal('convert the whole state: ' + undecided.reason)})",
                "    return state",
            ]
            return "\n".join([*header, *body])
        expression = self._expression(root, "state", depth=0)
        return "\n".join([*header, *statement("return ", expression, indent="    ")])

    def _summary(self) -> str:
        return f"{self.name} v{self.from_version} -> v{self.to_version}."

    def _record_function(self, function: str, index: int) -> str:
        record = self.diff.records[index]
        header = [
            f"def {function}(record: dict[str, Any]) -> dict[str, Any]:",
            f'    """{_docstring_text(self._record_summary(record))}"""',
        ]
        return "\n".join([*header, *self._record_steps(record, "record"), "    return record"])

    def _record_summary(self, record: RecordDiff) -> str:
        names = (
            record.new_name
            if record.old_name == record.new_name
            else f"{record.old_name} -> {record.new_name}"
        )
        return f"One {names} record, as found at {record.path}."

    def _record_steps(self, record: RecordDiff, target: str) -> list[str]:
        lines: list[str] = []
        # Removals come last, so a step a person writes for a new field can still read
        # the old fields it is derived from.
        for change in sorted(record.changes, key=lambda c: _STEP_ORDER[type(c)]):
            step = self._change_steps(record, change, target)
            if lines and step:
                lines.append("")
            lines += step
        return lines or ["    # No field changes here: only types that accept more values."]

    def _change_steps(self, record: RecordDiff, change: Change, target: str) -> list[str]:
        if isinstance(change, LikelyRename):
            return self._rename_steps(change, target)
        if isinstance(change, FieldRemoved):
            return [
                *_comment(
                    f"Removed {_show(change.field)} ({change.type_name}): its stored value "
                    f"is dropped.",
                    indent=4,
                ),
                f"    {target}.pop({_literal(change.field)}, None)",
            ]
        if isinstance(change, FieldAdded):
            return self._added_steps(record, change, target)
        if isinstance(change, FieldNowRequired):
            return self._now_required_steps(record, change, target)
        return self._retyped_steps(record, change, target)

    def _rename_steps(self, change: LikelyRename, target: str) -> list[str]:
        self.uses_rename = True
        old, new = _literal(change.old_field), _literal(change.new_field)
        likeness = f"names {round(change.similarity * 100)}% alike"
        return [
            *_comment(
                f"{TODO_MARK}: confirm that {_show(change.old_field)} was renamed to "
                f"{_show(change.new_field)} (both {change.type_name}; {likeness}). If it "
                f"was, change confirmed=False to True. If not, replace this line with "
                f"`{target}.pop({old}, None)` and give {_show(change.new_field)} a value.",
                indent=4,
            ),
            f"    _rename({target}, {old}, {new}, confirmed=False)",
        ]

    def _added_steps(self, record: RecordDiff, change: FieldAdded, target: str) -> list[str]:
        what = f"Added {_show(change.field)} ({change.type_name})"
        if change.has_default:
            return [
                *_comment(f"{what}, with its default.", indent=4),
                *_call_with_value(f"{target}.setdefault", change.field, change.default),
            ]
        if not change.required:
            return _comment(
                f"{what}: its default is made by code (a default factory), so loading fills it in.",
                indent=4,
            )
        self.uses_todo = True
        return [
            *_comment(
                f"{TODO_MARK}: {_show(change.field)} ({change.type_name}) is new, required "
                f"and has no default. Set it, e.g. "
                f"`{target}[{_literal(change.field)}] = ...` from the old fields, then "
                f"delete the _todo line.",
                indent=4,
            ),
            f"    _todo({_literal(f'set the new field {record.new_name}.{change.field}')})",
        ]

    def _now_required_steps(
        self, record: RecordDiff, change: FieldNowRequired, target: str
    ) -> list[str]:
        what = f"{_show(change.field)} ({change.type_name}) is now required"
        if change.has_old_default:
            return [
                *_comment(f"{what}; a stored record without it meant the old default.", indent=4),
                *_call_with_value(f"{target}.setdefault", change.field, change.old_default),
            ]
        self.uses_todo = True
        return [
            *_comment(
                f"{TODO_MARK}: {what}, and a stored record may lack it (it had no default). "
                f"Fill it in where missing, then delete the _todo line.",
                indent=4,
            ),
            f"    _todo({_literal(f'fill {record.new_name}.{change.field} where missing')})",
        ]

    def _retyped_steps(self, record: RecordDiff, change: FieldRetyped, target: str) -> list[str]:
        field = _literal(change.field)
        undecided = undecided_in(change.conversion)
        if undecided is not None:
            self.uses_todo = True
            where = f"{record.new_name}.{change.field}"
            return [
                *_comment(
                    f"{TODO_MARK}: {_show(change.field)} changes from {change.old_type} to "
                    f"{change.new_type}, and no conversion could be decided: "
                    f"{undecided.reason}. Convert `{target}[{field}]` here, then delete "
                    f"the _todo line.",
                    indent=4,
                ),
                f"    _todo({_literal(f'convert {where} to {change.new_type}')})",
            ]
        what = (
            f"{_show(change.field)}: {change.reason or change.old_type + ' -> ' + change.new_type}"
        )
        if isinstance(change.conversion, Unchanged):
            return _comment(f"{what}: nothing to change.", indent=4)
        value = self._expression(change.conversion, f"{target}[{field}]", depth=0)
        head = f"{target}[{field}] = "
        if change.optional_before:
            return [
                *_comment(f"{what}.", indent=4),
                f"    if {field} in {target}:",
                *statement(head, value, indent="        "),
            ]
        return [*_comment(f"{what}.", indent=4), *statement(head, value, indent="    ")]

    def _expression(self, conversion: Conversion, source: str, *, depth: int) -> Expr:
        """An expression converting the value `source` (a name or subscript) by `conversion`."""
        if isinstance(conversion, Unchanged):
            return Atom(source)
        if isinstance(conversion, IntToFloat):
            return Call("float", Atom(source))
        if isinstance(conversion, SetConstant):
            return Atom(_literal(conversion.value))
        if isinstance(conversion, MigrateRecord):
            return Call(self.helpers[conversion.record], Atom(source))
        if isinstance(conversion, ForEachItem):
            item = f"item{depth or ''}"
            inner = self._expression(conversion.inner, item, depth=depth + 1)
            return Comprehension("[", inner, f"for {item} in {source}", "]")
        if isinstance(conversion, ForEachValue):
            key, value = f"key{depth or ''}", f"value{depth or ''}"
            inner = self._expression(conversion.inner, value, depth=depth + 1)
            clause = f"for {key}, {value} in {source}.items()"
            return Comprehension("{", Prefixed(f"{key}: ", inner), clause, "}")
        if isinstance(conversion, ForEachPosition):
            parts = [
                self._expression(position, f"{source}[{i}]", depth=depth + 1)
                for i, position in enumerate(conversion.positions)
            ]
            rest = f"{source}[{len(parts)}:]"
            if isinstance(conversion.rest, Unchanged):
                parts.append(Atom(f"*{rest}"))
            else:
                item = f"item{depth or ''}"
                inner = self._expression(conversion.rest, item, depth=depth + 1)
                parts.append(Prefixed("*", Comprehension("[", inner, f"for {item} in {rest}", "]")))
            return Display(tuple(parts))
        if isinstance(conversion, ByTag):
            tag = f"{source}[{_literal(conversion.field)}]"
            branches = tuple(
                (self._expression(case, source, depth=depth), f"{tag} == {_literal(value)}")
                for value, case in conversion.cases
            )
            return Conditional(branches, Atom(source))
        if isinstance(conversion, UnlessNone):
            inner = self._expression(conversion.inner, source, depth=depth)
            # Chains rather than nests: `None if x is None else a if c else x` reads as meant.
            if isinstance(inner, Conditional):
                return Conditional(
                    ((Atom("None"), f"{source} is None"), *inner.branches), inner.otherwise
                )
            return Conditional(((Atom("None"), f"{source} is None"),), inner)
        raise AssertionError(f"undecided conversions are written as TODOs: {conversion!r}")


_STEP_ORDER: dict[type, int] = {
    LikelyRename: 0,
    FieldRetyped: 1,
    FieldNowRequired: 2,
    FieldAdded: 3,
    FieldRemoved: 4,
}

_IMPORTS = """from __future__ import annotations

from typing import Any

import statevault"""

_TODO_SOURCE = f'''def _todo(step: str) -> None:
    """Refuse to migrate until a person has written this step."""
    raise NotImplementedError(
        f"{{__name__}}: this proposed migration needs an edit: {{step}}. Find the "
        "{TODO_MARK} comment above the call, do what it says, then delete the call."
    )'''

_RENAME_SOURCE = '''\
def _rename(record: dict[str, Any], old: str, new: str, *, confirmed: bool) -> None:
    """Move a field's value to its new name, once a person has confirmed the rename."""
    if not confirmed:
        _todo(f"confirm that {old!r} was renamed to {new!r}")
    if old in record:
        record[new] = record.pop(old)'''


def _call_with_value(function: str, field: str, value: Any) -> list[str]:
    """`function("field", value)` as statement lines, split the way `ruff format` would."""
    line = f"    {function}({_literal(field)}, {_literal(value)})"
    if len(line) <= LINE_LENGTH:
        return [line]
    return [
        *_assign("default", value, indent=4),
        f"    {function}({_literal(field)}, default)",
    ]


def _assign(name: str, value: Any, *, indent: int) -> list[str]:
    pad = " " * indent
    text = _literal(value)
    if len(pad) + len(name) + 3 + len(text) <= LINE_LENGTH:
        return [f"{pad}{name} = {text}"]
    lines = _exploded(value, indent)
    return [f"{pad}{name} = {lines[0]}", *lines[1:]]


def _exploded(value: Any, indent: int) -> list[str]:
    """A literal over several lines, one item per line with a trailing comma."""
    pad = " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = [(f"{_literal(k)}: ", v) for k, v in value.items()]
        open_, close = "{", "}"
    elif isinstance(value, list) and value:
        items = [("", v) for v in value]
        open_, close = "[", "]"
    else:
        return [_literal(value)]
    lines = [open_]
    for prefix, item in items:
        text = f"{pad}{prefix}{_literal(item)},"
        if len(text) <= LINE_LENGTH or not isinstance(item, dict | list) or not item:
            lines.append(text)
        else:
            inner = _exploded(item, indent + 4)
            lines += [f"{pad}{prefix}{inner[0]}", *inner[1:-1], f"{inner[-1]},"]
    lines.append(" " * indent + close)
    return lines


def _literal(value: Any) -> str:
    """Python source for a JSON value, quoted the way `ruff format` quotes."""
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    return repr(value)


def _quote(text: str) -> str:
    """A string literal in the quotes that need fewer escapes, double on a tie."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    escaped = "".join(
        "\\" + ch if ch in ("\\", quote) else ch if ch.isprintable() else repr(ch)[1:-1]
        for ch in text
    )
    return f"{quote}{escaped}{quote}"


def _comment(text: str, *, indent: int) -> list[str]:
    pad = " " * indent
    return textwrap.wrap(
        " ".join(text.split()),
        LINE_LENGTH,
        initial_indent=f"{pad}# ",
        subsequent_indent=f"{pad}# ",
        break_on_hyphens=False,
    )


def _show(field: str) -> str:
    """A field name for a comment: in backticks, or as a repr when it holds odd characters."""
    if field.isprintable() and "`" not in field and field.strip() == field and field:
        return f"`{field}`"
    return repr(field)


def _docstring_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _snake(name: str) -> str:
    """A Python identifier in snake case from a schema or record name."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    text = re.sub(r"\W+", "_", text, flags=re.ASCII).strip("_").lower() or "schema"
    if text[0].isdigit() or keyword.iskeyword(text):
        text = f"n_{text}"
    return text
