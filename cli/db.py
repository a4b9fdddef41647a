"""`sisyphus db ...`: the embedded server's lifecycle and schema migrations."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sisyphus_db.cli.context import database, emit_json, settings, stdout_console
from sisyphus_db.errors import ConfigError

app = typer.Typer(help="Manage the database: the embedded server and the schema.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _embedded_server(ctx: typer.Context, command: str) -> Any:
    from sisyphus_db.db.embedded import EmbeddedServer

    config = settings(ctx)
    if not config.uses_embedded_database:
        raise ConfigError(
            f"`db {command}` manages the embedded server, but an external database is configured "
            "(SISYPHUS_DATABASE_URL or --database-url)"
        )
    config.ensure_home()
    return EmbeddedServer(config.home)


def _server_document(server: Any) -> dict[str, Any]:
    status = server.status()
    return {
        "running": status.running,
        "pid": status.pid,
        "pgdata": str(status.pgdata),
        "socket_dir": str(status.socket_dir) if status.socket_dir else None,
        "port": status.port,
        "url": server.socket_url() if status.running else None,
        "password_file": str(server.password_path) if status.port else None,
    }


@app.command()
def start(
    ctx: typer.Context,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Also listen on 127.0.0.1:PORT, with password "
                     "authentication, for psql and BI tools."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Start the embedded PostgreSQL (created on first use); it keeps running until `db stop`."""
    server = _embedded_server(ctx, "start")
    server.start(port=port)
    document = _server_document(server)
    if json_output:
        emit_json(document)
        return
    console = stdout_console()
    console.print(f"embedded PostgreSQL running (pid {document['pid']}), data in {document['pgdata']}")
    if port is not None:
        console.print(f"listening on 127.0.0.1:{port}; the password is in {document['password_file']}; "
                      "`sisyphus db url` prints the full URL")


@app.command()
def stop(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL."""
    server = _embedded_server(ctx, "stop")
    stopped = server.stop()
    typer.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


@app.command()
def url(ctx: typer.Context) -> None:
    """Print the database URL (with the password when the embedded server listens on TCP)."""
    config = settings(ctx)
    if not config.uses_embedded_database:
        assert config.database_url is not None
        typer.echo(config.database_url)
        return
    server = _embedded_server(ctx, "url")
    server.start()
    typer.echo(server.tcp_url() or server.socket_url())


@app.command()
def status(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Show the server, the schema revision and what the database holds."""
    from sisyphus_db.db import migrate
    from sisyphus_db.db.database import redact
    from sisyphus_db.store.stats import database_counts

    config = settings(ctx)
    document: dict[str, Any] = {"embedded": config.uses_embedded_database}
    if config.uses_embedded_database:
        server = _embedded_server(ctx, "status")
        server.start()
        document["server"] = _server_document(server)
    with database(ctx, require_schema=False) as db:
        current = migrate.current_revision(db)
        head = migrate.head_revision()
        document.update(
            url=redact(db.url),
            schema_revision=current,
            code_revision=head,
            schema_up_to_date=current == head,
            counts=database_counts(db) if current == head else None,
        )
    if json_output:
        emit_json(document)
        return
    console = stdout_console()
    console.print(f"database: {document['url']}" + (" (embedded)" if document["embedded"] else ""))
    state = "up to date" if document["schema_up_to_date"] else "needs `sisyphus db upgrade`"
    console.print(f"schema: revision {current or 'none'} (code: {head}) - {state}")
    if document["counts"]:
        console.print(", ".join(f"{name}: {count}" for name, count in document["counts"].items()))


@app.command()
def upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the schema up (to the newest revision by default)."""
    from sisyphus_db.db import migrate

    with database(ctx, require_schema=False) as db:
        before = migrate.current_revision(db)
        migrate.upgrade(db, revision)
        after = migrate.current_revision(db)
    typer.echo(f"schema at revision {after}" + ("" if before != after else " (already)"))


@app.command()
def downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision: `base`, `-1` or a revision id.")],
) -> None:
    """Migrate the schema down. `base` drops every sisyphus table."""
    from sisyphus_db.db import migrate

    with database(ctx, require_schema=False) as db:
        migrate.downgrade(db, revision)
        after = migrate.current_revision(db)
    typer.echo(f"schema at revision {after or 'base'}")
