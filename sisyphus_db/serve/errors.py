"""Every error becomes one JSON object `{"error": "..."}` with a 4xx status that says what was wrong.

Library errors (SisyphusError) map by class; validation errors name the field; anything
else is a bug: it is logged with its traceback and answered with a bare 500, never a
traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from sisyphus_db.db.database import first_line
from sisyphus_db.errors import (
    AnnIndexError,
    ConfigError,
    DatabaseError,
    DeviceError,
    InputError,
    MediaError,
    ModelError,
    SisyphusError,
)

logger = logging.getLogger(__name__)


class NotFoundError(InputError):
    """An unknown frame, source, run or label named in the URL."""


class UnavailableError(SisyphusError):
    """Something the server needs is not there (an optional capability, the database)."""


def status_of(exc: SisyphusError) -> int:
    from sisyphus_db.serve.uploads import UploadTooLarge

    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UploadTooLarge):
        return 413
    if isinstance(exc, MediaError):
        return 422  # the upload arrived but is not a usable image
    if isinstance(exc, (InputError, DeviceError)):
        return 400
    if isinstance(exc, (AnnIndexError, ModelError)):
        return 409  # the request is fine, the data is not ready for it (e.g. no index yet)
    if isinstance(exc, (DatabaseError, UnavailableError)):
        return 503
    if isinstance(exc, ConfigError):
        return 500
    return 400


def error_response(status: int, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "form")]
    where = ".".join(location) or "request"
    message = str(first.get("msg", "invalid value"))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}"


def _clean_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only the parts that are safe and useful to echo (never the whole input, never ctx objects).
    return [{"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}
            for error in exc.errors()[:20]]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SisyphusError)
    async def sisyphus_error(request: Request, exc: SisyphusError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, exc)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        return error_response(status, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc), _clean_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(psycopg.DataError)
    @app.exception_handler(sa_exc.DataError)
    async def data_error(request: Request, exc: Exception) -> JSONResponse:
        # A value PostgreSQL cannot take (an id beyond bigint, a malformed number): the input's fault.
        return error_response(400, f"a value is out of range or malformed: {first_line(exc)}")

    @app.exception_handler(sa_exc.OperationalError)
    async def database_gone(request: Request, exc: sa_exc.OperationalError) -> JSONResponse:
        # e.g. PostgreSQL restarted: the pool drops its connections and the next request reconnects.
        logger.warning("database error on %s %s: %s", request.method, request.url.path, first_line(exc))
        return error_response(503, f"the database is unavailable: {first_line(exc)}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")
