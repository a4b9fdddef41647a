"""ORM models: the schema that Alembic migrations create, described for SQLAlchemy.

A test compares these models with the migrated database, so the two cannot drift apart.
Embeddings are `halfvec` without a fixed dimension so several models live side by side;
per-model indexes cast to the model's dimension (`vec::halfvec(1280)`) in partial indexes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import BIT, HALFVEC
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    REAL as Real,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SOURCE_KINDS = ("video", "image", "folder")
SOURCE_STATES = ("ingesting", "complete")
KEYFRAME_METHODS = ("image", "scene", "similarity", "iframe", "fps")
INDEX_BACKENDS = ("faiss", "pgvector", "invfile")
INDEX_STATES = ("building", "ready", "failed")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _jsonb() -> Any:
    return mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Source(Base):
    """One input: a video file, a single image file, or a folder of images."""

    __tablename__ = "sources"
    __table_args__ = (
        UniqueConstraint("uri"),
        CheckConstraint(_in("kind", SOURCE_KINDS), name="kind"),
        CheckConstraint(_in("state", SOURCE_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    # 'ingesting' until every frame of the source is stored, so a killed run resumes it.
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default="ingesting")
    fingerprint: Mapped[str | None] = mapped_column(Text)
    duration_seconds: Mapped[float | None] = mapped_column(Double)
    fps: Mapped[float | None] = mapped_column(Double)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    codec: Mapped[str | None] = mapped_column(Text)
    keyframe_method: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[dict[str, Any]] = _jsonb()
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Frame(Base):
    """A kept frame: a key frame of a video, or a still image."""

    __tablename__ = "frames"
    __table_args__ = (
        # Re-ingesting the same content is a no-op: a source's frame is stored once.
        UniqueConstraint("source_id", "frame_index", "path"),
        CheckConstraint("width > 0 AND height > 0", name="positive_size"),
        CheckConstraint("frame_index >= 0", name="frame_index"),
        CheckConstraint("pts_seconds >= 0", name="pts_seconds"),
        CheckConstraint(_in("keyframe_method", KEYFRAME_METHODS), name="keyframe_method"),
        CheckConstraint("length(sha256) = 64", name="sha256"),
        Index(None, "sha256"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    source_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False
    )
    frame_index: Mapped[int] = mapped_column(Integer, nullable=False)
    pts_seconds: Mapped[float] = mapped_column(Double, nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(Text, nullable=False)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    keyframe_method: Mapped[str] = mapped_column(Text, nullable=False)
    keyframe_score: Mapped[float | None] = mapped_column(Real)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()


class Model(Base):
    """An embedding model: name, output dimension, weights checksum and preprocessing."""

    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("name"),
        CheckConstraint("dim > 0 AND dim <= 4000", name="dim"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    weights_sha256: Mapped[str] = mapped_column(Text, nullable=False)
    pooling: Mapped[str | None] = mapped_column(Text)
    preprocessing: Mapped[dict[str, Any]] = _jsonb()
    created_at: Mapped[datetime] = _now()


class Embedding(Base):
    """One frame's L2-normalised vector under one model, stored as halfvec.

    List-partitioned by model (migration 0005): a trigger on `models` creates the model's
    partition `embeddings_m<id>` when the model is registered.
    """

    __tablename__ = "embeddings"
    __table_args__ = (Index(None, "model_id", "frame_id"), {"postgresql_partition_by": "LIST (model_id)"})

    frame_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    vec: Mapped[Any] = mapped_column(HALFVEC(), nullable=False)


class AnnIndex(Base):
    """Registry of derived indexes: which model, which frames (watermark), which file."""

    __tablename__ = "ann_indexes"
    __table_args__ = (
        UniqueConstraint("model_id", "backend", "kind"),
        CheckConstraint(_in("backend", INDEX_BACKENDS), name="backend"),
        CheckConstraint(_in("state", INDEX_STATES), name="state"),
        CheckConstraint("ntotal >= 0", name="ntotal"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(always=True), primary_key=True)
    model_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False
    )
    backend: Mapped[str] = mapped_column(Text, nullable=False)
    # What the index holds: frames (embeddings), regions, segments, bow (inverted file).
    kind: Mapped[str] = mapped_column(Text, nullable=False, server_default="frames")
    factory: Mapped[str] = mapped_column(Text, nullable=False)
    metric: Mapped[str] = mapped_column(Text, nullable=False)
    path: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(Text)
    ntotal: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # The highest frame id the index holds; `index update` adds the frames above it.
    watermark: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    params: Mapped[dict[str, Any]] = _jsonb()
    recall_at_10: Mapped[float | None] = mapped_column(Double)
    build_seconds: Mapped[float | None] = mapped_column(Double)
    device: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default="building")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class SearchRun(Base):
    """One search: what was asked, how, and how long it took."""

    __tablename__ = "search_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("models.id", ondelete="SET NULL")
    )
    query: Mapped[dict[str, Any]] = _jsonb()
    filter: Mapped[str | None] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(Text, nullable=False)
    k: Mapped[int] = mapped_column(Integer, nullable=False)
    params: Mapped[dict[str, Any]] = _jsonb()
    elapsed_ms: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime] = _now()


class SearchResult(Base):
    """One ranked hit of a search run."""

    __tablename__ = "search_results"
    __table_args__ = (CheckConstraint("rank >= 1", name="rank"), Index(None, "frame_id"))

    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("search_runs.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    frame_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), nullable=False
    )
    distance: Mapped[float] = mapped_column(Real, nullable=False)


LABEL_ORIGINS = ("manual", "propagated")


class Label(Base):
    """A label on a frame and its provenance: positive or negative, manual or propagated, from what, by whom."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("frame_id", "label"),
        Index(None, "label"),
        CheckConstraint(_in("origin", LABEL_ORIGINS), name="origin"),
        CheckConstraint("length(label) BETWEEN 1 AND 200", name="label"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    frame_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), nullable=False
    )
    label: Mapped[str] = mapped_column(Text, nullable=False)
    positive: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    origin: Mapped[str] = mapped_column(Text, nullable=False, server_default="manual")
    run_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("search_runs.id", ondelete="SET NULL")
    )
    # The rule a label came from when no run did ("propagate k=10 alpha=0.99", "api").
    rule: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Real)
    created_by: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("current_user"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class LabelScore(Base):
    """A propagated score of a label on a frame (`sisyphus propagate`)."""

    __tablename__ = "label_scores"
    __table_args__ = (Index("ix_label_scores_label_score", "label", "score"),)

    label: Mapped[str] = mapped_column(Text, primary_key=True)
    model_id: Mapped[int] = mapped_column(Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True)
    score: Mapped[float] = mapped_column(Real, nullable=False)
    params: Mapped[dict[str, Any]] = _jsonb()
    computed_at: Mapped[datetime] = _now()


class DuplicateGroup(Base):
    """A frame's near-duplicate group (`sisyphus dedup`); group_id is the representative's frame id."""

    __tablename__ = "duplicate_groups"
    __table_args__ = (Index("ix_duplicate_groups_group_id", "group_id"),)

    model_id: Mapped[int] = mapped_column(Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    # Each dedup method (embedding, phash) keeps its own groups (migration 0006).
    method: Mapped[str] = mapped_column(Text, primary_key=True, server_default="embedding")
    frame_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    is_representative: Mapped[bool] = mapped_column(Boolean, nullable=False)
    distance: Mapped[float] = mapped_column(Real, nullable=False)
    threshold: Mapped[float] = mapped_column(Real, nullable=False)
    computed_at: Mapped[datetime] = _now()


class Cluster(Base):
    """A frame's k-means cluster under a model and its distance to the centroid (`sisyphus cluster`)."""

    __tablename__ = "clusters"
    __table_args__ = (Index("ix_clusters_model_id", "model_id", "cluster"),)

    model_id: Mapped[int] = mapped_column(Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True)
    cluster: Mapped[int] = mapped_column(Integer, nullable=False)
    distance: Mapped[float] = mapped_column(Real, nullable=False)
    computed_at: Mapped[datetime] = _now()


class IngestError(Base):
    """An input that could not be ingested, and why; the run went on without it."""

    __tablename__ = "ingest_errors"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    source_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("sources.id", ondelete="SET NULL")
    )
    stage: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()


class KnnEdge(Base):
    """The k-nearest-neighbour graph of a model's frames (`sisyphus knn-graph`)."""

    __tablename__ = "knn_edges"
    __table_args__ = (CheckConstraint("rank >= 1", name="rank"), Index(None, "neighbor_id"))

    model_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    frame_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    neighbor_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), nullable=False
    )
    distance: Mapped[float] = mapped_column(Real, nullable=False)


