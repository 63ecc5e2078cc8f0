"""Generated expressions are laid out exactly as `ruff format` lays them out."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proposals import ruff

from statevault.schema_tools.layout import (
    Atom,
    Call,
    Comprehension,
    Conditional,
    Display,
    Expr,
    Prefixed,
    flat,
    statement,
)

# Field and record names up to 30 characters: longer ones make ruff split subscripts,
# which the layout does not try to match.
NAMES = st.integers(1, 30).map(lambda n: "s" + "x" * (n - 1))


def subscripts() -> st.SearchStrategy[str]:
    """What a generated statement assigns to: a field of the state or of a record."""
    return st.tuples(st.sampled_from(["state", "record"]), NAMES).map(
        lambda parts: f'{parts[0]}["{parts[1]}"]'
    )


def expressions(source: str, depth: int) -> st.SearchStrategy[Expr]:
    """The expressions propose_migration writes, converting the value `source`."""
    leaf: st.SearchStrategy[Expr] = st.just(Atom(source)) | NAMES.map(
        lambda function: Call(f"_migrate_{function}", Atom(source))
    )
    if depth >= 3:
        return leaf
    item = f"item{depth or ''}"
    return st.one_of(
        leaf,
        expressions(item, depth + 1).map(
            lambda inner: Comprehension("[", inner, f"for {item} in {source}", "]")
        ),
        expressions(f"value{depth or ''}", depth + 1).map(
            lambda inner: Comprehension(
                "{",
                Prefixed(f"key{depth or ''}: ", inner),
                f"for key{depth or ''}, value{depth or ''} in {source}.items()",
                "}",
            )
        ),
        st.lists(expressions(f"{source}[0]", depth + 1), min_size=1, max_size=3).map(
            lambda parts: Display((*parts, Atom(f"*{source}[{len(parts)}:]")))
        ),
        st.lists(NAMES, min_size=1, max_size=3).map(
            lambda functions: Conditional(
                tuple(
                    (Call(f"_migrate_{f}", Atom(source)), f'{source}["type"] == "{f}"')
                    for f in functions
                ),
                Atom(source),
            )
        ),
        expressions(source, depth + 1).map(
            lambda inner: (
                Conditional(((Atom("None"), f"{source} is None"),), inner)
                if not isinstance(inner, Conditional)
                else Conditional(
                    ((Atom("None"), f"{source} is None"), *inner.branches), inner.otherwise
                )
            )
        ),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=subscripts(), data=st.data(), nested=st.booleans())
def test_layout_matches_ruff_format(source: str, data: st.DataObject, nested: bool) -> None:
    expr = data.draw(expressions(source, 0))
    indent = "        " if nested else "    "
    head = f"{source} = "
    guard = ["    if True:"] if nested else []
    ours = "\n".join(["def f():", *guard, *statement(head, expr, indent=indent)]) + "\n"
    one_line = "\n".join(["def f():", *guard, f"{indent}{head}{flat(expr)}"]) + "\n"
    formatted = ruff("format", source=one_line)
    assert formatted.returncode == 0, formatted.stderr
    assert ours == formatted.stdout
