"""The commands besides `db`, each in a module of its own with a `register(app)` function."""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES: tuple[str, ...] = ("ingest", "index", "search", "demo", "evaluate", "label", "discover", "segments",
                                      "hashes", "colour", "audio", "labelling", "imports", "serve", "regions", "bow", "instance_eval",
                                      "activate")


def register(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"sisyphus_db.cli.{name}").register(app)
