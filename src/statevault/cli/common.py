"""What every command shares: opening a vault without creating one, and clean errors.

Exit codes: 0 success, 1 damage found (or another failure of the vault), 2 a usage
error or something not found (no such path, not a vault, no such run, checkpoint or
path in the state).
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

import statevault
from statevault.errors import short_digest
from statevault.paths import PathError

if TYPE_CHECKING:
    # rich is imported when something is printed, which keeps `--help` quick.
    from rich.console import Console
    from rich.progress import Progress

EXIT_DAMAGE = 1
EXIT_USAGE = 2

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

VaultArg = Annotated[
    str,
    typer.Argument(
        metavar="PATH",
        help="The vault: a SQLite file (or sqlite:///path) or files:///dir. Never created.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Write JSON to stdout instead of text.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Change nothing; show what would be done.")
]


def new_app(name: str, help_text: str | None = None) -> typer.Typer:
    """A command group configured as every statevault command is."""
    return typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        # Locals of a crashing frame can hold a user's state; a traceback must not print it.
        pretty_exceptions_show_locals=False,
        # Plain help: rich-formatted help costs ~80 ms more at every start.
        rich_markup_mode=None,
    )


def import_user_module(name: str, what: str) -> ModuleType:
    """Import the user's module `name` as `python -m` would find it, or fail naming `what`."""
    # As `python -m` does: modules next to where the command runs are importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        fail(f"cannot import {what}: {exc}")


def stdout() -> Console:
    from rich.console import Console  # noqa: PLC0415

    # Made per call, not at import: a Console binds nothing, but the width and colour
    # checks then see the stream the command writes to now (CliRunner swaps it).
    return Console(highlight=False)


def progress_bar() -> Progress:
    """A progress bar on stderr: shown only on a terminal, and gone when it is done."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn  # noqa: PLC0415

    console = Console(stderr=True)
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one red line (no traceback) on stderr and exit with `code`."""
    from rich.console import Console  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    console = Console(stderr=True, highlight=False)
    text = Text("error: ", style="bold red")
    text.append(message, style="red")
    console.print(text, soft_wrap=True)
    raise typer.Exit(code)


def quote(location: str) -> str:
    """`location` as it would be typed in a shell."""
    return shlex.quote(location)


def _existing_path(location: str) -> tuple[str, bool] | None:
    """The local path a vault URL names, and whether it must be a directory.

    None when the URL is not a local path (an unknown scheme is left to
    `statevault.open`, which explains the schemes it knows).
    """
    if location.startswith("files://"):
        return location[len("files://") :], True
    if location.startswith("sqlite://"):
        return location[len("sqlite://") :], False
    if _SCHEME.match(location) and not os.path.exists(location):
        return None
    return location, False


def check_exists(location: str) -> None:
    """Exit 2 unless `location` already holds something to read.

    `statevault.open` creates a vault where there is none (in a missing path, an empty
    file, an empty directory), so read commands look first and never call it there.
    """
    if location.startswith("memory://"):
        fail(
            "a memory:// vault lives only inside the process that opened it; pass the "
            "path of a SQLite file or files:///dir"
        )
    found = _existing_path(location)
    if found is None:
        return
    path, want_dir = found
    if not path:
        fail(f"{location!r} names no path")
    if not os.path.exists(path):
        kind = "directory" if want_dir else "file"
        fail(f"{path}: no such {kind}. Read commands never create a vault; check the path.")
    if os.path.isdir(path):
        if not os.listdir(path):
            fail(f"{path} is an empty directory, not a vault (nothing was created in it)")
    elif os.path.getsize(path) == 0:
        fail(f"{path} is an empty file, not a vault (nothing was written to it)")


def open_for_reading(location: str) -> statevault.Vault:
    """Open an existing vault, showing records of classes not importable here as
    `statevault.UnknownRecord` instead of failing on them."""
    check_exists(location)
    try:
        return statevault.open(location, unknown_types="keep", create=False)
    except statevault.StateVaultError:
        raise
    except ValueError as exc:  # an unknown URL scheme, or one not available yet
        fail(str(exc))


@contextmanager
def clean_errors(location: str) -> Iterator[None]:
    """Turn statevault's typed errors into one red line and an exit code."""
    where = quote(location)
    try:
        yield
    except statevault.RunNotFound as exc:
        fail(f"no run {exc.run_id!r} in {location}. `statevault runs {where}` lists the runs.")
    except statevault.CheckpointNotFound as exc:
        known = f"its checkpoints are 1..{exc.head}" if exc.head else "it has none"
        fail(
            f"run {exc.run_id!r} has no checkpoint {exc.seq}: {known}. "
            f"`statevault log {where} {quote(exc.run_id)}` lists them."
        )
    except (
        statevault.NotAVaultError,
        statevault.UnsupportedFormatError,
        statevault.InvalidRunIdError,
        PathError,
    ) as exc:
        fail(str(exc))
    except (statevault.SchemaValidationError, statevault.MigrationError) as exc:
        fail(f"{location}: {exc}", EXIT_DAMAGE)
    except statevault.SchemaError as exc:  # an unknown or conflicting schema: usage
        fail(str(exc))
    except statevault.CorruptionError as exc:
        fail(f"{location}: {exc}", EXIT_DAMAGE)
    except statevault.StateVaultError as exc:
        fail(f"{location}: {exc}", EXIT_DAMAGE)


def human_size(n: int) -> str:
    """`812 B`, `4.1 KiB`, `12.3 MiB`."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def short(digest: str) -> str:
    return short_digest(digest)
