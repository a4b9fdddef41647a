"""Evaluation results in SQL: one `eval_runs` row per run, one `eval_metrics` row per figure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.db.models import EvalMetric, EvalRun


@dataclass(frozen=True)
class MetricRow:
    backend: str
    factory: str | None
    subset: str
    metric: str
    value: float


def save_eval_run(db: Database, kind: str, params: dict[str, Any], rows: Iterable[MetricRow]) -> int:
    """Store a run and its figures in one transaction; returns the run id."""
    # NaN/inf cannot be compared or averaged in SQL; a missing figure is simply not stored.
    values = [row for row in rows if math.isfinite(row.value)]
    with db.transaction() as conn:
        run_id = int(conn.execute(sa.insert(EvalRun).values(kind=kind, params=params)
                                  .returning(EvalRun.id)).scalar_one())
        if values:
            conn.execute(sa.insert(EvalMetric), [
                {"run_id": run_id, "backend": row.backend, "factory": row.factory, "subset": row.subset,
                 "metric": row.metric, "value": float(row.value)} for row in values
            ])
    return run_id
