"""Upload limits and decoding: a request body over the limit is refused before it is read whole,
and an uploaded query image goes through the same checks as an ingested one
(format, truncation, decompression bombs)."""

from __future__ import annotations

import json
from typing import Any

from sisyphus_db.errors import MediaError
from sisyphus_db.media.images import LoadedImage, decode_image
from sisyphus_db.serve.auth import ASGIApp, Receive, Scope, Send

# Room for the multipart framing and the small form fields next to the file itself.
FORM_OVERHEAD_BYTES = 256 * 1024
UPLOAD_NAME = "the uploaded file"


class UploadTooLarge(MediaError):
    """An upload (or any request body) over --max-upload-mb."""


class BodyLimitMiddleware:
    """413 for a body whose Content-Length is over the limit; a streamed body is cut off at the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limit = max_bytes + FORM_OVERHEAD_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers") or ():
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await _too_large(send, self.max_bytes)
                    return
        # No (honest) Content-Length: read the body here, up to the limit, and replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await _too_large(send, self.max_bytes)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, max_bytes: int) -> None:
    payload = json.dumps({"error": f"the upload is larger than the limit of {_mb(max_bytes)} "
                                   "(sisyphus serve --max-upload-mb)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


def _mb(size: int) -> str:
    return f"{size / (1 << 20):g} MB"


def decode_upload(data: bytes, max_bytes: int) -> LoadedImage:
    """The uploaded bytes as an image, or a one-line MediaError (never a traceback)."""
    if len(data) > max_bytes:
        raise UploadTooLarge(f"the upload is larger than the limit of {_mb(max_bytes)} (sisyphus serve --max-upload-mb)")
    if not data:
        raise MediaError(f"{UPLOAD_NAME} is empty (0 bytes)")
    return decode_image(data, UPLOAD_NAME)
