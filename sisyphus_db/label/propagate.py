"""`sisyphus propagate NAME`: spread a label's manual positives and negatives over the stored k-NN graph.

Scores land in `label_scores` (one row per frame of the graph, replacing that label's earlier
scores under the model in one transaction). A stored score is F / max|F| (see spreading.py),
so it lies in [-1, 1]: 1 for the frame most strongly tied to the positives, below 0 for frames
nearer the negatives, 0 for frames whose part of the graph holds no seed. `params.scale`
keeps max|F|, so the raw fixed point is score * scale.

Only manual labels seed the spreading: propagated labels came from earlier scores, and
feeding them back in would let the scores reinforce themselves.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.label.binary_copy import copy_in
from sisyphus_db.label.graph import GraphError, knn_graph_command, load_neighbourhood, model_frame_count
from sisyphus_db.label.labels import LabelError, require_label
from sisyphus_db.label.spreading import (DEFAULT_ALPHA, DEFAULT_MAX_ITER, DEFAULT_TOL, SOLVERS, Solver,
                                         check_alpha, label_spreading)
from sisyphus_db.store.registry import StoredModel

DEFAULT_K = 10


@dataclass(frozen=True)
class ScoredFrame:
    frame_id: int
    score: float
    path: str
    source_uri: str
    pts_seconds: float


@dataclass(frozen=True)
class PropagateReport:
    label: str
    model: str
    k: int
    alpha: float
    solver: str
    frames: int
    edges: int
    positives: int
    negatives: int
    seeds_outside_graph: int
    iterations: int
    residual: float
    sigma: float
    scale: float
    leaning_positive: int
    read_seconds: float
    solve_seconds: float
    write_seconds: float
    top_unlabelled: list[ScoredFrame] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for key in ("read_seconds", "solve_seconds", "write_seconds"):
            document[key] = round(document[key], 3)
        return document


def _manual_seeds(db: Database, name: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, positive FROM labels WHERE label = :n AND origin = 'manual'"),
                            {"n": name}).all()
    positives = np.array(sorted(r[0] for r in rows if r[1]), dtype=np.int64)
    negatives = np.array(sorted(r[0] for r in rows if not r[1]), dtype=np.int64)
    return positives, negatives


def _positions(nodes: npt.NDArray[np.int64], frame_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Indexes in the sorted `nodes` of the frame ids that are graph nodes."""
    at = np.searchsorted(nodes, frame_ids)
    inside = (at < nodes.size) & (nodes[np.minimum(at, nodes.size - 1)] == frame_ids)
    return at[inside]


def propagate_label(db: Database, name: str, model: StoredModel, *, k: int = DEFAULT_K,
                    alpha: float = DEFAULT_ALPHA, solver: Solver = "cg", tol: float = DEFAULT_TOL,
                    max_iter: int = DEFAULT_MAX_ITER, top: int = 10) -> PropagateReport:
    """Spread the label over the first k neighbours of every frame and store a score per frame."""
    if isinstance(k, bool) or k < 1:
        raise InputError(f"--k must be a positive integer, got {k}")
    alpha = check_alpha(alpha)
    if solver not in SOLVERS:
        raise InputError(f"unknown solver {solver!r}: expected one of {', '.join(SOLVERS)}")
    name = require_label(db, name)
    positives, negatives = _manual_seeds(db, name)
    if positives.size == 0:
        raise LabelError(f"label {name!r} has no manual positive frames to propagate from: "
                         "add some with `sisyphus label add`")

    started = time.perf_counter()
    edges = load_neighbourhood(db, model, k)
    m = edges.size
    nodes, inverse = np.unique(np.concatenate([edges.source, edges.target]), return_inverse=True)
    pos_at, neg_at = _positions(nodes, positives), _positions(nodes, negatives)
    if pos_at.size == 0:
        raise GraphError(f"none of label {name!r}'s {positives.size} positive frames is in the k-NN graph of "
                         f"model {model.name!r}: rebuild it with `{knn_graph_command(model, k)}`")
    read_seconds = time.perf_counter() - started

    started = time.perf_counter()
    result = label_spreading(nodes.size, inverse[:m], inverse[m:], edges.distance, pos_at, neg_at, alpha,
                             solver=solver, tol=tol, max_iter=max_iter)
    if not result.converged:
        raise InputError(f"label spreading did not converge in {result.iterations} iterations (relative residual "
                         f"{result.residual:.2g}): use a smaller --alpha or the cg solver")
    scale = float(np.max(np.abs(result.scores)))
    scores = (result.scores / scale).astype(np.float32) if scale > 0 else result.scores.astype(np.float32)
    solve_seconds = time.perf_counter() - started

    started = time.perf_counter()
    params = {"k": k, "alpha": alpha, "solver": solver, "sigma": result.sigma, "scale": scale,
              "iterations": result.iterations, "positives": int(pos_at.size), "negatives": int(neg_at.size)}
    with db.copy_connection() as conn:
        conn.execute("DELETE FROM label_scores WHERE label = %s AND model_id = %s", (name, model.id))
        copy_in(conn, "label_scores",
                [("label", "text"), ("model_id", "integer"), ("frame_id", "bigint"), ("score", "real"),
                 ("params", "jsonb")],
                {"label": name, "model_id": model.id, "frame_id": nodes, "score": scores, "params": params},
                int(nodes.size))
    write_seconds = time.perf_counter() - started

    warnings: list[str] = []
    outside = int(positives.size + negatives.size - pos_at.size - neg_at.size)
    if outside:
        warnings.append(f"{outside} labelled frames are not in the k-NN graph (ingested after it was built?): "
                        f"rebuild it with `{knn_graph_command(model, k)}`")
    total = model_frame_count(db, model)
    if total > nodes.size:
        warnings.append(f"the k-NN graph covers {nodes.size} of the model's {total} frames; the others got no "
                        f"score: rebuild it with `{knn_graph_command(model, k)}`")
    return PropagateReport(
        label=name, model=model.name, k=k, alpha=alpha, solver=solver, frames=int(nodes.size), edges=m,
        positives=int(pos_at.size), negatives=int(neg_at.size), seeds_outside_graph=outside,
        iterations=result.iterations, residual=result.residual, sigma=result.sigma, scale=scale,
        leaning_positive=int(np.count_nonzero(scores > 0)), read_seconds=read_seconds, solve_seconds=solve_seconds,
        write_seconds=write_seconds, top_unlabelled=top_unlabelled(db, name, model, top), warnings=warnings)


def top_unlabelled(db: Database, name: str, model: StoredModel, n: int) -> list[ScoredFrame]:
    """The best-scored frames that do not carry the label yet: the next ones to look at."""
    if n < 1:
        return []
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT frame_id, score, path, source_uri, pts_seconds FROM label_score_hits "
            "WHERE label = :n AND model = :m AND labelled_positive IS NULL AND score > 0 "
            "ORDER BY score DESC, frame_id LIMIT :k"), {"n": name, "m": model.name, "k": n}).all()
    return [ScoredFrame(int(r[0]), float(r[1]), r[2], r[3], float(r[4])) for r in rows]
