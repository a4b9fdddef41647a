"""Labels on frames with their provenance: add, list, show, remove.

The CLI (`sisyphus label ...`) and the HTTP API write labels through these functions only,
so a label set on the page and one set in a terminal are the same row. Labelling a frame
again updates its row (positive/negative, provenance, score) instead of adding a second one.
"""

from __future__ import annotations

import getpass
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError

MAX_NAME_LENGTH = 200
_NAME = re.compile(r"^[^\x00-\x1f/\\]+$")


class LabelError(InputError):
    """An unknown label, run or frame, or a label name that cannot be used."""


@dataclass(frozen=True)
class LabelChange:
    label: str
    added: int
    updated: int
    frame_ids: list[int]
    # Frames left alone: `--from-scores` never overwrites a manual label.
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabelSummary:
    label: str
    positives: int
    negatives: int
    manual: int
    propagated: int
    sources: int
    updated_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "updated_at": self.updated_at.isoformat() if self.updated_at else None}


@dataclass(frozen=True)
class LabelledFrame:
    frame_id: int
    positive: bool
    origin: str
    run_id: int | None
    rule: str | None
    score: float | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    path: str
    source_id: int
    source_uri: str
    pts_seconds: float

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["created_at"] = self.created_at.isoformat()
        row["updated_at"] = self.updated_at.isoformat()
        return row


@dataclass(frozen=True)
class LabelDetail:
    summary: LabelSummary
    frames: list[LabelledFrame]

    @property
    def positives(self) -> list[LabelledFrame]:
        return [frame for frame in self.frames if frame.positive]

    @property
    def negatives(self) -> list[LabelledFrame]:
        return [frame for frame in self.frames if not frame.positive]

    def to_json(self) -> dict[str, Any]:
        sources: dict[int, dict[str, Any]] = {}
        for frame in self.frames:
            entry = sources.setdefault(frame.source_id, {"source_id": frame.source_id, "source_uri": frame.source_uri,
                                                         "positives": 0, "negatives": 0})
            entry["positives" if frame.positive else "negatives"] += 1
        return {**self.summary.to_json(),
                "positive_frames": [frame.to_json() for frame in self.positives],
                "negative_frames": [frame.to_json() for frame in self.negatives],
                "by_source": sorted(sources.values(), key=lambda entry: entry["source_id"])}


