"""The `sisyphus` console script: a thin Typer layer over the library.

Commands parse options, call the library and render; library errors are SisyphusError
subclasses, printed as one line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys

# faiss and torch spin their OpenMP threads while waiting; next to decoding workers and
# PostgreSQL on the same cores that costs more than it saves.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from typing import Annotated

import typer

from sisyphus_db import __version__
from sisyphus_db.cli import db as db_commands
from sisyphus_db.cli.context import CliState
from sisyphus_db.errors import SisyphusError

INTERRUPTED = 130  # 128 + SIGINT, as shells report it

app = typer.Typer(
    name="sisyphus",
    help="Find rare scenes in huge image and video corpora: key frames, CNN embeddings, "
    "PostgreSQL + pgvector, and a faiss sidecar index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db_commands.app, name="db")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sisyphus-db {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="PostgreSQL URL to use instead of the embedded server "
                     "(default: $SISYPHUS_DATABASE_URL)."),
    ] = None,
    home: Annotated[
        str | None,
        typer.Option("--home", help="Data directory (default: $SISYPHUS_HOME or a per-user data dir)."),
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = CliState(database_url=database_url, home=home)
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _register_commands() -> None:
    # Imported here so each module can import `app`-independent helpers without cycles.
    from sisyphus_db.cli import commands

    commands.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning library errors into one line on stderr."""
    from sisyphus_db.cli.ray_option import normalise_ray_flag

    argv = normalise_ray_flag(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, prog_name="sisyphus", standalone_mode=False)
    except SisyphusError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", INTERRUPTED)
    except KeyboardInterrupt:
        _fail("interrupted: run the same command again to resume", INTERRUPTED)
    except typer.TyperException as exc:
        # Usage errors (bad option values, unknown commands): Typer's own message and exit code 2.
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except BrokenPipeError:
        sys.exit(141)
    except Exception as exc:  # noqa: BLE001 - a bug must still not spill a traceback on users
        if os.environ.get("SISYPHUS_DEBUG"):
            raise
        _fail(f"internal error: {exc.__class__.__name__}: {exc} (set SISYPHUS_DEBUG=1 for a traceback)", 70)
    if code == INTERRUPTED:
        # Typer turns Ctrl-C into a silent exit 130; say what happened. Committed work stays.
        _fail("interrupted: run the same command again to resume", INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    sys.stderr.write(f"Error: {first}\n")
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
