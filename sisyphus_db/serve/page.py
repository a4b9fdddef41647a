"""The review web page: `/` (search & review), `/sources/{id}` (timeline), `/static/...`.

Plain HTML + a small vanilla JS module + CSS shipped as package data; no Node build step.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
