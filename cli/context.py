"""What every command shares: settings from global options, opening the database, output."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from sisyphus_db.config import Settings

if TYPE_CHECKING:
    from sisyphus_db.db.database import Database


@dataclass
class CliState:
    database_url: str | None = None
    home: str | None = None
    device: str | None = None

    def settings(self) -> Settings:
        return Settings.from_env(database_url=self.database_url, home=self.home, device=self.device)


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def settings(ctx: typer.Context) -> Settings:
    return state(ctx).settings()


@contextlib.contextmanager
def database(ctx: typer.Context, *, require_schema: bool = True) -> Iterator[Database]:
    """The checked database for one command, its connections closed when the command ends."""
    from sisyphus_db.db.database import open_database

    db = open_database(settings(ctx), require_schema=require_schema)
    try:
        yield db
    finally:
        db.dispose()


def stderr_console() -> Console:
    return Console(stderr=True)


def stdout_console() -> Console:
    console = Console()
    # Piped output (files, CI logs) gets a wide page instead of Rich's 80 columns.
    return console if console.is_terminal else Console(width=200)


def emit_json(document: Any) -> None:
    """The one JSON document a `--json` command prints on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()
