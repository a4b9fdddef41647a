"""The review web page: `/` (search & review), `/sources/{id}` (timeline), `/static/...`.

Plain HTML + small vanilla JS modules + CSS shipped as package data; no Node build step.
The pages hold no data: their scripts fetch everything from `/api`. When the server
needs a token the page is opened as `/?token=...`; the token is written into the asset
URLs (and an import map, so the modules' own imports carry it too) because a browser
sends no Authorization header for `<script>` or `<link>` loads.
"""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Only these files are served: a request can never name any other file.
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
MODULES = ("common.js", "cards.js", "results.js", "review.js", "source.js")

router = APIRouter(include_in_schema=False)


@cache
def _static_files() -> dict[str, Path]:
    return {path.name: path for path in STATIC_DIR.iterdir()
            if path.is_file() and path.suffix in _MEDIA_TYPES}


@cache
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _render(request: Request, template: str) -> HTMLResponse:
    token = request.query_params.get("token")
    suffix = f"?token={quote(token, safe='')}" if token else ""
    # Keys are the URLs the modules' own relative imports resolve to.
    imports = {f"/static/{name}": f"/static/{name}{suffix}" for name in MODULES}
    # The import map is JSON inside <script>: escape "<" so a token can never close the tag.
    import_map = json.dumps({"imports": imports}).replace("<", "\\u003c")
    page = (_template(template)
            .replace("{{import_map}}", import_map)
            .replace("{{asset_suffix}}", html.escape(suffix, quote=True)))
    # The page itself changes with the code; never let a browser keep a stale copy.
    return HTMLResponse(page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.get("/", response_class=HTMLResponse)
def review_page(request: Request) -> HTMLResponse:
    """Search by image or frame, review the results with the keyboard, label them."""
    return _render(request, "index.html")


@router.get("/sources/{source_id}", response_class=HTMLResponse)
def source_page(request: Request, source_id: int) -> HTMLResponse:
    """One source's key frames on a timeline, marks for a label and a run, the video player."""
    return _render(request, "source.html")


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    path = _static_files().get(name)
    if path is None:
        return JSONResponse({"error": f"no static file named {name!r}"}, status_code=404)
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
