"""Running a chain of migrations on a state in plain form, in memory.

A stored state of version k is brought to version n by the registered steps
k -> k+1 -> ... -> n (or down, n < k, through registered ways back), then converted
into version n's type, which validates it. Nothing is written: the stored state
stays as it was until the next save.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statevault.errors import MigrationError, SchemaValidationError
from statevault.schema.registry import Migration, SchemaRegistry
from statevault.schema.types import Schema


def plan(registry: SchemaRegistry, name: str, source: int, target: int) -> list[Migration]:
    """The steps from `source` to `target`, in order.

    Raises:
        MigrationError: a step is not registered (the message names it).
    """
    direction = 1 if target > source else -1
    steps: list[Migration] = []
    for version in range(source, target, direction):
        step = registry.step(name, version, version + direction)
        if step is None:
            raise MigrationError(
                "no migration is registered for this step",
                schema=name,
                source=source,
                target=target,
                step=(version, version + direction),
                hint=(
                    f"register one with `@vault.migration({name!r}, {version}, "
                    f"{version + direction})` (or `@statevault.migration(...)`)"
                    + (
                        ""
                        if direction > 0
                        else "; a state newer than the code's type needs a way back, or newer code"
                    )
                ),
            )
        steps.append(step)
    return steps


def run_steps(steps: list[Migration], state: Any, *, source: int, target: int) -> Any:
    """Apply `steps` to `state` (which they may change in place); returns the result.

    Raises:
        MigrationError: a step raised, or returned None.
    """
    for step in steps:
        try:
            result = step.function(state)
        except Exception as exc:
            raise MigrationError(
                f"it raised {type(exc).__name__}: {exc}",
                schema=step.name,
                source=source,
                target=target,
                step=(step.source, step.target),
                function=step.label,
            ) from exc
        if result is None:
            raise MigrationError(
                "it returned None; a migration returns the migrated state (it may change "
                "its argument and return it)",
                schema=step.name,
                source=source,
                target=target,
                step=(step.source, step.target),
                function=step.label,
            )
        state = result
    return state


def migrate_plain(
    registry: SchemaRegistry,
    schema: Schema,
    state: Any,
    source: int | None,
    *,
    reload: Callable[[], Any] | None = None,
) -> tuple[Any, Any]:
    """Bring a stored plain state of version `source` to `schema`'s version.

    `state` may be changed in place (it is the caller's freshly loaded copy). A state
    with no recorded version (saved by a handle without a schema) is taken to be of
    `schema`'s version already.

    Only the final result is validated, so a chain costs its steps and one conversion.
    When that fails and types of versions in between are registered, `reload` (a fresh
    copy of the stored state) lets the chain run again, validating after each step,
    to name the first step whose result does not match its version.

    Returns:
        (typed value, plain form of the result before validation).

    Raises:
        MigrationError: a step is missing, raised, returned None, or its result does
            not validate (the first invalid step found is named, else the last step).
        SchemaValidationError: a state stored at `schema`'s version (or unversioned)
            does not validate.
    """
    target = schema.version
    if source is None or source == target:
        if source is None:
            state = schema.to_plain(state)  # unversioned state may hold typed records
        return schema.from_plain(state), state
    steps = plan(registry, schema.name, source, target)
    state = run_steps(steps, state, source=source, target=target)
    try:
        return schema.from_plain(state), state
    except SchemaValidationError as exc:
        failing, problem = steps[-1], exc
        if reload is not None:
            failing, problem = _first_invalid(
                registry, steps, reload(), source=source, target=target, final=exc
            )
        raise MigrationError(
            f"its result does not match version {failing.target}: at {problem.path} expected "
            f"{problem.expected}, found {problem.found}",
            schema=schema.name,
            source=source,
            target=target,
            step=(failing.source, failing.target),
            function=failing.label,
            hint="fix the migration; the stored state is unchanged",
        ) from problem


def _first_invalid(
    registry: SchemaRegistry,
    steps: list[Migration],
    state: Any,
    *,
    source: int,
    target: int,
    final: SchemaValidationError,
) -> tuple[Migration, SchemaValidationError]:
    """The first step whose result fails its version's registered type (slow; on failure)."""
    for step in steps[:-1]:
        state = run_steps([step], state, source=source, target=target)
        between = registry.get(step.name, step.target)
        if between is None:
            continue
        try:
            between.from_plain(between.to_plain(state))
        except SchemaValidationError as exc:
            return step, exc
    return steps[-1], final