def current_user() -> str:
    """Who labels from this process: the OS user (the API passes its token's name instead)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_label_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise LabelError("a label name must not be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise LabelError(f"a label name is at most {MAX_NAME_LENGTH} characters, got {len(cleaned)}")
    if not _NAME.match(cleaned):
        raise LabelError(f"label name {cleaned!r} must not contain control characters or slashes")
    return cleaned


def parse_frame_ids(values: Iterable[str | int]) -> list[int]:
    """Frame ids from repeated options and comma-separated lists ("3,4 5"), in order, without repeats."""
    ids: list[int] = []
    for value in values:
        for part in re.split(r"[,\s]+", str(value).strip()):
            if not part:
                continue
            try:
                frame_id = int(part)
            except ValueError:
                raise LabelError(f"{part!r} is not a frame id") from None
            if frame_id < 1:
                raise LabelError(f"frame ids are positive integers, got {frame_id}")
            if frame_id not in ids:
                ids.append(frame_id)
    return ids


def frames_of_run(db: Database, run_id: int, top: int | None = None) -> list[int]:
    """The frame ids of a stored search run in rank order (the first `top`)."""
    if top is not None and top < 1:
        raise LabelError(f"--top must be at least 1, got {top}")
    with db.transaction() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM search_runs WHERE id = :r"), {"r": run_id}).first()
        if exists is None:
            raise LabelError(f"search run {run_id} does not exist")
        rows = conn.execute(sa.text(
            "SELECT frame_id FROM search_results WHERE run_id = :r ORDER BY rank LIMIT :n"),
            {"r": run_id, "n": top}).scalars().all()
    return [int(frame_id) for frame_id in rows]


def add_labels(db: Database, name: str, frame_ids: Sequence[int], *, positive: bool = True,
               origin: str = "manual", run_id: int | None = None, rule: str | None = None,
               scores: Sequence[float] | None = None, created_by: str | None = None) -> LabelChange:
    """Label the frames (insert or update one row per frame); refuses unknown frames or runs, changing nothing."""
    name = check_label_name(name)
    ids = list(dict.fromkeys(int(i) for i in frame_ids))
    if not ids:
        raise LabelError("no frames to label: give --frames ID or --search RUN_ID")
    if scores is not None and len(scores) != len(ids):
        raise LabelError("one score per frame is needed")
    who = created_by or current_user()
    with db.transaction() as conn:
        if run_id is not None and conn.execute(sa.text("SELECT 1 FROM search_runs WHERE id = :r"),
                                               {"r": run_id}).first() is None:
            raise LabelError(f"search run {run_id} does not exist")
        found = set(conn.execute(sa.text("SELECT id FROM frames WHERE id = ANY(:ids)"), {"ids": ids}).scalars())
        missing = [i for i in ids if i not in found]
        if missing:
            raise LabelError(f"unknown frame{'s' if len(missing) > 1 else ''}: {_short(missing)}")
        rows = [{"frame_id": frame_id, "label": name, "positive": positive, "origin": origin, "run_id": run_id,
                 "rule": rule, "score": None if scores is None else float(scores[i]), "created_by": who}
                for i, frame_id in enumerate(ids)]
        # xmax = 0 tells an inserted row from an updated one in the same statement.
        inserted = conn.execute(sa.text(
            "INSERT INTO labels (frame_id, label, positive, origin, run_id, rule, score, created_by) "
            "SELECT * FROM unnest(CAST(:frame_id AS bigint[]), CAST(:label AS text[]), CAST(:positive AS boolean[]), "
            "CAST(:origin AS text[]), CAST(:run_id AS bigint[]), CAST(:rule AS text[]), CAST(:score AS real[]), "
            "CAST(:created_by AS text[])) "
            "ON CONFLICT (frame_id, label) DO UPDATE SET positive = EXCLUDED.positive, origin = EXCLUDED.origin, "
            "run_id = EXCLUDED.run_id, rule = EXCLUDED.rule, score = EXCLUDED.score, "
            "created_by = EXCLUDED.created_by, updated_at = now() "
            "RETURNING (xmax = 0)"),
            {key: [row[key] for row in rows] for key in rows[0]}).scalars().all()
    added = sum(1 for was_inserted in inserted if was_inserted)
    return LabelChange(label=name, added=added, updated=len(inserted) - added, frame_ids=ids)


def add_labels_from_scores(db: Database, name: str, min_score: float, *, model_id: int | None = None,
                           created_by: str | None = None) -> LabelChange:
    """Turn the propagated scores of a label (label_scores, from `sisyphus propagate`) into weak labels.

    Every frame scored at least `min_score` becomes a positive with origin 'propagated', its
    score and the rule it came from. A frame that already carries a manual label (positive
    or negative) is left alone: a person's decision always wins over a propagated guess.
    """
    name = check_label_name(name)
    if not math.isfinite(min_score):
        raise LabelError(f"--min-score must be a number, got {min_score}")
    who = created_by or current_user()
    with db.transaction() as conn:
        models = conn.execute(sa.text(
            "SELECT DISTINCT s.model_id, m.name FROM label_scores s JOIN models m ON m.id = s.model_id "
            "WHERE s.label = :n ORDER BY s.model_id"), {"n": name}).all()
        if not models:
            raise LabelError(f"label {name!r} has no propagated scores: run `sisyphus propagate {name}` first")
        if model_id is None:
            if len(models) > 1:
                names = ", ".join(row[1] for row in models)
                raise LabelError(f"label {name!r} has scores under several models ({names}): choose one with --model")
            model_id = int(models[0][0])
        elif model_id not in {int(row[0]) for row in models}:
            raise LabelError(f"label {name!r} has no propagated scores under that model: run "
                             f"`sisyphus propagate {name} --model ...` first")
        model_name = next(row[1] for row in models if int(row[0]) == model_id)
        rule = f"label_scores >= {min_score:g} ({model_name})"
        eligible = conn.execute(sa.text(
            "SELECT s.frame_id, s.score, s.params, "
            "EXISTS (SELECT 1 FROM labels l WHERE l.frame_id = s.frame_id AND l.label = s.label "
            "AND l.origin = 'manual') AS manual "
            "FROM label_scores s WHERE s.label = :n AND s.model_id = :m AND s.score >= :s ORDER BY s.score DESC, "
            "s.frame_id"), {"n": name, "m": model_id, "s": float(min_score)}).all()
        rows = [row for row in eligible if not row[3]]
        skipped = len(eligible) - len(rows)
        if rows and rows[0][2]:
            params = ", ".join(f"{key}={value}" for key, value in sorted(dict(rows[0][2]).items()))
            rule = f"{rule[:-1]}, {params})"
        inserted: list[bool] = []
        if rows:
            # The WHERE on the update keeps a manual row that appeared meanwhile untouched.
            inserted = list(conn.execute(sa.text(
                "INSERT INTO labels (frame_id, label, positive, origin, run_id, rule, score, created_by) "
                "SELECT f, :n, true, 'propagated', NULL, :rule, sc, :who "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:scores AS real[])) AS t(f, sc) "
                "ON CONFLICT (frame_id, label) DO UPDATE SET positive = true, origin = 'propagated', run_id = NULL, "
                "rule = EXCLUDED.rule, score = EXCLUDED.score, created_by = EXCLUDED.created_by, updated_at = now() "
                "WHERE labels.origin = 'propagated' "
                "RETURNING (xmax = 0)"),
                {"n": name, "rule": rule, "who": who, "ids": [int(r[0]) for r in rows],
                 "scores": [float(r[1]) for r in rows]}).scalars().all())
    added = sum(1 for was_inserted in inserted if was_inserted)
    return LabelChange(label=name, added=added, updated=len(inserted) - added, frame_ids=[int(r[0]) for r in rows],
                       skipped=skipped + len(rows) - len(inserted))


def remove_labels(db: Database, name: str, frame_ids: Sequence[int] | None = None) -> int:
    """Remove a label from the given frames, or from every frame; returns the rows removed."""
    name = require_label(db, name)
    with db.transaction() as conn:
        if frame_ids is None:
            conn.execute(sa.text("DELETE FROM label_scores WHERE label = :n"), {"n": name})
            return int(conn.execute(sa.text("DELETE FROM labels WHERE label = :n"), {"n": name}).rowcount)
        ids = [int(i) for i in frame_ids]
        present = set(conn.execute(sa.text("SELECT frame_id FROM labels WHERE label = :n AND frame_id = ANY(:ids)"),
                                   {"n": name, "ids": ids}).scalars())
        missing = [i for i in ids if i not in present]
        if missing:
            raise LabelError(f"label {name!r} is not on frame{'s' if len(missing) > 1 else ''} {_short(missing)}")
        return int(conn.execute(sa.text("DELETE FROM labels WHERE label = :n AND frame_id = ANY(:ids)"),
                                {"n": name, "ids": ids}).rowcount)


def require_label(db: Database, name: str) -> str:
    """The label's name if any frame carries it; a one-line error naming the known labels otherwise."""
    name = check_label_name(name)
    with db.transaction() as conn:
        if conn.execute(sa.text("SELECT 1 FROM labels WHERE label = :n LIMIT 1"), {"n": name}).first() is not None:
            return name
        known = conn.execute(sa.text("SELECT DISTINCT label FROM labels ORDER BY label LIMIT 20")).scalars().all()
    hint = f" (labels: {', '.join(known)})" if known else " (there are no labels yet: `sisyphus label add`)"
    raise LabelError(f"no label named {name!r}{hint}")


