"""What changed between two versions of a schema, and how stored values convert.

`diff_schemas` compares the JSON Schema stored for the old version with the new one,
record by record (nested records reached through `$ref`s are compared too), and
classifies each change: fields added (with or without a default), removed, likely
renamed (for a person to confirm), and retyped, each retyping either safe (with the
conversion that makes an old value valid) or undecided. `propose_migration` turns
the result into the source of a migration.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from statevault.schema_tools.document import (
    ROOT_KEY,
    Node,
    SchemaReader,
    is_null,
    is_record,
    python_literal,
    union_members,
)

RENAME_SIMILARITY = 0.5
"""How alike two field names must be (difflib ratio) to pair them as a likely rename
when other fields of the same type were also added or removed."""

SAMPLE_LIMIT = 10_000
"""Distinct stored values kept per field by `collect_field_values`."""


# Conversions: how a stored value of the old type becomes a value of the new type.


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The stored value is already valid under the new type."""


@dataclass(frozen=True, slots=True)
class IntToFloat:
    """An int becomes a float."""


@dataclass(frozen=True, slots=True)
class SetConstant:
    """The value becomes the one value the new type allows (a record's tag)."""

    value: Any


@dataclass(frozen=True, slots=True)
class MigrateRecord:
    """A nested record migrates by the steps of `SchemaDiff.records[record]`."""

    record: int


@dataclass(frozen=True, slots=True)
class ForEachItem:
    """Every item of a list (or set) converts by `inner`."""

    inner: Conversion


@dataclass(frozen=True, slots=True)
class ForEachValue:
    """Every value of a map converts by `inner`; keys stay."""

    inner: Conversion


@dataclass(frozen=True, slots=True)
class ForEachPosition:
    """Each position of a tuple converts by its own conversion; `rest` for extra items."""

    positions: tuple[Conversion, ...]
    rest: Conversion


@dataclass(frozen=True, slots=True)
class UnlessNone:
    """`None` stays `None`; anything else converts by `inner`."""

    inner: Conversion


@dataclass(frozen=True, slots=True)
class ByTag:
    """A tagged union: a record converts by the case for its tag's value; others stay.

    Attributes:
        field: the tag's field (msgspec's `type` unless renamed).
        cases: (tag value, conversion) for each member that changed.
    """

    field: str
    cases: tuple[tuple[Any, Conversion], ...]


@dataclass(frozen=True, slots=True)
class Undecided:
    """No conversion could be decided; a person writes it.

    Attributes:
        reason: why, in words.
        narrowing: the new type accepts fewer values; stored values that all fit it settle it.
    """

    reason: str
    narrowing: bool = False


Conversion = (
    Unchanged
    | IntToFloat
    | SetConstant
    | MigrateRecord
    | ForEachItem
    | ForEachValue
    | ForEachPosition
    | UnlessNone
    | ByTag
    | Undecided
)


def undecided_in(conversion: Conversion) -> Undecided | None:
    """The first undecided part of a conversion, if any."""
    for part in conversion_parts(conversion):
        if isinstance(part, Undecided):
            return part
    return None


def conversion_parts(conversion: Conversion) -> Iterable[Conversion]:
    """A conversion and every conversion nested in it."""
    yield conversion
    if isinstance(conversion, ForEachItem | ForEachValue | UnlessNone):
        yield from conversion_parts(conversion.inner)
    elif isinstance(conversion, ForEachPosition):
        for position in (*conversion.positions, conversion.rest):
            yield from conversion_parts(position)
    elif isinstance(conversion, ByTag):
        for _, case in conversion.cases:
            yield from conversion_parts(case)


# Changes to a record's fields.


@dataclass(frozen=True, slots=True)
class FieldAdded:
    """A field only the new type has.

    Attributes:
        default: the JSON Schema default, meaningful when `has_default`.
        required: the new type requires it (then it has no default).
    """

    field: str
    type_name: str
    required: bool
    has_default: bool
    default: Any = None


@dataclass(frozen=True, slots=True)
class FieldRemoved:
    """A field only the old type has; migrating drops its value."""

    field: str
    type_name: str


