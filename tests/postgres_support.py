"""PostgreSQL for tests: the server's DSN, skipping when it is away, a schema per test."""

from __future__ import annotations

import hashlib
import os
from functools import cache

import pytest

PG_DSN = os.environ.get("STATEVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
"""The database PostgreSQL tests use; each test works in a schema of its own."""


@cache
def _postgres_unreachable() -> str | None:
    """Why the test server cannot be used, or None when it can."""
    try:
        import psycopg  # noqa: PLC0415 - optional dependency
    except ImportError:
        return "psycopg is not installed (`pip install statevault[postgres]`)"
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {PG_DSN} (STATEVAULT_TEST_PG) is unreachable: {first}"
    return None


def require_postgres() -> None:
    """Skip the test when the server is unreachable; under CI=true, fail it instead."""
    reason = _postgres_unreachable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
    pytest.skip(reason)


def pg_schema_for(key: str) -> str:
    """A schema name derived from `key` (a test's tmp path), so reopening finds it again."""
    return "sv_test_" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def pg_url(schema: str, **options: str) -> str:
    """The test DSN with `?schema=` (and other statevault options) added."""
    extra = "&".join(f"{k}={v}" for k, v in {"schema": schema, **options}.items())
    return f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}{extra}"


def drop_pg_schema(schema: str) -> None:
    import psycopg  # noqa: PLC0415 - optional dependency
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
