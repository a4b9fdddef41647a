"""Reading the stored k-NN graph (`knn_edges`, built by `sisyphus knn-graph`) into numpy arrays.

Propagation and near-duplicate grouping both work on this graph; neither searches vectors
again. Edges are read with one binary COPY and parsed with numpy (10M edges in seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.label.binary_copy import copy_out
from sisyphus_db.store.registry import StoredModel


class GraphError(InputError):
    """The k-NN graph a command needs is missing, or was built with fewer neighbours."""


@dataclass(frozen=True)
class KnnEdges:
    """Directed edges frame -> neighbour with their cosine distance (rank <= k, or distance < a threshold)."""

    source: npt.NDArray[np.int64]
    target: npt.NDArray[np.int64]
    distance: npt.NDArray[np.float32]
    max_rank: int

    @property
    def size(self) -> int:
        return int(self.source.size)


def knn_graph_command(model: StoredModel, k: int) -> str:
    return f"sisyphus knn-graph --k {k} --model {model.name}"


def require_graph(db: Database, model: StoredModel, k: int) -> None:
    """Refuse, naming the command to run, when the model has no stored k-NN graph."""
    with db.transaction() as conn:
        present = conn.execute(sa.text("SELECT 1 FROM knn_edges WHERE model_id = :m LIMIT 1"),
                               {"m": model.id}).first()
    if present is None:
        raise GraphError(f"there is no k-NN graph for model {model.name!r}: build it with "
                         f"`{knn_graph_command(model, k)}` (after `sisyphus index build`)")


def load_edges(db: Database, model: StoredModel, *, k: int | None = None,
               below: float | None = None) -> KnnEdges:
    """The model's edges of rank <= k and/or distance < below (both optional), as arrays."""
    where = [f"model_id = {int(model.id)}"]
    if k is not None:
        where.append(f"rank <= {int(k)}")
    if below is not None:
        where.append(f"distance < {float(below)!r}::real")
    select = f"SELECT frame_id, neighbor_id, distance, rank FROM knn_edges WHERE {' AND '.join(where)}"
    with db.copy_connection() as conn:
        source, target, distance, rank = copy_out(conn, select, ["bigint", "bigint", "real", "integer"])
    return KnnEdges(source=source, target=target, distance=distance,
                    max_rank=int(rank.max()) if rank.size else 0)


def load_neighbourhood(db: Database, model: StoredModel, k: int) -> KnnEdges:
    """The first k neighbours of every frame; refuses a missing graph or one built with fewer than k."""
    if isinstance(k, bool) or k < 1:
        raise InputError(f"--k must be a positive integer, got {k}")
    require_graph(db, model, k)
    edges = load_edges(db, model, k=k)
    if edges.max_rank < k:
        raise GraphError(f"the k-NN graph of model {model.name!r} has only {edges.max_rank} neighbours per frame, "
                         f"{k} were asked for: rebuild it with `{knn_graph_command(model, k)}` or use --k "
                         f"{edges.max_rank}")
    return edges


def model_frame_count(db: Database, model: StoredModel) -> int:
    with db.transaction() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM embeddings WHERE model_id = :m"),
                                {"m": model.id}).scalar_one())
