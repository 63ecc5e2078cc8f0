"""Write the golden vaults of the current format into tests/data/golden/.

Run once per released vault format and files-backend layout (`python
tests/data/make_golden.py`): it writes only the vaults that are missing. Never
regenerate an existing one: they stand for vaults users already have.
`tests/test_golden.py` loads every one of them with the current code.

`--chat` writes vaults of run `chat` alone into `golden/chat/`, for formats whose
golden vaults predate that run: run it with that format's statevault on the path.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import random
import shutil
import sqlite3
import sys
import uuid
from typing import Any

import statevault
from statevault.backends.files import LAYOUT_VERSION


class Status(enum.Enum):
    OPEN = "open"
    PAID = "paid"


@dataclasses.dataclass
class Line:
    sku: str
    qty: int
    price: decimal.Decimal


def register(vault: statevault.Vault) -> None:
    vault.register(Status, name="golden.Status")
    vault.register(Line, name="golden.Line")


def states() -> list[dict[str, Any]]:
    """The states saved, in order, to run `order-42` (and the big one to `big`)."""
    base: dict[str, Any] = {
        "id": "order-42",
        "status": Status.OPEN,
        "lines": [Line("sku-1", 2, decimal.Decimal("9.90"))],
        "created": dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "due": dt.date(2026, 12, 1),
        "ref": uuid.UUID("6f1c2a9e-0000-4000-8000-000000000042"),
        "tags": {"rush", "gift"},
        "coords": (52.52, 13.405),
        "notes": None,
    }
    second = dict(base, status=Status.PAID, notes="paid by card", paid_at=dt.timedelta(hours=3))
    return [base, second]


def big_state() -> dict[str, Any]:
    words = ["order", "ship", "pay", "retry", "wait", "done", "queue", "step", "agent", "tool"]
    messages = [f"{i} " + " ".join(words[(i * 7 + j) % 10] for j in range(30)) for i in range(500)]
    return {"messages": messages}


def tree_state() -> dict[str, Any]:
    """Format 2 and later: a state that exercises every kind of tree node."""
    words = ["alpha", "beta", "gamma", "delta", "order", "ship", "retry", "agent", "tool"]
    return {
        "messages": [
            {
                "i": i,
                "role": "user" if i % 2 else "agent",
                "text": " ".join(words[(i * j) % 9] for j in range(40)),
            }
            for i in range(3000)
        ],
        "blob": bytes(range(256)) * 5000,
        "nested": {"deep": {"rows": [[i, str(i), (i, -i)] for i in range(4000)]}},
        "small": {"step": 7, "tags": {"a", "b"}},
    }


JOURNAL_POLICY = statevault.CheckpointPolicy(records=2)


def journal_history() -> list[tuple[str, dict[str, Any]]]:
    """Vaults written since the files layout 1 golden: run `journal`'s (kind, state) per seq.

    One saved state, then five transactions; the policy folds after every second delta.
    """
    state: dict[str, Any] = {"step": 0, "log": []}
    history: list[tuple[str, dict[str, Any]]] = [("state", state)]
    deltas = 0
    for step in range(1, 6):
        state = {"step": step, "log": [*state["log"], f"entry {step}"]}
        history.append(("delta", state))
        deltas += 1
        if deltas == JOURNAL_POLICY.records:
            history.append(("fold", state))
            deltas = 0
    return history


def write_journal(vault: statevault.Vault) -> None:
    run = vault.run("journal", policy=JOURNAL_POLICY)
    run.save({"step": 0, "log": []})
    for step in range(1, 6):
        with run.transaction(meta={"step": step}) as state:
            state["step"] += 1
            state["log"].append(f"entry {step}")


CHAT_STEPS = 11
CHAT_POLICY = statevault.CheckpointPolicy(records=4)


def chat_message(i: int) -> dict[str, Any]:
    """~9 KB of text that compresses to ~2 KB, so folds store their roots as objects."""
    words = "order ship agent tool retry queue price wait plan send read check fix"
    rnd = random.Random(i)
    return {"i": i, "text": " ".join(rnd.choice(words.split()) for _ in range(1800))}


def chat_states() -> list[dict[str, Any]]:
    """Run `chat`: the state after each step, the first saved whole (seq 1)."""
    state: dict[str, Any] = {"messages": [], "step": 0}
    out = [copy.deepcopy(state)]
    for i in range(1, CHAT_STEPS + 1):
        state["messages"].append(chat_message(i))
        state["step"] = i
        out.append(copy.deepcopy(state))
    return out


def write_chat(vault: statevault.Vault) -> None:
    """Run `chat`: a whole state, then transactions folded every 4 deltas (in format 3
    the deltas before each fold are re-encoded against it)."""
    run = vault.run("chat", policy=CHAT_POLICY)
    run.save(chat_states()[0])
    for i in range(1, CHAT_STEPS + 1):
        with run.transaction() as s:
            s["messages"].append(chat_message(i))
            s["step"] = i


def write(url: str) -> None:
    with statevault.open(url) as vault:
        register(vault)
        run = vault.run("order-42")
        for step, state in enumerate(states(), start=1):
            run.save(state, meta={"step": step})
        vault.run("big").save(big_state(), meta={"note": "stored as an object, not inline"})
        if statevault.FORMAT_VERSION >= 2:
            tree = vault.run("tree")
            state = tree_state()
            tree.save(state)
            state["messages"].append({"i": 3000, "role": "agent", "text": "appended"})
            tree.save(state)
        write_journal(vault)
        if statevault.FORMAT_VERSION >= 3:
            write_chat(vault)


def write_chat_only(url: str) -> None:
    with statevault.open(url) as vault:
        write_chat(vault)


def main() -> None:
    version = statevault.FORMAT_VERSION
    chat_only = "--chat" in sys.argv
    out = pathlib.Path(__file__).parent / "golden"
    if chat_only:
        out = out / "chat"
    write_vault = write_chat_only if chat_only else write
    out.mkdir(exist_ok=True)
    sqlite_path = out / f"v{version}.db"
    # Files vaults are named by their directory layout too, which changes on its own
    # (`v2-files` predates the names and holds layout 1).
    files_path = out / f"v{version}-files-layout{LAYOUT_VERSION}"
    force = "--force" in sys.argv
    written = []
    if force or not sqlite_path.exists():
        sqlite_path.unlink(missing_ok=True)
        write_vault(str(sqlite_path))
        # A checkpointed WAL leaves one self-contained file to commit.
        conn = sqlite3.connect(sqlite_path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        for suffix in ("-wal", "-shm"):
            sqlite_path.with_name(sqlite_path.name + suffix).unlink(missing_ok=True)
        written.append(sqlite_path)
    if force or not files_path.exists():
        shutil.rmtree(files_path, ignore_errors=True)
        write_vault(f"files://{files_path}")
        # Git keeps no empty directories; the files backend must open without them.
        for directory in sorted(files_path.rglob("*"), reverse=True):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        written.append(files_path)
    if not written:
        sys.exit(
            f"golden vaults of format {version} and layout {LAYOUT_VERSION} exist; they "
            f"must not change"
        )
    print("wrote " + " and ".join(map(str, written)))


if __name__ == "__main__":
    main()
