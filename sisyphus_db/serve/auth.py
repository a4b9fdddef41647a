"""The token rule: loopback needs no credentials; any other bind needs a token on every request.

The token file holds one token per line, optionally preceded by a name (`alice 3f9c...`);
a token's name is what labels made through the API record as `created_by` (a bare token
is named "token"). A missing file is generated with one random token, mode 0600, as
Jupyter does. A request carries the token as `Authorization: Bearer TOKEN` or, for URLs a
browser loads by itself (the page, images, the video), as `?token=TOKEN`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from sisyphus_db.errors import ConfigError

TOKEN_FILE_NAME = "serve-token"
DEFAULT_TOKEN_NAME = "token"
MIN_TOKEN_LENGTH = 16
# Reachable without a token even when one is required: says only that the process is up.
OPEN_PATHS = frozenset({"/healthz"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Tokens:
    """token -> name; `generated` is the token written just now (printed once at start-up)."""

    names: dict[str, str]
    path: Path
    generated: str | None = None

    def name_of(self, token: str | None) -> str | None:
        if not token:
            return None
        for known, name in self.names.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return name
        return None

    @property
    def first(self) -> str:
        return next(iter(self.names))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_tokens(path: Path) -> Tokens:
    """Tokens from a file that only its owner can read; one clear line when it is unusable."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"token file {path} does not exist") from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"token file {path} can be read by other users: run `chmod 600 {path}`")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"token file {path} cannot be read: {exc}") from None
    names: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) > 2:
            raise ConfigError(f"token file {path}, line {number}: expected `TOKEN` or `NAME TOKEN`")
        name, token = (DEFAULT_TOKEN_NAME, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"token file {path}, line {number}: a token needs at least {MIN_TOKEN_LENGTH} characters")
        names[token] = name
    if not names:
        raise ConfigError(f"token file {path} holds no token")
    return Tokens(names, path)


def generate_token_file(path: Path) -> Tokens:
    """A new random token in a new 0600 file (never overwrites one)."""
    token = secrets.token_hex(24)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create token file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"{DEFAULT_TOKEN_NAME} {token}\n")
    return Tokens({token: DEFAULT_TOKEN_NAME}, path, generated=token)


def prepare_tokens(host: str, token_file: Path | None, home: Path) -> Tokens | None:
    """No tokens on loopback unless a file is given; elsewhere the file's tokens, generated if missing."""
    if token_file is None and is_loopback(host):
        return None
    path = token_file if token_file is not None else home / TOKEN_FILE_NAME
    if not path.exists():
        return generate_token_file(path)
    return read_tokens(path)


def request_token(scope: Scope) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


class TokenMiddleware:
    """Refuses (401, JSON) every request without a known token; records the token's name in the scope."""

    def __init__(self, app: ASGIApp, tokens: Tokens | None, local_user: str) -> None:
        self.app = app
        self.tokens = tokens
        self.local_user = local_user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if self.tokens is None:
            state["user"] = self.local_user
            await self.app(scope, receive, send)
            return
        name = self.tokens.name_of(request_token(scope))
        if name is None and scope.get("path") not in OPEN_PATHS:
            await _json(send, 401, {"error": "this server needs a token: send `Authorization: Bearer TOKEN` "
                                             "or add ?token=TOKEN to the URL"},
                        {b"www-authenticate": b"Bearer"})
            return
        state["user"] = name or "anonymous"
        await self.app(scope, receive, send)


async def _json(send: Send, status: int, body: dict[str, Any], headers: dict[bytes, bytes] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
           *(headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