@dataclass(frozen=True, slots=True)
class LikelyRename:
    """One field removed and one added with the same type: probably a rename.

    A person confirms it; the names' likeness (0-1) helps them judge.
    """

    old_field: str
    new_field: str
    type_name: str
    similarity: float


@dataclass(frozen=True, slots=True)
class FieldRetyped:
    """A field both types have, with a different type.

    Attributes:
        conversion: how a stored value becomes valid; holds an `Undecided` when unsafe.
        reason: the kind of change, in words (`int -> float`).
        optional_before: the old type may lack the field, so a stored record may too.
        values_added, values_removed: for enums and Literals, the values that changed.
    """

    field: str
    old_type: str
    new_type: str
    conversion: Conversion
    reason: str
    optional_before: bool
    values_added: tuple[Any, ...] = ()
    values_removed: tuple[Any, ...] = ()

    @property
    def safe(self) -> bool:
        """Whether the conversion was decided without a person."""
        return undecided_in(self.conversion) is None


@dataclass(frozen=True, slots=True)
class FieldNowRequired:
    """A field the old type could omit that the new type requires.

    With an old default, a record missing it meant that default, which migrating fills in.
    """

    field: str
    type_name: str
    has_old_default: bool
    old_default: Any = None


Change = FieldAdded | FieldRemoved | LikelyRename | FieldRetyped | FieldNowRequired


@dataclass(frozen=True, slots=True)
class RecordDiff:
    """The changes to one record type: the root, or a record nested in it.

    Attributes:
        old_name, new_name: the record's names in each document (`$defs` key or title).
        path: where the record was first met, from the root (`state.items[]`).
    """

    old_name: str
    new_name: str
    path: str
    changes: tuple[Change, ...]

    def todos(self) -> list[str]:
        """What a person must decide in this record, one line each."""
        out: list[str] = []
        for change in self.changes:
            where = f"{self.new_name}.{_field_of(change)}"
            if isinstance(change, LikelyRename):
                out.append(
                    f"{self.new_name}: confirm that {change.old_field!r} was renamed to "
                    f"{change.new_field!r}"
                )
            elif isinstance(change, FieldAdded) and change.required:
                out.append(f"{where}: new required field with no default; set it")
            elif isinstance(change, FieldRetyped) and not change.safe:
                undecided = undecided_in(change.conversion)
                assert undecided is not None
                out.append(f"{where}: {change.old_type} -> {change.new_type}: {undecided.reason}")
            elif isinstance(change, FieldNowRequired) and not change.has_old_default:
                out.append(f"{where}: now required and stored records may lack it; fill it")
        return out


@dataclass(frozen=True, slots=True)
class SchemaDiff:
    """Everything that changed between two schema versions.

    Attributes:
        root: how a whole stored state converts (usually `MigrateRecord(0)`).
        records: the record types that changed, the root's first.
    """

    root: Conversion
    records: tuple[RecordDiff, ...]

    @property
    def unchanged(self) -> bool:
        """Whether both versions accept exactly the same values."""
        return isinstance(self.root, Unchanged)

    def todos(self) -> list[str]:
        """What a person must decide before the migration runs, one line each."""
        out = [todo for record in self.records for todo in record.todos()]
        if not self.records:
            undecided = undecided_in(self.root)
            if undecided is not None:
                out.append(f"the state's type: {undecided.reason}")
        return out

    @property
    def automatic(self) -> bool:
        """Whether the proposed migration needs no edits before it runs."""
        return not self.todos()


def _field_of(change: Change) -> str:
    return change.new_field if isinstance(change, LikelyRename) else change.field


