"""`sisyphus search --method phash`: the frames whose perceptual hash is nearest (Hamming bits).

The query is a picture (hashed in memory) or a stored frame's hash. The run is stored in
search_runs (backend 'phash', distance = differing bits) like any other search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.db.models import SearchResult, SearchRun
from sisyphus_db.errors import InputError
from sisyphus_db.temporal.hash_store import frame_hash, nearest_hashes
from sisyphus_db.temporal.hashing import bits_text, phash_bits


@dataclass
class HashOutcome:
    run_id: int | None
    hits: list[dict[str, Any]]
    elapsed_ms: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "backend": "phash", "params": self.params,
                "elapsed_ms": round(self.elapsed_ms, 3), "results": self.hits}


def search_by_hash(db: Database, *, images: list[Path], frame_id: int | None, k: int = 10, save: bool = True,
                   name: str | None = None) -> HashOutcome:
    from sisyphus_db.media.images import load_image
    from sisyphus_db.search.runs import frame_details

    if not 1 <= k <= 1000:
        raise InputError(f"--k must be between 1 and 1000, got {k}")
    if (len(images) == 1) == (frame_id is not None) or len(images) > 1:
        raise InputError("--method phash takes one query: --image FILE or --frame ID")
    started = time.perf_counter()
    if frame_id is not None:
        bits = frame_hash(db, frame_id)
        query: dict[str, Any] = {"kind": "frame", "frame_id": frame_id}
    else:
        bits = phash_bits(load_image(images[0]).rgb)
        query = {"kind": "image", "paths": [str(Path(images[0]).resolve())]}
    query["phash"] = bits_text(bits)
    found = nearest_hashes(db, bits, k)
    details = frame_details(db, [frame for frame, _ in found])
    hits = [{"rank": rank, "frame_id": frame, "distance": float(distance), **details[frame]}
            for rank, (frame, distance) in enumerate((f for f in found if f[0] in details), start=1)]
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    params = {"k": k, "hash": "phash", "metric": "hamming bits"}
    run_id = None
    if save:
        with db.transaction() as conn:
            run_id = int(conn.execute(sa.insert(SearchRun).values(
                name=name, model_id=None, query=query, filter=None, backend="phash", k=k, params=params,
                elapsed_ms=elapsed_ms).returning(SearchRun.id)).scalar_one())
            if hits:
                conn.execute(sa.insert(SearchResult), [{"run_id": run_id, "rank": h["rank"], "frame_id": h["frame_id"],
                                                        "distance": h["distance"]} for h in hits])
    return HashOutcome(run_id, hits, elapsed_ms, params)