_SUMMARY = (
    "SELECT l.label, count(*) FILTER (WHERE l.positive), count(*) FILTER (WHERE NOT l.positive), "
    "count(*) FILTER (WHERE l.origin = 'manual'), count(*) FILTER (WHERE l.origin = 'propagated'), "
    "count(DISTINCT f.source_id), max(l.updated_at) "
    "FROM labels l JOIN frames f ON f.id = l.frame_id {where} GROUP BY l.label ORDER BY l.label"
)


def list_labels(db: Database) -> list[LabelSummary]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text(_SUMMARY.format(where=""))).all()
    return [LabelSummary(*row) for row in rows]


def show_label(db: Database, name: str) -> LabelDetail:
    name = require_label(db, name)
    with db.transaction() as conn:
        summary = LabelSummary(*conn.execute(sa.text(_SUMMARY.format(where="WHERE l.label = :n")), {"n": name}).one())
        rows = conn.execute(sa.text(
            "SELECT l.frame_id, l.positive, l.origin, l.run_id, l.rule, l.score, l.created_by, l.created_at, "
            "l.updated_at, f.path, f.source_id, s.uri, f.pts_seconds "
            "FROM labels l JOIN frames f ON f.id = l.frame_id JOIN sources s ON s.id = f.source_id "
            "WHERE l.label = :n ORDER BY l.positive DESC, l.origin, l.updated_at DESC, l.frame_id"), {"n": name}).all()
    return LabelDetail(summary, [LabelledFrame(*row) for row in rows])


def label_frame_ids(db: Database, name: str) -> tuple[list[int], list[int]]:
    """The positive and the negative frame ids of a label (manual and propagated alike)."""
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, positive FROM labels WHERE label = :n ORDER BY frame_id"),
                            {"n": name}).all()
    return [r[0] for r in rows if r[1]], [r[0] for r in rows if not r[1]]


def labels_of_frames(db: Database, frame_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Every label each frame carries, for result cards: {frame_id: [{name, positive, origin, score}]}."""
    out: dict[int, list[dict[str, Any]]] = {int(i): [] for i in frame_ids}
    if not out:
        return out
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT frame_id, label, positive, origin, score FROM labels WHERE frame_id = ANY(:ids) "
            "ORDER BY frame_id, label"), {"ids": list(out)}).all()
    for frame_id, label, positive, origin, score in rows:
        out[frame_id].append({"name": label, "positive": positive, "origin": origin, "score": score})
    return out


def _short(ids: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