def diff_schemas(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    stored_values: Mapping[str, Iterable[Any]] | None = None,
) -> SchemaDiff:
    """Compare the JSON Schema of an old schema version with a new one.

    Args:
        old: the old version's JSON Schema (as stored in the vault).
        new: the new version's JSON Schema (from the code's type).
        stored_values: values stored for old fields, keyed `"Record.field"` (the
            old record's name), as `collect_field_values` gathers them. A change the
            new type accepts fewer values for (str -> Literal, a removed enum value,
            Optional[T] -> T) is safe when every stored value fits; without values
            it is left undecided.

    Returns:
        The changes, record by record, with the conversion of each retyped field.

    Raises:
        SchemaDocumentError: a document that is not a JSON object, or a broken `$ref`.

    Example:
        >>> old = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        >>> new = {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}
        >>> diff_schemas(old, new).records[0].changes[0].reason
        'int -> float'
    """
    differ = _Differ(
        SchemaReader(old, label="old schema"),
        SchemaReader(new, label="new schema"),
        stored_values or {},
    )
    return differ.run()


class _Differ:
    def __init__(
        self,
        old: SchemaReader,
        new: SchemaReader,
        stored_values: Mapping[str, Iterable[Any]],
    ) -> None:
        self.old = old
        self.new = new
        self.stored_values = stored_values
        self.pairs: dict[tuple[str, str], int] = {}
        self.pending: list[tuple[int, Mapping[str, Any], Mapping[str, Any], str]] = []
        self.records: dict[int, RecordDiff] = {}
        self.names: dict[int, tuple[str, str]] = {}

    def run(self) -> SchemaDiff:
        root = self.convert(self.old.root, self.new.root, "state")
        while self.pending:
            index, old_node, new_node, path = self.pending.pop(0)
            old_name, new_name = self.names[index]
            self.records[index] = RecordDiff(
                old_name=old_name,
                new_name=new_name,
                path=path,
                changes=self.record_changes(old_name, old_node, new_node, path),
            )
        return SchemaDiff(root=root, records=tuple(self.records[i] for i in sorted(self.records)))

    def record_changes(
        self, record: str, old: Mapping[str, Any], new: Mapping[str, Any], path: str
    ) -> tuple[Change, ...]:
        old_fields: Mapping[str, Node] = old["properties"]
        new_fields: Mapping[str, Node] = new["properties"]
        old_required = set(old.get("required") or ())
        new_required = set(new.get("required") or ())
        removed = [name for name in old_fields if name not in new_fields]
        added = [name for name in new_fields if name not in old_fields]
        renames = self.likely_renames(removed, added, old_fields, new_fields)
        renamed_old = {rename.old_field for rename in renames}
        renamed_new = {rename.new_field for rename in renames}

        changes: list[Change] = list(renames)
        for name in removed:
            if name not in renamed_old:
                changes.append(FieldRemoved(name, self.old.type_name(old_fields[name])))
        for name in (n for n in new_fields if n in old_fields):
            changes.extend(
                self.field_changes(
                    record,
                    name,
                    old_fields[name],
                    new_fields[name],
                    optional_before=name not in old_required,
                    required_now=name in new_required,
                    path=f"{path}.{name}",
                )
            )
        for name in added:
            if name in renamed_new:
                continue
            node = new_fields[name]
            has_default = isinstance(node, Mapping) and "default" in node
            changes.append(
                FieldAdded(
                    field=name,
                    type_name=self.new.type_name(node),
                    required=name in new_required,
                    has_default=has_default,
                    default=node["default"] if has_default and isinstance(node, Mapping) else None,
                )
            )
        return tuple(changes)

    def field_changes(
        self,
        record: str,
        name: str,
        old_node: Node,
        new_node: Node,
        *,
        optional_before: bool,
        required_now: bool,
        path: str,
    ) -> list[Change]:
        changes: list[Change] = []
        if optional_before and required_now:
            has_old_default = isinstance(old_node, Mapping) and "default" in old_node
            changes.append(
                FieldNowRequired(
                    field=name,
                    type_name=self.new.type_name(new_node),
                    has_old_default=has_old_default,
                    old_default=(
                        old_node["default"]
                        if has_old_default and isinstance(old_node, Mapping)
                        else None
                    ),
                )
            )
        conversion, reason = self.convert_with_reason(old_node, new_node, path)
        if isinstance(conversion, Unchanged) and not reason:
            return changes
        undecided = undecided_in(conversion)
        if undecided is not None and not _reaches_records(conversion):
            conversion, reason = self.settle_by_values(
                f"{record}.{name}", new_node, conversion, reason
            )
        added, removed = self.value_changes(old_node, new_node)
        changes.append(
            FieldRetyped(
                field=name,
                old_type=self.old.type_name(old_node),
                new_type=self.new.type_name(new_node),
                conversion=conversion,
                reason=reason,
                optional_before=optional_before,
                values_added=added,
                values_removed=removed,
            )
        )
        return changes

    def settle_by_values(
        self, key: str, new_node: Node, conversion: Conversion, reason: str
    ) -> tuple[Conversion, str]:
        """Decide a narrowing by the stored values of `key`: safe when every one fits."""
        undecided = undecided_in(conversion)
        assert undecided is not None
        if not undecided.narrowing:
            return conversion, reason
        values = list(self.stored_values.get(key, ()))
        if key not in self.stored_values:
            detail = "stored values were not checked"
        elif not values:
            detail = "no stored values to check"
        else:
            misfits = [value for value in values if not self.new.fits(value, new_node)]
            if not misfits:
                return Unchanged(), _join(reason, f"all {len(values)} stored values fit")
            shown = ", ".join(python_literal(value) for value in misfits[:3])
            more = f" and {len(misfits) - 3} more" if len(misfits) > 3 else ""
            detail = f"{len(misfits)} of {len(values)} stored values do not fit: {shown}{more}"
        return Undecided(_join(undecided.reason, detail), narrowing=True), reason

    def value_changes(self, old_node: Node, new_node: Node) -> tuple[tuple[Any, ...], ...]:
        old_values = _enum_values(self.old.resolve(old_node)[1])
        new_values = _enum_values(self.new.resolve(new_node)[1])
        if old_values is None or new_values is None:
            return (), ()
        return (
            tuple(v for v in new_values if v not in old_values),
            tuple(v for v in old_values if v not in new_values),
        )

    def likely_renames(
        self,
        removed: list[str],
        added: list[str],
        old_fields: Mapping[str, Node],
        new_fields: Mapping[str, Node],
    ) -> list[LikelyRename]:
        candidates: list[tuple[float, str, str]] = []
        for old_name in removed:
            same_type = [
                new_name
                for new_name in added
                if self.old.same_type(old_fields[old_name], self.new, new_fields[new_name])
            ]
            for new_name in same_type:
                similarity = difflib.SequenceMatcher(
                    None, old_name.lower(), new_name.lower()
                ).ratio()
                candidates.append((similarity, old_name, new_name))
        # A pair that is the only removed and only added field of its type is a likely
        # rename however unlike the names are: missing a rename silently drops data.
        sole = {
            (o, n)
            for _, o, n in candidates
            if sum(1 for _, o2, _ in candidates if o2 == o) == 1
            and sum(1 for _, _, n2 in candidates if n2 == n) == 1
        }
        renames: list[LikelyRename] = []
        taken_old: set[str] = set()
        taken_new: set[str] = set()
        for similarity, old_name, new_name in sorted(candidates, key=lambda c: -c[0]):
            if old_name in taken_old or new_name in taken_new:
                continue
            if similarity < RENAME_SIMILARITY and (old_name, new_name) not in sole:
                continue
            taken_old.add(old_name)
            taken_new.add(new_name)
            renames.append(
                LikelyRename(
                    old_field=old_name,
                    new_field=new_name,
                    type_name=self.new.type_name(new_fields[new_name]),
                    similarity=round(similarity, 2),
                )
            )
        return renames

    def record_index(
        self,
        old_key: str | None,
        old_node: Mapping[str, Any],
        new_key: str | None,
        new_node: Mapping[str, Any],
        path: str,
    ) -> int:
        # Inline records (no $ref) have no name to share; key them by identity.
        pair = (old_key or f"inline:{id(old_node)}", new_key or f"inline:{id(new_node)}")
        if pair not in self.pairs:
            index = len(self.pairs)
            self.pairs[pair] = index
            self.names[index] = (
                _record_name(self.old, old_key, old_node),
                _record_name(self.new, new_key, new_node),
            )
            self.pending.append((index, old_node, new_node, path))
        return self.pairs[pair]

    def convert(self, old_node: Node, new_node: Node, path: str) -> Conversion:
        return self.convert_with_reason(old_node, new_node, path)[0]

    def convert_with_reason(
        self, old_node: Node, new_node: Node, path: str
    ) -> tuple[Conversion, str]:
        """How a value of `old_node` becomes valid under `new_node`, and the change in words."""
        old_key, old = self.old.resolve(old_node)
        new_key, new = self.new.resolve(new_node)
        if self.old.same_type(old, self.new, new):
            return Unchanged(), ""
        old_name, new_name = self.old.type_name(old_node), self.new.type_name(new_node)
        if new is True:
            return Unchanged(), "now accepts any value"
        change = f"{old_name} -> {new_name}"
        if isinstance(old, bool) or isinstance(new, bool):
            return Undecided("no automatic conversion", narrowing=True), change
        if is_record(old) and is_record(new):
            index = self.record_index(old_key, old, new_key, new, path)
            return MigrateRecord(index), f"holds {new_name} records"
        union = self._convert_unions(old, new, path, old_name, new_name)
        if union is not None:
            return union
        enum = self._convert_enums(old, new, old_name, new_name)
        if enum is not None:
            return enum
        return self._convert_shapes(old, new, path, old_name, new_name)

    def _convert_unions(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        path: str,
        old_name: str,
        new_name: str,
    ) -> tuple[Conversion, str] | None:
        old_members, new_members = union_members(old), union_members(new)
        if old_members is None and new_members is None:
            return None
        change = f"{old_name} -> {new_name}"
        old_all = old_members if old_members is not None else [old]
        new_all = new_members if new_members is not None else [new]
        old_null = any(is_null(self.old.resolve(m)[1]) for m in old_all)
        new_null = any(is_null(self.new.resolve(m)[1]) for m in new_all)
        old_rest = [m for m in old_all if not is_null(self.old.resolve(m)[1])]
        new_rest = [m for m in new_all if not is_null(self.new.resolve(m)[1])]
        if all(any(self.old.same_type(o, self.new, n) for n in new_all) for o in old_all):
            kind = "now optional" if new_null and not old_null else "widened"
            return Unchanged(), f"{change} ({kind})"
        if old_null and not new_null:
            return Undecided("None is no longer allowed", narrowing=True), change
        if len(old_rest) == 1 and len(new_rest) == 1:
            inner, inner_reason = self.convert_with_reason(old_rest[0], new_rest[0], path)
            conversion = _unless_none(inner) if old_null else inner
            detail = re.search(r"\(([^()]*)\)$", inner_reason)
            return conversion, f"{change} ({detail.group(1)})" if detail else change
        tagged = self._convert_tagged(old_rest, new_rest, path)
        if tagged is not None:
            return (_unless_none(tagged) if old_null else tagged), f"{change} (tagged union)"
        return Undecided(f"union {change} changed", narrowing=True), change

    def _convert_tagged(
        self, old_members: list[Node], new_members: list[Node], path: str
    ) -> Conversion | None:
        """Members of a tagged union pair up by tag value; None if this is not one."""
        old_records = [self.old.resolve(m)[1] for m in old_members]
        new_records = [self.new.resolve(m)[1] for m in new_members]
        tag = _tag_field([*old_records, *new_records])
        if tag is None:
            return None
        new_by_tag = {
            _tag_value(node, tag): member
            for member, node in zip(new_members, new_records, strict=True)
        }
        cases: list[tuple[Any, Conversion]] = []
        for member, node in zip(old_members, old_records, strict=True):
            value = _tag_value(node, tag)
            if value not in new_by_tag:
                return Undecided(
                    f"records tagged {python_literal(value)} have no type in the new union",
                    narrowing=True,
                )
            inner = self.convert(member, new_by_tag[value], path)
            if isinstance(inner, Undecided):
                return inner
            if not isinstance(inner, Unchanged):
                cases.append((value, inner))
        return ByTag(tag, tuple(cases)) if cases else Unchanged()

    def _convert_array(
        self, old: Mapping[str, Any], new: Mapping[str, Any], path: str, change: str
    ) -> Conversion:
        old_prefix, new_prefix = old.get("prefixItems"), new.get("prefixItems")
        old_rest, new_rest = old.get("items", True), new.get("items", True)
        if old_prefix is None and new_prefix is None:
            inner = self.convert(old_rest, new_rest, f"{path}[]")
            # Decoding a list into a set drops duplicates, and a set is a valid list.
            return self._contained(old, new, ("items", "uniqueItems"), inner, ForEachItem)
        if (
            isinstance(old_prefix, list)
            and isinstance(new_prefix, list)
            and len(old_prefix) == len(new_prefix)
        ):
            positions = tuple(
                self.convert(o, n, f"{path}[{i}]")
                for i, (o, n) in enumerate(zip(old_prefix, new_prefix, strict=True))
            )
            rest = Unchanged() if old_rest is False else self.convert(old_rest, new_rest, path)
            parts = (*positions, rest)
            for part in parts:
                if isinstance(part, Undecided):
                    return part
            each: Conversion = (
                Unchanged()
                if all(isinstance(part, Unchanged) for part in parts)
                else ForEachPosition(positions, rest)
            )
            return self._contained(old, new, ("prefixItems", "items"), each, lambda c: c)
        return Undecided(f"{change}: tuple shape changed", narrowing=True)

    def _contained(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        contents: tuple[str, ...],
        inner: Conversion,
        wrap: Callable[[Conversion], Conversion],
    ) -> Conversion:
        """A container's conversion: its contents' by `wrap`, if the container itself fits."""
        if not self.old.same_type(_without(old, contents), self.new, _without(new, contents)):
            return Undecided("its size or other constraints changed", narrowing=True)
        if isinstance(inner, Unchanged | Undecided):
            return inner
        return wrap(inner)

    def _convert_enums(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        old_name: str,
        new_name: str,
    ) -> tuple[Conversion, str] | None:
        old_values, new_values = _enum_values(old), _enum_values(new)
        change = f"{old_name} -> {new_name}"
        if new_values is not None:
            if old_values is None:
                return Undecided(f"narrowed to {new_name}", narrowing=True), change
            if len(old_values) == 1 and len(new_values) == 1:
                return SetConstant(new_values[0]), f"{change} (a tag; set to the new value)"
            removed = [v for v in old_values if v not in new_values]
            if not removed:
                return Unchanged(), f"{change} (values added)"
            gone = ", ".join(python_literal(v) for v in removed)
            return Undecided(f"values removed: {gone}", narrowing=True), change
        if old_values is not None:
            if all(self.new.fits(value, new) for value in old_values):
                return Unchanged(), f"{change} (widened)"
            return Undecided(f"{change}: old values do not fit", narrowing=True), change
        return None

    def _convert_shapes(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        path: str,
        old_name: str,
        new_name: str,
    ) -> tuple[Conversion, str]:
        change = f"{old_name} -> {new_name}"
        old_type, new_type = old.get("type"), new.get("type")
        if old_type == "integer" and new_type == "number":
            return IntToFloat(), change
        if old_type == new_type == "array":
            return self._convert_array(old, new, path, change), change
        if (
            old_type == new_type == "object"
            and old.get("additionalProperties") is not None
            and new.get("additionalProperties") is not None
        ):
            inner = self.convert(
                old["additionalProperties"], new["additionalProperties"], f"{path}{{}}"
            )
            return self._contained(old, new, ("additionalProperties",), inner, ForEachValue), (
                change
            )
        if old_type == new_type:
            return Undecided(f"{change}: constraints changed", narrowing=True), change
        return Undecided(f"{change}: no automatic conversion", narrowing=True), change


