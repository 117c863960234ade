"""How the benchmark commands hand their results over: a table on stdout, optionally JSON on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def show_report(table: str, report: dict[str, Any], json_out: Path | None, *, announce: bool = True) -> None:
    """Print `table`; write `report` atomically to `json_out` if given (and say so when `announce`)."""
    from stadapt.fileio import atomic_write_text

    typer.echo(table)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")
        if announce:
            typer.echo(f"wrote {json_out}")
