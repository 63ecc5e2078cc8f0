"""Tools over stored JSON Schemas: proposed migrations and TypeScript declarations.

Pure functions over JSON Schema documents (plain dicts); nothing here touches a vault.

- `diff_schemas(old, new)`: what changed between two versions of a schema.
- `propose_migration(name, n, n + 1, diff)`: the source of a migration module for it.
- `collect_field_values(schema, states)`: stored values that settle narrowing changes.
- `to_typescript(schema, name)`: TypeScript declarations for the values a schema accepts.

Example:
    >>> from statevault.schema_tools import diff_schemas, propose_migration
    >>> diff = diff_schemas(stored_schema, msgspec.json.schema(OrderV4))  # doctest: +SKIP
    >>> print(propose_migration("order", 3, 4, diff))                     # doctest: +SKIP
"""

from __future__ import annotations

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
    Undecided,
    UnlessNone,
    collect_field_values,
    diff_schemas,
)
from statevault.schema_tools.propose import propose_migration
from statevault.schema_tools.typescript import to_typescript

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
    "diff_schemas",
    "propose_migration",
    "to_typescript",
]
