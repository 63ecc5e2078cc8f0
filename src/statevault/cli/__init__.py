"""The `statevault` command line (`statevault --help`).

It uses statevault's public API only, like any other program would.
"""

from __future__ import annotations


def main() -> None:
    """Run the `statevault` command (the console script's entry point)."""
    # Imported here so that importing this package stays cheap for tools that only
    # need to find the entry point.
    from statevault.cli.app import app  # noqa: PLC0415

    app(prog_name="statevault")