def _unless_none(inner: Conversion) -> Conversion:
    return inner if isinstance(inner, Unchanged | Undecided) else UnlessNone(inner)


def _record_name(document: SchemaReader, key: str | None, node: Node) -> str:
    if key is None and node is document.root:
        key = ROOT_KEY
    return document.name_of(key, node)


def _tag_field(records: list[Node]) -> str | None:
    """The field every record requires with one constant value each: a union's tag."""
    if len(records) < 2 or not all(is_record(node) for node in records):
        return None
    first = records[0]
    assert isinstance(first, Mapping)
    for name in first["properties"]:
        if all(
            isinstance(node, Mapping)
            and name in (node.get("required") or ())
            and _enum_values(node["properties"].get(name, {})) is not None
            and len(_enum_values(node["properties"][name]) or ()) == 1
            for node in records
        ):
            return str(name)
    return None


def _tag_value(record: Node, tag: str) -> Any:
    assert isinstance(record, Mapping)
    values = _enum_values(record["properties"][tag])
    assert values is not None
    return values[0]


def _without(node: Mapping[str, Any], words: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in words}


def _reaches_records(conversion: Conversion) -> bool:
    return any(isinstance(part, MigrateRecord) for part in conversion_parts(conversion))


def _enum_values(node: Node) -> list[Any] | None:
    if not isinstance(node, Mapping):
        return None
    if "const" in node:
        return [node["const"]]
    values = node.get("enum")
    return list(values) if isinstance(values, list) else None


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first and second else first or second


