"""`sisyphus bow build`: vocabulary (once), assignment maps of new frames, the inverted file.

Resumable and idempotent: the vocabulary of (model, layer) is kept unless --rebuild or
another --words is asked; frames that already have an assignment map are skipped; the
inverted file is rebuilt from `bow_frames` (the truth) and registered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from sisyphus_db.db.database import Database, file_slug
from sisyphus_db.db.models import BowFrame, BowVocabulary
from sisyphus_db.errors import InputError, MediaError
from sisyphus_db.local.bow.invfile import build_inverted_file, write_inverted_file
from sisyphus_db.local.bow.vocabulary import (
    check_layer,
    default_words,
    map_descriptors,
    read_vocabulary,
    train_vocabulary,
    write_vocabulary,
)
from sisyphus_db.local.regions import PendingFrame
from sisyphus_db.store.indexes import save_index
from sisyphus_db.store.registry import StoredModel

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
DEFAULT_SAMPLE_DESCRIPTORS = 50_000  # 256 MB of 1280-d float32 while the vocabulary trains
POSITIONS_PER_FRAME = 64             # sampled positions of each sampled frame: more frames, same memory
DEFAULT_BATCH_SIZE = 16


@dataclass
class VocabularyRow:
    id: int
    words: int
    path: str
    sha256: str
    layer: str


@dataclass
class BowReport:
    model: str
    layer: str
    words: int
    trained: bool
    descriptors: int
    frames_sampled: int
    frames_assigned: int
    frames_indexed: int
    seconds: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "layer": self.layer, "words": self.words, "trained": self.trained,
                "descriptors": self.descriptors, "frames_sampled": self.frames_sampled,
                "frames_assigned": self.frames_assigned, "frames_indexed": self.frames_indexed,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def find_vocabulary(db: Database, model: StoredModel, layer: str | None = None) -> VocabularyRow | None:
    query = sa.select(BowVocabulary.id, BowVocabulary.words, BowVocabulary.path, BowVocabulary.sha256,
                      BowVocabulary.layer).where(BowVocabulary.model_id == model.id).order_by(BowVocabulary.id.desc())
    if layer is not None:
        query = query.where(BowVocabulary.layer == layer)
    with db.transaction() as conn:
        row = conn.execute(query).first()
    return None if row is None else VocabularyRow(int(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4]))


def _frames(db: Database, model: StoredModel, vocabulary_id: int | None = None) -> list[PendingFrame]:
    missing = ("AND NOT EXISTS (SELECT 1 FROM bow_frames b WHERE b.vocabulary_id = :v AND b.frame_id = f.id) "
               if vocabulary_id is not None else "")
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT f.id, f.path, f.width, f.height FROM frames f JOIN embeddings e ON e.frame_id = f.id "
            f"AND e.model_id = :m WHERE true {missing}ORDER BY f.id"), {"m": model.id, "v": vocabulary_id}).all()
    return [PendingFrame(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


def _maps(embedder: Any, frames: list[PendingFrame], batch_size: int
          ) -> list[tuple[PendingFrame, npt.NDArray[np.float32]]]:
    from sisyphus_db.local.features import feature_maps
    from sisyphus_db.media.images import load_image

    images, kept = [], []
    for frame in frames:
        try:
            images.append(load_image(frame.path).rgb)
            kept.append(frame)
        except (MediaError, OSError) as exc:
            logger.warning("bow: cannot read frame %d (%s): %s", frame.frame_id, frame.path, exc)
    return list(zip(kept, feature_maps(embedder, images, batch_size=batch_size), strict=True))


def _vocabulary_path(db: Database, model: StoredModel, layer: str, suffix: str) -> Path:
    return db.index_dir / f"{file_slug(model.name)}-{model.id}-bow-{layer}{suffix}"


def build_bow(db: Database, model: StoredModel, *, words: int | None = None, layer: str = "last",
              sample_descriptors: int = DEFAULT_SAMPLE_DESCRIPTORS, batch_size: int = DEFAULT_BATCH_SIZE,
              rebuild: bool = False, device: str = "auto", seed: int = 0,
              progress: Progress | None = None) -> BowReport:
    from sisyphus_db.ann.device import resolve_faiss_device
    from sisyphus_db.embed.embedder import load_embedder

    check_layer(layer)
    # k-means runs where faiss can: on the GPU only with a faiss built for it (refused before any work).
    kmeans_device = resolve_faiss_device(device)
    if words is not None and words < 1:
        raise InputError(f"--words must be at least 1, got {words}")
    if sample_descriptors < 1:
        raise InputError(f"--sample must be at least 1, got {sample_descriptors}")
    seconds: dict[str, float] = {}
    embedder = load_embedder(model.name, device=device)
    frames = _frames(db, model)
    if not frames:
        raise InputError(f"the database holds no {model.name} frames yet: run `sisyphus ingest` first")
    existing = find_vocabulary(db, model, layer)
    trained = existing is None or rebuild or (words is not None and words != existing.words)
    descriptors_used, sampled = 0, 0
    if trained:
        clock = time.perf_counter()
        rng = np.random.default_rng(seed)
        probe = _maps(embedder, frames[:1], 1)
        positions = probe[0][1].shape[1] * probe[0][1].shape[2] if probe else 1
        # Few frames: every position; many: POSITIONS_PER_FRAME of each of more frames, same memory.
        per_frame = min(positions, max(POSITIONS_PER_FRAME, -(-sample_descriptors // len(frames))))
        count = min(len(frames), max(1, -(-sample_descriptors // per_frame)))
        chosen = sorted(rng.choice(len(frames), size=count, replace=False).tolist())
        parts = []
        for start in range(0, len(chosen), batch_size):
            batch = [frames[i] for i in chosen[start:start + batch_size]]
            for _, fmap in _maps(embedder, batch, batch_size):
                rows = map_descriptors(fmap)
                parts.append(rows[rng.choice(rows.shape[0], size=min(per_frame, rows.shape[0]), replace=False)])
            if progress is not None:
                progress("bow: vocabulary sample", len(batch), len(chosen))
        sample = np.concatenate(parts)
        descriptors_used, sampled = int(sample.shape[0]), len(chosen)
        size = words if words is not None else default_words(descriptors_used)
        vocabulary = train_vocabulary(sample, size, device=kmeans_device, seed=seed)
        del sample, parts
        path = _vocabulary_path(db, model, layer, ".npz")
        sha256 = write_vocabulary(vocabulary, path)
        seconds["vocabulary"] = time.perf_counter() - clock
        with db.transaction() as conn:
            # A new vocabulary makes the old assignment maps meaningless: they go with it (cascade).
            conn.execute(sa.delete(BowVocabulary).where(BowVocabulary.model_id == model.id,
                                                        BowVocabulary.layer == layer))
            vocabulary_id = int(conn.execute(sa.insert(BowVocabulary).values(
                model_id=model.id, layer=layer, words=vocabulary.words, dim=int(vocabulary.centroids.shape[1]),
                path=str(path), sha256=sha256, frames_sampled=sampled, descriptors=descriptors_used,
                build_seconds=seconds["vocabulary"], params={"seed": seed, "sample_descriptors": sample_descriptors,
                                                             "positions_per_frame": per_frame},
            ).returning(BowVocabulary.id)).scalar_one())
    else:
        assert existing is not None
        vocabulary_id = existing.id
        vocabulary = read_vocabulary(Path(existing.path), existing.sha256)
    clock = time.perf_counter()
    pending = _frames(db, model, vocabulary_id)
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        rows = []
        for frame, fmap in _maps(embedder, batch, batch_size):
            assigned = vocabulary.assign(map_descriptors(fmap))
            rows.append({"vocabulary_id": vocabulary_id, "frame_id": frame.frame_id, "grid_h": int(fmap.shape[1]),
                         "grid_w": int(fmap.shape[2]), "words": assigned.tolist()})
        if rows:
            with db.transaction() as conn:
                conn.execute(insert(BowFrame).on_conflict_do_nothing(), rows)
        if progress is not None:
            progress("bow: assignment maps", len(batch), len(pending))
    seconds["assign"] = time.perf_counter() - clock
    clock = time.perf_counter()
    indexed = write_bow_index(db, model, vocabulary_id, vocabulary.words, layer)
    seconds["inverted_file"] = time.perf_counter() - clock
    return BowReport(model.name, layer, vocabulary.words, trained, descriptors_used, sampled, len(pending),
                     indexed, seconds)


def write_bow_index(db: Database, model: StoredModel, vocabulary_id: int, words: int, layer: str) -> int:
    """The inverted file from every assignment map of the vocabulary, written and registered."""
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, words FROM bow_frames WHERE vocabulary_id = :v "
                                    "ORDER BY frame_id"), {"v": vocabulary_id}).all()
    frame_ids = np.array([r[0] for r in rows], dtype=np.int64)
    maps = [np.asarray(r[1], dtype=np.int32) for r in rows]
    inverted = build_inverted_file(frame_ids, maps, words)
    path = _vocabulary_path(db, model, layer, "-invfile.npz")
    sha256 = write_inverted_file(inverted, path)
    save_index(db, model_id=model.id, backend="invfile", kind="bow", factory=f"BoW{words}", metric="tfidf-cosine",
               path=str(path), sha256=sha256, ntotal=int(frame_ids.size),
               watermark=int(frame_ids.max()) if frame_ids.size else 0,
               params={"vocabulary_id": vocabulary_id, "layer": layer, "words": words,
                       "postings": int(inverted.matrix.nnz)},  # type: ignore[attr-defined]
               device="cpu", state="ready")
    return int(frame_ids.size)
