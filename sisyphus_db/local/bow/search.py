"""`search --method bow`: inverted-file scoring, spatial re-ranking, query expansion.

A method of the search planner (sisyphus_db.search.engine), like the regions method:
the planner keeps k, --per-source, the metadata join and the stored run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError
from sisyphus_db.local.bow.invfile import InvertedFile, histogram, read_inverted_file
from sisyphus_db.local.bow.spatial import Window, best_window
from sisyphus_db.local.grid import Region, cells_to_pixels
from sisyphus_db.search.backends import Neighbours
from sisyphus_db.search.filters import FrameFilter, Where
from sisyphus_db.store.indexes import IndexRecord, find_index
from sisyphus_db.store.registry import StoredModel

BOW_QUERY_SIZE = 224   # a 7 x 7 map: enough words to describe the object
SPATIAL_TOP = 100      # frames re-ranked spatially (at least k)


@dataclass(frozen=True)
class BowQuery:
    vector: npt.NDArray[np.float32]  # not searched; kept so the planner's Query has one
    words: npt.NDArray[np.int32]
    histogram: npt.NDArray[np.float64]


def require_bow(db: Database, model: StoredModel) -> IndexRecord:
    from sisyphus_db.local.bow.build import find_vocabulary

    record = find_index(db, model.id, "invfile", "bow")
    if find_vocabulary(db, model) is None or record is None or record.state != "ready":
        raise AnnIndexError(f"there is no visual vocabulary for {model.name}: run `sisyphus bow build`")
    return record


def bow_query(db: Database, model: StoredModel, embedder: Any, rgb: npt.NDArray[np.uint8], *,
              direction: npt.NDArray[np.float32] | None = None) -> BowQuery:
    """The query's visual words; with a class direction, each position counts by its class activation."""
    from sisyphus_db.local.bow.build import find_vocabulary
    from sisyphus_db.local.bow.vocabulary import map_descriptors, read_vocabulary
    from sisyphus_db.local.features import feature_maps
    from sisyphus_db.local.focus import activation_map

    record = require_bow(db, model)
    row = find_vocabulary(db, model, record.params.get("layer"))
    assert row is not None
    vocabulary = read_vocabulary(Path(row.path), row.sha256)
    fmap = feature_maps(embedder, [rgb], size=BOW_QUERY_SIZE)[0]
    words = vocabulary.assign(map_descriptors(fmap))
    weights = activation_map(fmap, direction).ravel() if direction is not None else None
    return BowQuery(np.zeros(1, dtype=np.float32), words, histogram(words, vocabulary.words, weights))


class BowMethod:
    """Frames by tf-idf through the inverted file, the top ones re-ranked by their best window."""

    name = "bow"

    def __init__(self, db: Database, model: StoredModel, query: BowQuery, *, where: Where | None = None,
                 expand: int = 0, spatial: bool = True) -> None:
        self.db, self.model, self.query = db, model, query
        self.record = require_bow(db, model)
        self.inverted: InvertedFile = read_inverted_file(Path(str(self.record.path)), str(self.record.sha256))
        self.vocabulary_id = int(self.record.params["vocabulary_id"])
        self.filter = FrameFilter(db, where, model.id) if where else None
        self.expand, self.spatial = expand, spatial
        self.boxes: dict[int, tuple[int, int, int, int]] = {}
        self.params: dict[str, Any] = {"words": self.inverted.words, "spatial": spatial, "expand": expand,
                                       "query_words": int(np.count_nonzero(query.histogram))}
        self.warnings: list[str] = []
        self.ranking: list[int] = []  # the inverted-file order, before spatial re-ranking
        with db.transaction() as conn:
            newer = conn.execute(sa.text(
                "SELECT count(*) FROM embeddings WHERE model_id = :m AND frame_id > :w"),
                {"m": model.id, "w": self.record.watermark}).scalar_one()
        if newer:
            self.warnings.append(f"{newer} frames are newer than the bag-of-words index and not searched: "
                                 "run `sisyphus bow build`")

    def _ranked(self, query: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        scores = self.inverted.score(query)
        order = np.lexsort((self.inverted.frame_ids, -scores))
        ids, ranked = self.inverted.frame_ids[order], scores[order]
        if self.filter is not None and ids.size:
            passing = np.isin(ids, self.filter.among(np.sort(ids)))
            ids, ranked = ids[passing], ranked[passing]
        return ids, ranked

    def _windows(self, frame_ids: npt.NDArray[np.int64], query: npt.NDArray[np.float64]
                 ) -> dict[int, tuple[Window, tuple[int, int, int, int]]]:
        with self.db.transaction() as conn:
            rows = conn.execute(sa.text(
                "SELECT b.frame_id, b.grid_h, b.grid_w, b.words, f.width, f.height FROM bow_frames b "
                "JOIN frames f ON f.id = b.frame_id WHERE b.vocabulary_id = :v AND b.frame_id = ANY(:ids)"),
                {"v": self.vocabulary_id, "ids": [int(i) for i in frame_ids]}).all()
        found = {}
        for frame_id, grid_h, grid_w, words, width, height in rows:
            grid = np.asarray(words, dtype=np.int32).reshape(grid_h, grid_w)
            window = best_window(grid, query, self.inverted.idf)
            region = Region(0, window.r0, window.c0, window.r1, window.c1)
            found[int(frame_id)] = (window, cells_to_pixels(region, grid_h, grid_w, int(width), int(height)))
        return found

    def _spatial(self, ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], depth: int,
                 query: npt.NDArray[np.float64]) -> tuple[list[int], list[float], dict[int, Any]]:
        top = ids[:max(depth, SPATIAL_TOP)]
        windows = self._windows(top, query)
        head = sorted((f for f in top.tolist() if f in windows), key=lambda f: (-windows[f][0].score, f))
        rest = [(int(f), float(s)) for f, s in zip(ids.tolist(), scores.tolist(), strict=True) if f not in windows]
        return (head + [f for f, _ in rest], [windows[f][0].score for f in head] + [s for _, s in rest], windows)

    def neighbours(self, depth: int) -> tuple[Neighbours, bool]:
        query = self.query.histogram
        ids, scores = self._ranked(query)
        self.ranking = ids.tolist()
        if not self.spatial:
            order, values, windows = ids.tolist(), scores.tolist(), {}
        else:
            order, values, windows = self._spatial(ids, scores, depth, query)
            if self.expand:
                # Query expansion: add the best localised windows' words to the query, search again.
                expanded = query / max(float(np.linalg.norm(query)), 1e-12)
                for frame_id in order[:self.expand]:
                    h = histogram(windows[frame_id][0].words, self.inverted.words)
                    expanded = expanded + h / max(float(np.linalg.norm(h)), 1e-12)
                ids, scores = self._ranked(expanded)
                order, values, windows = self._spatial(ids, scores, depth, expanded)
        for frame_id in order[:depth]:
            if frame_id in windows:
                self.boxes[frame_id] = windows[frame_id][1]
        chosen = np.array(order[:depth], dtype=np.int64)
        distances = np.clip(1.0 - np.array(values[:depth], dtype=np.float32), 0.0, 2.0)
        return (chosen, distances), len(order) <= depth
