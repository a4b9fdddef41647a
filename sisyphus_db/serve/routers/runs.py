"""GET /api/runs and /api/runs/{id}: stored search runs and their results, a page at a time."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends

from sisyphus_db.search.runs import SearchHit, frame_details
from sisyphus_db.serve.deps import page_bounds, server
from sisyphus_db.serve.errors import NotFoundError
from sisyphus_db.serve.results import result_rows
from sisyphus_db.serve.routers.search import ERRORS
from sisyphus_db.serve.schemas import RunDetail, RunPage
from sisyphus_db.serve.state import ServerState

router = APIRouter(prefix="/api/runs", tags=["runs"])
MAX_PAGE = 1000

_RUN = ("SELECT r.id, r.name, m.name AS model, r.query, r.filter, r.backend, r.k, r.params, r.elapsed_ms, "
        "r.created_at FROM search_runs r LEFT JOIN models m ON m.id = r.model_id")


def _run_items(state: ServerState, rows: list[Any]) -> list[dict[str, Any]]:
    ids = [row["id"] for row in rows]
    with state.db.transaction() as conn:
        counts = dict(conn.execute(sa.text(
            "SELECT run_id, count(*) FROM search_results WHERE run_id = ANY(:ids) GROUP BY run_id"),
            {"ids": ids}).all())
    return [{**row, "created_at": row["created_at"].isoformat(), "results": int(counts.get(row["id"], 0))}
            for row in rows]


@router.get("", response_model=RunPage, responses=ERRORS)
def list_runs(offset: int | None = None, limit: int | None = None, page: int | None = None,
              per_page: int | None = None, state: ServerState = Depends(server)) -> dict[str, Any]:
    """Stored search runs, newest first, with the total."""
    start, size = page_bounds(offset, limit, page, per_page, 50, MAX_PAGE)
    with state.db.transaction() as conn:
        total = int(conn.execute(sa.text("SELECT count(*) FROM search_runs")).scalar_one())
        rows = conn.execute(sa.text(f"{_RUN} ORDER BY r.id DESC OFFSET :o LIMIT :l"),
                            {"o": start, "l": size}).mappings().all()
    return {"total": total, "offset": start, "limit": size, "runs": _run_items(state, list(rows))}


@router.get("/{run_id}", response_model=RunDetail, responses=ERRORS)
def get_run(run_id: int, offset: int | None = None, limit: int | None = None, page: int | None = None,
            per_page: int | None = None, state: ServerState = Depends(server)) -> dict[str, Any]:
    """One run and a page of its results in rank order, each with its labels and thumbnail URL."""
    start, size = page_bounds(offset, limit, page, per_page, 100, MAX_PAGE)
    with state.db.transaction() as conn:
        row = conn.execute(sa.text(f"{_RUN} WHERE r.id = :r"), {"r": run_id}).mappings().first()
        if row is None:
            raise NotFoundError(f"search run {run_id} does not exist")
        ranked = conn.execute(sa.text(
            "SELECT rank, frame_id, distance FROM search_results WHERE run_id = :r ORDER BY rank OFFSET :o LIMIT :l"),
            {"r": run_id, "o": start, "l": size}).all()
    run = _run_items(state, [row])[0]
    details = frame_details(state.db, [frame_id for _, frame_id, _ in ranked])
    hits = [SearchHit(rank=rank, frame_id=frame_id, distance=float(distance), **details[frame_id])
            for rank, frame_id, distance in ranked if frame_id in details]
    return {"total": run["results"], "offset": start, "limit": size, "run_id": run_id, "run": run,
            "results": result_rows(state.db, hits)}
