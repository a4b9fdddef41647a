"""Request-scoped helpers the routers share: the server state and who is asking."""

from __future__ import annotations

from fastapi import Request

from sisyphus_db.serve.state import ServerState


def server(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def user(request: Request) -> str:
    """The token's name (or the OS user on loopback): what labels record as created_by."""
    return str(getattr(request.state, "user", None) or request.app.state.local_user)


def page_bounds(offset: int | None, limit: int | None, page: int | None, per_page: int | None,
                default: int, maximum: int) -> tuple[int, int]:
    """offset/limit, or page/per_page (1-based), clamped to sane values."""
    from sisyphus_db.errors import InputError

    if page is not None or per_page is not None:
        if offset is not None or limit is not None:
            raise InputError("use offset/limit or page/per_page, not both")
        size = default if per_page is None else per_page
        if size < 1 or size > maximum:
            raise InputError(f"per_page must be between 1 and {maximum}, got {size}")
        number = 1 if page is None else page
        if number < 1:
            raise InputError(f"page must be at least 1, got {number}")
        return (number - 1) * size, size
    start = 0 if offset is None else offset
    size = default if limit is None else limit
    if start < 0:
        raise InputError(f"offset must be at least 0, got {start}")
    if size < 1 or size > maximum:
        raise InputError(f"limit must be between 1 and {maximum}, got {size}")
    return start, size