class EvalRun(Base):
    """One evaluation (`sisyphus eval ...`): what was measured and on which data."""

    __tablename__ = "eval_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    params: Mapped[dict[str, Any]] = _jsonb()
    created_at: Mapped[datetime] = _now()


class EvalMetric(Base):
    """One figure of an evaluation, e.g. r@10 of exact search on rotate_90 queries."""

    __tablename__ = "eval_metrics"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    backend: Mapped[str] = mapped_column(Text, nullable=False)
    factory: Mapped[str | None] = mapped_column(Text)
    subset: Mapped[str] = mapped_column(Text, nullable=False)
    metric: Mapped[str] = mapped_column(Text, nullable=False)
    value: Mapped[float] = mapped_column(Double, nullable=False)


class Region(Base):
    """A region vector of a frame's feature map (R-MAC-style grid) and its box in pixels (`sisyphus regions build`)."""

    __tablename__ = "regions"
    __table_args__ = (
        # Building regions again adds nothing: a frame's box under a model is stored once.
        UniqueConstraint("model_id", "frame_id", "x0", "y0", "x1", "y1"),
        CheckConstraint("x1 > x0 AND y1 > y0 AND x0 >= 0 AND y0 >= 0", name="box"),
        CheckConstraint("scale >= 1", name="scale"),
        Index(None, "model_id", "frame_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    frame_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), nullable=False)
    model_id: Mapped[int] = mapped_column(Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False)
    scale: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    x0: Mapped[int] = mapped_column(Integer, nullable=False)
    y0: Mapped[int] = mapped_column(Integer, nullable=False)
    x1: Mapped[int] = mapped_column(Integer, nullable=False)
    y1: Mapped[int] = mapped_column(Integer, nullable=False)
    vec: Mapped[Any] = mapped_column(HALFVEC(), nullable=False)


class BowVocabulary(Base):
    """A visual vocabulary of local descriptors: k-means centroids in a registered file (`sisyphus bow build`)."""

    __tablename__ = "bow_vocabularies"
    __table_args__ = (UniqueConstraint("model_id", "layer"), CheckConstraint("words >= 1", name="words"))

    id: Mapped[int] = mapped_column(Integer, Identity(always=True), primary_key=True)
    model_id: Mapped[int] = mapped_column(Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False)
    layer: Mapped[str] = mapped_column(Text, nullable=False)
    words: Mapped[int] = mapped_column(Integer, nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    sha256: Mapped[str] = mapped_column(Text, nullable=False)
    frames_sampled: Mapped[int] = mapped_column(Integer, nullable=False)
    descriptors: Mapped[int] = mapped_column(BigInteger, nullable=False)
    build_seconds: Mapped[float | None] = mapped_column(Double)
    params: Mapped[dict[str, Any]] = _jsonb()
    created_at: Mapped[datetime] = _now()


class BowFrame(Base):
    """A frame's visual-word assignment map: grid_h x grid_w word ids, row-major."""

    __tablename__ = "bow_frames"
    __table_args__ = (CheckConstraint("cardinality(words) = grid_h * grid_w", name="grid"),)

    vocabulary_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("bow_vocabularies.id", ondelete="CASCADE"), primary_key=True
    )
    frame_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True)
    grid_h: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    grid_w: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    words: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)


