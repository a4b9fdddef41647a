"""`sisyphus serve`: the HTTP API and the review page, with the index and the model in memory."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from sisyphus_db.cli.context import settings, stderr_console


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to bind. Anything but loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File of tokens (`TOKEN` or `NAME TOKEN` "
                                                    "per line, mode 0600); generated when missing. Default beyond "
                                                    "loopback: <data dir>/serve-token.")] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest accepted upload.")] = 20.0,
    workers_threads: Annotated[int | None, typer.Option("--workers-threads", min=1, max=256,
                                                        help="Requests handled at once (thread pool and database "
                                                             "connections; default: twice the cores, at least 4).")
                               ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Default model of searches that name none.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Where query images are embedded: auto, cpu or "
                                               "cuda.")] = None,
) -> None:
    """Serve the HTTP API (/api, docs at /docs) and the review page; Ctrl-C stops it."""
    import uvicorn

    from sisyphus_db.db.database import open_database
    from sisyphus_db.serve.app import create_app
    from sisyphus_db.serve.auth import is_loopback, prepare_tokens
    from sisyphus_db.serve.state import DEFAULT_THREADS, ServeConfig, tune_threads

    config_settings = settings(ctx)
    if device is not None:
        from dataclasses import replace

        from sisyphus_db.config import DEVICES
        from sisyphus_db.errors import ConfigError

        if device not in DEVICES:
            raise ConfigError(f"unknown --device {device!r}: expected one of {', '.join(DEVICES)}")
        config_settings = replace(config_settings, device=device)
    tokens = prepare_tokens(host, token_file, config_settings.ensure_home())
    config = ServeConfig(settings=config_settings, host=host, port=port, tokens=tokens, max_upload_mb=max_upload_mb,
                         threads=workers_threads or DEFAULT_THREADS, model=model)
    tune_threads()
    # Open (and for the embedded server, start) the database before binding: a bad URL fails here, in one line.
    db = open_database(config_settings)
    app = create_app(config, db=db)
    # Bind before saying where: a port in use is one clear line, and --port 0 shows the port it got.
    sock = _listen(host, port)
    port = int(sock.getsockname()[1])
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    console = stderr_console()
    if tokens is None:
        console.print(f"sisyphus serve: {url}  (API docs: {url}docs)", markup=False, soft_wrap=True)
    else:
        if tokens.generated:
            console.print(f"a new token was written to {tokens.path} (mode 0600)", markup=False, soft_wrap=True)
        console.print(f"sisyphus serve: {url}?token={tokens.first}  (API docs: {url}docs; API calls send "
                      "`Authorization: Bearer TOKEN`)", markup=False, soft_wrap=True)
    if not is_loopback(host):
        console.print(f"listening on {host}: every request must carry a token", markup=False)
    try:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=5))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # uvicorn shut down cleanly, then re-raised the Ctrl-C it caught: that is a normal stop
    finally:
        sock.close()
        db.dispose()
    console.print("sisyphus serve: stopped", markup=False)
    logging.getLogger(__name__).debug("server stopped")


def _listen(host: str, port: int) -> socket.socket:
    from sisyphus_db.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # With the protocol number (not 0) asyncio sets TCP_NODELAY on every accepted connection;
    # without it, Nagle's algorithm and delayed ACKs add ~40 ms to small requests.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)
