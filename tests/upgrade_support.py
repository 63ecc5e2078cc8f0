"""Old-format vaults for the upgrade tests: golden copies, vaults made in an old
format on any backend, and what a vault's history looks like to compare it."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import sys
from typing import Any

import statevault
from postgres_support import pg_url
from statevault.backends.base import initial_meta

DATA = pathlib.Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
import make_golden  # noqa: E402

NEWEST = statevault.FORMAT_VERSION


def format_of(golden: pathlib.Path) -> int:
    """The vault format a golden vault was written in, from its name (`v2-files`)."""
    return int(golden.name[1:].split("-")[0].split(".")[0])


OLD_GOLDEN = sorted(
    p
    for p in [*(DATA / "golden").glob("v*"), *(DATA / "golden" / "chat").glob("v*")]
    if format_of(p) < NEWEST
)
"""Every golden vault of a format older than the newest."""


def layout_steps(golden: pathlib.Path) -> list[str]:
    """The backend layout steps an upgrade of a golden vault does before the format's."""
    # A SQLite file of before the catalog of heads gains it first (SQLite layout 2); a
    # directory vault of before segments moves its records into them (files layout 2).
    if golden.suffix == ".db":
        return ["SQLite layout 1 -> 2"]
    return ["files layout 1 -> 2"] if golden.is_dir() else []


def golden_id(path: pathlib.Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.parent.name == "chat" else path.name


def copy_golden(golden: pathlib.Path, tmp_path: pathlib.Path) -> str:
    """A copy of a golden vault (tests never touch the originals); returns its URL."""
    copy = tmp_path / golden.name
    if golden.is_dir():
        shutil.copytree(golden, copy)
        return f"files://{copy}"
    shutil.copy(golden, copy)
    return str(copy)


History = dict[str, list[tuple[int, str, str, dict[str, Any], Any]]]


def history(vault: statevault.Vault) -> History:
    """Every checkpoint of every run: (seq, kind, record hash, meta, the state it loads)."""
    make_golden.register(vault)
    out: History = {}
    for run_id in vault.runs():
        run = vault.run(run_id)
        out[run_id] = [
            (c.seq, c.kind, c.record_hash, c.meta, run.load(at=c.seq))
            for c in reversed(run.checkpoints())
        ]
    return out


def file_bytes(root: pathlib.Path) -> dict[str, str]:
    """The hash of every file under `root`, by path."""
    found = {}
    for where, _, names in os.walk(root):
        for name in names:
            path = pathlib.Path(where, name)
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def fill(vault: statevault.Vault) -> None:
    """What the golden vaults hold, written in the vault's own (older) format."""
    make_golden.register(vault)
    run = vault.run("order-42")
    for step, state in enumerate(make_golden.states(), start=1):
        run.save(state, meta={"step": step})
    vault.run("big").save(make_golden.big_state())
    tree = vault.run("tree")
    state = make_golden.tree_state()
    tree.save(state)
    state["messages"].append({"i": 3000, "role": "agent", "text": "appended"})
    tree.save(state)
    make_golden.write_journal(vault)
    make_golden.write_chat(vault)


def old_vault_url(kind: str, version: int, tmp_path: pathlib.Path, pg_schema: str = "") -> str:
    """A new, empty vault of backend `kind` in format `version`.

    The engine writes the format its vault's metadata names, so a backend created with
    old metadata makes an old vault, which `statevault.open` then reads and writes in
    that format (as it does golden vaults).
    """
    meta = initial_meta(version, {"vault_id": b"old"})
    if kind == "postgres":
        from statevault.backends.postgres import PostgresBackend  # noqa: PLC0415

        url = pg_url(pg_schema)
        PostgresBackend(url, initial_meta=meta).close()
        return url
    if kind == "files":
        from statevault.backends.files import FilesBackend  # noqa: PLC0415

        FilesBackend(str(tmp_path / "vault"), initial_meta=meta).close()
        return f"files://{tmp_path / 'vault'}"
    from statevault.backends.sqlite import SqliteBackend  # noqa: PLC0415

    SqliteBackend(str(tmp_path / "vault.db"), initial_meta=meta).close()
    return str(tmp_path / "vault.db")