class Segment(Base):
    """A window of a video pooled from its frames' vectors under a model (`sisyphus segments build`)."""

    __tablename__ = "segments"
    __table_args__ = (
        # Building segments again adds nothing: a window of a source under a model is stored once.
        UniqueConstraint("source_id", "model_id", "start_seconds", "window_seconds"),
        CheckConstraint("end_seconds > start_seconds AND start_seconds >= 0", name="range"),
        CheckConstraint("window_seconds > 0 AND stride_seconds > 0", name="window"),
        CheckConstraint("frame_count >= 1", name="frame_count"),
        Index(None, "model_id", "source_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    source_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False)
    model_id: Mapped[int] = mapped_column(Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False)
    start_seconds: Mapped[float] = mapped_column(Double, nullable=False)
    end_seconds: Mapped[float] = mapped_column(Double, nullable=False)
    window_seconds: Mapped[float] = mapped_column(Double, nullable=False)
    stride_seconds: Mapped[float] = mapped_column(Double, nullable=False)
    frame_count: Mapped[int] = mapped_column(Integer, nullable=False)
    vec: Mapped[Any] = mapped_column(HALFVEC(), nullable=False)
    created_at: Mapped[datetime] = _now()


class FrameHash(Base):
    """A frame's 64-bit perceptual hash and wavelet hash, as pgvector bits (`sisyphus hashes build`)."""

    __tablename__ = "frame_hashes"
    __table_args__ = (
        Index("ix_frame_hashes_phash_hnsw", "phash", postgresql_using="hnsw",
              postgresql_ops={"phash": "bit_hamming_ops"}),
        Index("ix_frame_hashes_whash_hnsw", "whash", postgresql_using="hnsw",
              postgresql_ops={"whash": "bit_hamming_ops"}),
    )

    frame_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True)
    phash: Mapped[Any] = mapped_column(BIT(64), nullable=False)
    whash: Mapped[Any] = mapped_column(BIT(64), nullable=False)
    computed_at: Mapped[datetime] = _now()


class AudioSegment(Base):
    """One second of a video's sound as a vector, and the method that made it (`sisyphus audio build`)."""

    __tablename__ = "audio_segments"
    __table_args__ = (
        UniqueConstraint("source_id", "method", "start_seconds"),
        CheckConstraint("end_seconds > start_seconds AND start_seconds >= 0", name="range"),
        Index(None, "method", "source_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    source_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("sources.id", ondelete="CASCADE"), nullable=False)
    method: Mapped[str] = mapped_column(Text, nullable=False)
    start_seconds: Mapped[float] = mapped_column(Double, nullable=False)
    end_seconds: Mapped[float] = mapped_column(Double, nullable=False)
    vec: Mapped[Any] = mapped_column(HALFVEC(), nullable=False)
    created_at: Mapped[datetime] = _now()
