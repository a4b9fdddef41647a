"""Which frames a training-set export holds, and their train/validation split by source.

The set is the label's positives (manual and propagated labels), its negatives with
--include-negatives, and with --min-score the frames whose propagated score reaches the
threshold but that carry no label yet (origin "score"). A label on a frame always wins over
its score. Frames of one source (a video, an image folder) all land in the same split, so a
model is never validated on near-copies of its training frames.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.label.labels import LabelError, require_label
from sisyphus_db.store.registry import StoredModel, find_model


class ExportError(InputError):
    """An export that cannot be written as asked: an empty set, an occupied output, missing files."""


@dataclass(frozen=True)
class ExportFrame:
    frame_id: int
    source_id: int
    source_uri: str
    path: str
    pts_seconds: float
    width: int
    height: int
    positive: bool
    origin: str            # manual, propagated (a label from scores) or score (a score, no label)
    score: float | None
    run_id: int | None
    created_by: str | None
    split: str = "train"

    def class_name(self, label: str) -> str:
        return label if self.positive else negative_class(label)


def negative_class(label: str) -> str:
    return f"not-{label}"


_LABELLED = (
    "SELECT l.frame_id, f.source_id, s.uri, f.path, f.pts_seconds, f.width, f.height, l.positive, l.origin, "
    "COALESCE(l.score, {score}), l.run_id, l.created_by "
    "FROM labels l JOIN frames f ON f.id = l.frame_id JOIN sources s ON s.id = f.source_id {join} "
    "WHERE l.label = :label {negatives}"
)
_SCORED = (
    "SELECT ls.frame_id, f.source_id, s.uri, f.path, f.pts_seconds, f.width, f.height, true, 'score', ls.score, "
    "NULL::bigint, NULL::text "
    "FROM label_scores ls JOIN frames f ON f.id = ls.frame_id JOIN sources s ON s.id = f.source_id "
    "WHERE ls.label = :label AND ls.model_id = :model AND ls.score >= :min_score "
    "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.label = ls.label AND l.frame_id = ls.frame_id)"
)


def scores_model(db: Database, label: str, model_name: str | None) -> StoredModel:
    """The model whose propagated scores of the label to use: the one named, or the only one that has any."""
    with db.transaction() as conn:
        names = conn.execute(sa.text(
            "SELECT DISTINCT m.name FROM label_scores ls JOIN models m ON m.id = ls.model_id "
            "WHERE ls.label = :n ORDER BY m.name"), {"n": label}).scalars().all()
    if not names:
        raise ExportError(f"label {label!r} has no propagated scores for --min-score: run "
                          f"`sisyphus propagate {label}` first")
    if model_name is None:
        if len(names) > 1:
            raise ExportError(f"label {label!r} has scores under several models ({', '.join(names)}): "
                              "choose one with --model")
        model_name = names[0]
    if model_name not in names:
        raise ExportError(f"label {label!r} has no propagated scores under model {model_name!r} "
                          f"(it has: {', '.join(names)})")
    model = find_model(db, model_name)
    assert model is not None
    return model


def select_frames(db: Database, label: str, *, include_negatives: bool = False, min_score: float | None = None,
                  model_name: str | None = None) -> list[ExportFrame]:
    """The frames of the training set, by frame id; refuses an unknown label or one without positives."""
    label = require_label(db, label)
    if min_score is not None and not -1.0 <= min_score <= 1.0:
        raise InputError(f"--min-score is a propagated score in [-1, 1], got {min_score}")
    model = scores_model(db, label, model_name) if min_score is not None else None
    params: dict[str, object] = {"label": label}
    negatives = "" if include_negatives else "AND l.positive"
    if model is None:
        sql = _LABELLED.format(score="NULL::real", join="", negatives=negatives)
    else:
        params.update(model=model.id, min_score=float(min_score))  # type: ignore[arg-type]
        join = "LEFT JOIN label_scores ls ON ls.label = l.label AND ls.frame_id = l.frame_id AND ls.model_id = :model"
        sql = _LABELLED.format(score="ls.score", join=join, negatives=negatives) + " UNION ALL " + _SCORED
    with db.transaction() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM ({sql}) picked ORDER BY 1"), params).all()
    frames = [ExportFrame(int(r[0]), int(r[1]), r[2], r[3], float(r[4]), int(r[5]), int(r[6]), bool(r[7]), r[8],
                          None if r[9] is None else float(r[9]), r[10], r[11]) for r in rows]
    if not any(frame.positive for frame in frames):
        raise LabelError(f"label {label!r} has no positive frames to export")
    return frames


def split_by_source(frames: list[ExportFrame], val_fraction: float, seed: int) -> list[ExportFrame]:
    """Assign whole sources to val until about val_fraction of the frames are there (deterministic per seed).

    Sources are visited in a seeded random order; a source joins val when that brings val
    closer to its target. With two or more sources and a fraction above 0, val gets at least
    one source and train keeps at least one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    counts = Counter(frame.source_id for frame in frames)
    sources = sorted(counts)
    total = len(frames)
    target = val_fraction * total
    val: set[int] = set()
    held = 0
    order = [sources[i] for i in np.random.default_rng(seed).permutation(len(sources))]
    if val_fraction > 0:
        for source in order:
            size = counts[source]
            if abs(held + size - target) < abs(held - target) and held + size < total:
                val.add(source)
                held += size
        if not val and len(sources) > 1:
            val.add(order[0])
    return [replace(frame, split="val" if frame.source_id in val else "train") for frame in frames]
