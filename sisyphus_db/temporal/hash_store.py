"""`sisyphus hashes build` and the Hamming queries over `frame_hashes` (pgvector bit(64)).

Frames are hashed from their stored pictures (the key-frame JPEGs, or the image files),
in batches of one transaction each, so a build that is stopped resumes with the frames
that still have no hash. Nearest hashes come from pgvector's HNSW index on
`bit_hamming_ops` (`ORDER BY phash <~> q`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError, MediaError
from sisyphus_db.temporal.hashing import bits_text, phash_bits, text_bits, whash_bits

logger = logging.getLogger(__name__)

BATCH = 256
HASH_KINDS = ("phash", "whash")
Progress = Callable[[str, int, int | None], None]


@dataclass
class HashesReport:
    hashed: int
    failed: int
    total: int
    exact_duplicate_groups: int
    exact_duplicate_frames: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"hashed": self.hashed, "failed": self.failed, "total": self.total,
                "exact_duplicate_groups": self.exact_duplicate_groups,
                "exact_duplicate_frames": self.exact_duplicate_frames, "seconds": round(self.seconds, 3)}


def build_hashes(db: Database, progress: Progress | None = None) -> HashesReport:
    """pHash and wavelet hash of every frame that has none yet."""
    from sisyphus_db.media.images import load_image

    started = time.perf_counter()
    with db.transaction() as conn:
        todo = conn.execute(sa.text("SELECT f.id, f.path FROM frames f WHERE NOT EXISTS "
                                    "(SELECT 1 FROM frame_hashes h WHERE h.frame_id = f.id) ORDER BY f.id")).all()
    if progress is not None:
        progress("hashes: frames", 0, len(todo))
    hashed = failed = 0
    for start in range(0, len(todo), BATCH):
        rows = []
        for frame_id, path in todo[start:start + BATCH]:
            try:
                rgb = load_image(path).rgb
            except MediaError as exc:  # a frame file removed or damaged since ingest: say so, go on
                logger.warning("frame %d: %s", frame_id, exc)
                failed += 1
                continue
            rows.append((int(frame_id), bits_text(phash_bits(rgb)), bits_text(whash_bits(rgb))))
        if rows:
            with db.copy_connection() as conn, conn.cursor() as cursor:
                cursor.executemany("INSERT INTO frame_hashes (frame_id, phash, whash) VALUES "
                                   "(%s, %s::bit(64), %s::bit(64)) ON CONFLICT (frame_id) DO NOTHING", rows)
            hashed += len(rows)
        if progress is not None:
            progress("hashes: frames", len(todo[start:start + BATCH]), len(todo))
    groups, frames = exact_duplicate_counts(db)
    with db.transaction() as conn:
        total = int(conn.execute(sa.text("SELECT count(*) FROM frame_hashes")).scalar_one())
    return HashesReport(hashed, failed, total, groups, frames, time.perf_counter() - started)


def exact_duplicate_counts(db: Database, model_id: int | None = None) -> tuple[int, int]:
    """(groups, frames) of frames whose pixels file is byte-identical (same sha256), optionally of one model."""
    join = "JOIN embeddings e ON e.frame_id = f.id AND e.model_id = :m " if model_id is not None else ""
    with db.transaction() as conn:
        row = conn.execute(sa.text(
            f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT f.sha256, count(*) AS n FROM frames f {join}"
            "GROUP BY f.sha256 HAVING count(*) > 1) d"), {"m": model_id}).one()
    return int(row[0]), int(row[1])


def frame_hash(db: Database, frame_id: int, kind: str = "phash") -> npt.NDArray[np.bool_]:
    _check_kind(kind)
    with db.transaction() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM frames WHERE id = :f"), {"f": frame_id}).scalar()
        text = conn.execute(sa.text(f"SELECT {kind}::text FROM frame_hashes WHERE frame_id = :f"),
                            {"f": frame_id}).scalar()
    if exists is None:
        raise InputError(f"frame {frame_id} does not exist")
    if text is None:
        raise InputError(f"frame {frame_id} has no hash yet: run `sisyphus hashes build`")
    return text_bits(text)


def nearest_hashes(db: Database, bits: npt.NDArray[np.bool_], k: int, kind: str = "phash",
                   ef_search: int = 100) -> list[tuple[int, int]]:
    """(frame id, Hamming distance) of the k nearest hashes, nearest first (HNSW on bit_hamming_ops)."""
    _check_kind(kind)
    with db.copy_connection() as conn:
        with conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(int(ef_search), int(k)) if k <= 1000 else 1000}")
            rows = conn.execute(
                f"SELECT frame_id, ({kind} <~> %(q)s::bit(64))::int AS d FROM frame_hashes "
                f"ORDER BY {kind} <~> %(q)s::bit(64), frame_id LIMIT %(k)s",
                {"q": bits_text(bits), "k": int(k)}, prepare=False).fetchall()
    if not rows:
        raise InputError("no frame has a hash yet: run `sisyphus hashes build`")
    return [(int(r[0]), int(r[1])) for r in rows]


def all_hashes(db: Database, kind: str = "phash", model_id: int | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Every frame's hash (of one model's frames when given), by frame id."""
    _check_kind(kind)
    join = "JOIN embeddings e ON e.frame_id = h.frame_id AND e.model_id = :m " if model_id is not None else ""
    with db.transaction() as conn:
        rows = conn.execute(sa.text(f"SELECT h.frame_id, h.{kind}::text FROM frame_hashes h {join}"
                                    "ORDER BY h.frame_id"), {"m": model_id}).all()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    bits = np.array([text_bits(r[1]) for r in rows], dtype=bool).reshape(len(rows), 64)
    return ids, bits


def _check_kind(kind: str) -> None:
    if kind not in HASH_KINDS:
        raise InputError(f"unknown hash {kind!r}: expected one of {', '.join(HASH_KINDS)}")
