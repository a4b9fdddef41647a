"""Request and response models of the HTTP API (they make /openapi.json and /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sisyphus_db.search.engine import MAX_K

Backend = Literal["faiss", "pgvector", "exact"]
MAX_ID = 2**63 - 1  # ids are bigint


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterCondition(Strict):
    """One condition; a filter is a list of them, all of which must hold."""

    field: str = Field(examples=["sources.tags.city"])
    op: str = Field(examples=["="], description="=, !=, <, <=, >, >=, in, between, is_null")
    value: Any = Field(default=None, examples=["berlin"])


class SearchBody(Strict):
    """Search by a stored frame, a vector or an ImageNet class name: exactly one of them."""

    frame_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    vector: list[float] | None = None
    text: str | None = Field(default=None, min_length=1, max_length=200)
    k: int = Field(default=10, ge=1, le=MAX_K)
    filters: list[Any] = Field(default_factory=list, description="a list of FilterCondition objects")
    per_source: int | None = Field(default=None, ge=1)
    backend: Backend = "faiss"
    exclude_source_of_query: bool = Field(default=False, description="drop results from the query frame's own source")
    model: str | None = None
    nprobe: int | None = Field(default=None, ge=1)
    save: bool = True
    name: str | None = Field(default=None, max_length=200)


class LabelBody(Strict):
    name: str = Field(min_length=1, max_length=200)
    frame_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=100_000)
    positive: bool = True
    run_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class DiscoverBody(Strict):
    k: int = Field(default=10, ge=1, le=MAX_K)
    per_source: int | None = Field(default=None, ge=1)
    filters: list[Any] = Field(default_factory=list)
    method: str | None = None
    model: str | None = None


class LabelMark(BaseModel):
    name: str
    positive: bool
    origin: str
    score: float | None = None


class ResultItem(BaseModel):
    rank: int
    frame_id: int
    distance: float
    path: str
    source_id: int
    source_uri: str
    source_kind: str | None = Field(default=None, description="video, image or folder (the page shows times for videos)")
    pts_seconds: float
    frame_index: int
    width: int
    height: int
    thumbnail_url: str
    image_url: str
    labels: list[LabelMark]
    score: float | None = None


class SearchResponse(BaseModel):
    run_id: int | None
    elapsed_ms: float
    search_ms: float
    backend: str
    model: str
    total: int
    warnings: list[str]
    results: list[ResultItem]


class ErrorResponse(BaseModel):
    error: str
    detail: Any | None = None


class Page(BaseModel):
    total: int
    offset: int
    limit: int


class SourceItem(BaseModel):
    id: int
    uri: str
    kind: str
    state: str
    duration_seconds: float | None
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None
    keyframe_method: str | None
    tags: dict[str, Any]
    created_at: str
    frames: int
    video_url: str | None
    first_frame_id: int | None = None
    thumbnail_url: str | None = None


class SourcePage(Page):
    sources: list[SourceItem]


class TimelineFrame(BaseModel):
    id: int
    frame_index: int
    pts_seconds: float
    width: int
    height: int
    keyframe_method: str
    keyframe_score: float | None
    thumbnail_url: str
    image_url: str
    labels: list[LabelMark]


class TimelinePage(Page):
    source_id: int
    frames: list[TimelineFrame]


class FrameDetail(BaseModel):
    id: int
    source_id: int
    source_uri: str
    source_kind: str
    frame_index: int
    pts_seconds: float
    path: str
    width: int
    height: int
    sha256: str
    captured_at: str | None
    keyframe_method: str
    keyframe_score: float | None
    metadata: dict[str, Any]
    tags: dict[str, Any]
    labels: list[LabelMark]
    thumbnail_url: str
    image_url: str
    video_url: str | None


class RunItem(BaseModel):
    id: int
    name: str | None
    model: str | None
    query: dict[str, Any]
    filter: str | None
    backend: str
    k: int
    params: dict[str, Any]
    elapsed_ms: float | None
    created_at: str
    results: int


class RunPage(Page):
    runs: list[RunItem]


class RunDetail(Page):
    run: RunItem
    run_id: int
    results: list[ResultItem]