def collect_field_values(
    schema: Mapping[str, Any], states: Iterable[Any], *, limit: int = SAMPLE_LIMIT
) -> dict[str, list[Any]]:
    """Gather the values stored states hold for each record field, for `diff_schemas`.

    Walks each state along `schema` (the JSON Schema it was saved under) into nested
    records, lists, tuples and maps.

    Args:
        schema: the JSON Schema of the stored states.
        states: stored states as plain values (dicts, lists, scalars).
        limit: the most distinct values kept per field.

    Returns:
        Distinct values per `"Record.field"`.
    """
    document = SchemaReader(schema, label="stored schema")
    found: dict[str, dict[str, Any]] = {}

    def walk(value: Any, node: Node, depth: int) -> None:
        if depth > 64:
            return
        key, node = document.resolve(node)
        if isinstance(node, bool):
            return
        if is_record(node) and isinstance(value, Mapping):
            record = _record_name(document, key, node)
            for name, field_node in node["properties"].items():
                if name in value:
                    bucket = found.setdefault(f"{record}.{name}", {})
                    if len(bucket) < limit:
                        bucket.setdefault(_identity(value[name]), value[name])
                    walk(value[name], field_node, depth + 1)
            return
        members = union_members(node)
        if members is not None:
            for member in members:
                if document.fits(value, member):
                    walk(value, member, depth + 1)
                    return
            return
        if isinstance(value, list | tuple):
            prefix = node.get("prefixItems")
            head = list(prefix) if isinstance(prefix, list) else []
            for i, item in enumerate(value):
                walk(item, head[i] if i < len(head) else node.get("items", True), depth + 1)
        elif isinstance(value, Mapping) and "additionalProperties" in node:
            for item in value.values():
                walk(item, node["additionalProperties"], depth + 1)

    for state in states:
        walk(state, document.root, 0)
    return {key: list(bucket.values()) for key, bucket in found.items()}


def _identity(value: Any) -> str:
    return f"{type(value).__name__}:{value!r}"


__all__ = [
    "ByTag",
    "Change",
    "Conversion",
    "FieldAdded",
    "FieldNowRequired",
    "FieldRemoved",
    "FieldRetyped",
    "ForEachItem",
    "ForEachPosition",
    "ForEachValue",
    "IntToFloat",
    "LikelyRename",
    "MigrateRecord",
    "RecordDiff",
    "SchemaDiff",
    "SetConstant",
    "Unchanged",
    "Undecided",
    "UnlessNone",
    "collect_field_values",
    "conversion_parts",
    "diff_schemas",
]
