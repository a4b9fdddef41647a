"""`sisyphus audio build` and sound search over `audio_segments` (one vector per second of a video).

The method is VGGish (`temporal.vggish`, one vector per 0.96 s) when SISYPHUS_VGGISH_WEIGHTS
names a local weights file, else the log-mel baseline; each is stored under its own name.

Videos without an audio track are counted and skipped. Search is exact (a scan ordered by
cosine distance in PostgreSQL): a second of sound is 128 numbers, so even 1,000 hours are
3.6 M rows that pgvector scans in seconds; an HNSW index can be added like the frames'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from pgvector import HalfVector

from sisyphus_db.db.database import Database
from sisyphus_db.db.models import SearchResult, SearchRun
from sisyphus_db.errors import InputError, MediaError, ModelError
from sisyphus_db.temporal.audio_features import (
    METHOD,
    AudioSeconds,
    NoAudioError,
    decode_audio,
    has_audio,
    second_vectors,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
METHODS = ("auto", "vggish", "logmel")


@dataclass(frozen=True)
class SoundMethod:
    """How sound becomes vectors: the stored method name, the embedding function, the step in seconds."""

    name: str
    embed: Callable[[npt.NDArray[np.float32]], AudioSeconds]
    step: float


def sound_method(method: str = "auto") -> SoundMethod:
    """`vggish` when SISYPHUS_VGGISH_WEIGHTS names a loadable file (auto) or when asked, else the log-mel baseline.

    A variable that is set but names a missing or wrong file is an error, never a silent fallback."""
    from sisyphus_db.temporal import vggish

    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    path = vggish.weights_from_env()
    if method == "logmel" or (method == "auto" and path is None):
        return SoundMethod(METHOD, second_vectors, 1.0)
    if path is None:
        raise ModelError(f"--method vggish needs {vggish.WEIGHTS_ENV} to name a local weights file "
                         "(never downloaded)")
    model = vggish.load_vggish(path)
    return SoundMethod(vggish.METHOD, lambda samples: vggish.embed(model, samples), vggish.EXAMPLE_SECONDS)


@dataclass
class AudioReport:
    method: str
    videos: int
    without_audio: int
    failed: int
    seconds_added: int
    total: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "videos": self.videos, "without_audio": self.without_audio,
                "failed": self.failed, "seconds_added": self.seconds_added, "total": self.total,
                "elapsed_seconds": round(self.seconds, 3)}


def build_audio(db: Database, progress: Progress | None = None,
                method: str | SoundMethod = "auto") -> AudioReport:
    """Per-second (VGGish: per 0.96 s) sound vectors of every complete video that has none of that method yet."""
    started = time.perf_counter()
    chosen = method if isinstance(method, SoundMethod) else sound_method(method)
    with db.transaction() as conn:
        todo = conn.execute(sa.text(
            "SELECT s.id, s.uri FROM sources s WHERE s.kind = 'video' AND s.state = 'complete' AND NOT EXISTS "
            "(SELECT 1 FROM audio_segments a WHERE a.source_id = s.id AND a.method = :m) ORDER BY s.id"),
            {"m": chosen.name}).all()
    if progress is not None:
        progress("audio: videos", 0, len(todo))
    silent = failed = added = 0
    for source_id, uri in todo:
        try:
            seconds = chosen.embed(decode_audio(uri))
        except NoAudioError:
            silent += 1
            seconds = None
        except MediaError as exc:
            logger.warning("source %d: %s", source_id, exc)
            failed += 1
            seconds = None
        if seconds is not None and seconds.starts.size:
            with db.copy_connection() as conn, conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO audio_segments (source_id, method, start_seconds, end_seconds, vec) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source_id, method, start_seconds) DO NOTHING",
                    [(source_id, chosen.name, float(s), float(s) + chosen.step, HalfVector(v))
                     for s, v in zip(seconds.starts, seconds.vectors, strict=True)])
            added += int(seconds.starts.size)
        if progress is not None:
            progress("audio: videos", 1, len(todo))
    with db.transaction() as conn:
        total = int(conn.execute(sa.text("SELECT count(*) FROM audio_segments WHERE method = :m"),
                                 {"m": chosen.name}).scalar_one())
    return AudioReport(chosen.name, len(todo), silent, failed, added, total, time.perf_counter() - started)


def vector_of_frame(db: Database, frame_id: int, method: str = METHOD) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """The sound vector of the second a frame was shown in."""
    with db.transaction() as conn:
        frame = conn.execute(sa.text("SELECT f.source_id, f.pts_seconds, s.uri, s.kind FROM frames f "
                                     "JOIN sources s ON s.id = f.source_id WHERE f.id = :f"), {"f": frame_id}).one_or_none()
        if frame is None:
            raise InputError(f"frame {frame_id} does not exist")
        if frame.kind != "video":
            raise NoAudioError(f"frame {frame_id} is a still image ({frame.uri}): it has no sound")
        row = conn.execute(sa.text(
            "SELECT vec, start_seconds FROM audio_segments WHERE source_id = :s AND method = :m "
            "ORDER BY abs((start_seconds + end_seconds) / 2 - :t) LIMIT 1"),
            {"s": frame.source_id, "m": method, "t": frame.pts_seconds}).one_or_none()
    if row is None:
        if not has_audio(frame.uri):
            raise NoAudioError(f"frame {frame_id} comes from {frame.uri}, which has no audio track")
        raise InputError(f"the sound of {frame.uri} is not analysed yet: run `sisyphus audio build`")
    vec = HalfVector.from_text(row.vec) if isinstance(row.vec, str) else row.vec
    return (np.asarray(vec.to_numpy(), dtype=np.float32),
            {"kind": "audio-of", "frame_id": frame_id, "source_id": frame.source_id, "second": row.start_seconds})


def vector_of_file(path: Path, chosen: SoundMethod | None = None) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """A sound file's (or a video's) mean second vector."""
    chosen = chosen or SoundMethod(METHOD, second_vectors, 1.0)
    seconds = chosen.embed(decode_audio(path))
    if seconds.starts.size == 0:
        raise InputError(f"{path}: less than half a second of sound" if chosen.name == METHOD
                         else f"{path}: less than {chosen.step:g} s of sound (one VGGish example)")
    mean = seconds.vectors.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32), {
        "kind": "audio", "path": str(Path(path).resolve()), "seconds": int(seconds.starts.size)}


@dataclass
class AudioOutcome:
    run_id: int | None
    hits: list[dict[str, Any]]
    elapsed_ms: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "backend": "audio", "params": self.params,
                "elapsed_ms": round(self.elapsed_ms, 3), "results": self.hits}


def search_sound(db: Database, *, frame_id: int | None, path: Path | None, k: int = 10, save: bool = True,
                 name: str | None = None, method: str = "auto") -> AudioOutcome:
    """The seconds of stored videos that sound most like the query (cosine distance, exact)."""
    if (frame_id is None) == (path is None):
        raise InputError("give one of --audio-of FRAME_ID and --audio FILE")
    if not 1 <= k <= 1000:
        raise InputError(f"--k must be between 1 and 1000, got {k}")
    started = time.perf_counter()
    chosen = sound_method(method)
    vector, query = (vector_of_frame(db, frame_id, chosen.name) if frame_id is not None
                     else vector_of_file(Path(str(path)), chosen))
    with db.copy_connection() as conn:
        rows = conn.execute(
            "SELECT a.source_id, s.uri, a.start_seconds, a.end_seconds, (a.vec <=> %(q)s)::real AS d, "
            "(SELECT f.id FROM frames f WHERE f.source_id = a.source_id "
            " ORDER BY abs(f.pts_seconds - a.start_seconds), f.id LIMIT 1) "
            "FROM audio_segments a JOIN sources s ON s.id = a.source_id WHERE a.method = %(m)s "
            "ORDER BY a.vec <=> %(q)s, a.id LIMIT %(k)s", {"q": HalfVector(vector), "m": chosen.name, "k": int(k)},
            prepare=False).fetchall()
    if not rows:
        raise InputError("no video's sound is analysed yet: run `sisyphus audio build`")
    hits = [{"rank": rank, "source_id": int(r[0]), "source_uri": r[1], "start_seconds": float(r[2]),
             "end_seconds": float(r[3]), "distance": float(r[4]), "frame_id": r[5]}
            for rank, r in enumerate(rows, start=1)]
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    params = {"k": k, "method": chosen.name, "metric": "cosine"}
    run_id = None
    if save:
        with db.transaction() as conn:
            run_id = int(conn.execute(sa.insert(SearchRun).values(
                name=name, model_id=None, query=query, filter=None, backend="audio", k=k,
                params={**params, "seconds": [{key: h[key] for key in ("rank", "source_id", "start_seconds",
                                                                        "end_seconds")} for h in hits]},
                elapsed_ms=elapsed_ms).returning(SearchRun.id)).scalar_one())
            stored = [{"run_id": run_id, "rank": h["rank"], "frame_id": h["frame_id"], "distance": h["distance"]}
                      for h in hits if h["frame_id"] is not None]
            if stored:
                conn.execute(sa.insert(SearchResult), stored)
    return AudioOutcome(run_id, hits, elapsed_ms, params)
