"""`sisyphus search --image Q.jpg [--box ...] [--focus CLASS] --method global|regions|bow`.

Builds the query (the box of the image, class-focused if asked) and hands the search to
the planner (sisyphus_db.search.engine) with the method's hook, so filters, --per-source,
stored runs and the output formats are those of every other search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import AnnIndexError, InputError
from sisyphus_db.search.engine import SearchOutcome, SearchRequest, search
from sisyphus_db.search.queries import Query
from sisyphus_db.store.registry import StoredModel

METHODS = ("global", "regions", "bow")


@dataclass(frozen=True)
class LocalRequest:
    method: str = "global"
    box: tuple[int, int, int, int] | None = None
    focus: str | None = None
    expand: int = 0
    spatial: bool = True  # bow: re-rank the top frames by their best window (off only to measure its gain)

    @property
    def is_local(self) -> bool:
        return self.method != "global" or self.box is not None or self.focus is not None or self.expand > 0


def validate_local(local: LocalRequest, request: SearchRequest, images: int) -> None:
    if local.method not in METHODS:
        raise InputError(f"unknown --method {local.method!r}: expected one of {', '.join(METHODS)}")
    if images != 1:
        what = f"--method {local.method}" if local.method != "global" else ("--box" if local.box else "--focus")
        raise InputError(f"{what} needs exactly one --image query")
    if local.method != "global" and request.backend != "faiss":
        raise InputError(f"--method {local.method} searches its own index: --backend {request.backend} does not apply")
    if local.expand < 0:
        raise InputError(f"--expand must be 0 or more, got {local.expand}")
    if local.expand and local.method != "bow":
        raise InputError("--expand applies to --method bow only")
    if local.method == "bow" and request.nprobe is not None:
        raise InputError("--nprobe does not apply to --method bow (an inverted file)")


def require_regions(db: Database, model: StoredModel) -> None:
    """A missing region index names the commands that build it."""
    from sisyphus_db.store.indexes import find_index

    if find_index(db, model.id, "faiss", "regions") is not None:
        return
    with db.transaction() as conn:
        stored = conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM regions WHERE model_id = :m)"),
                              {"m": model.id}).scalar_one()
    if not stored:
        raise AnnIndexError(f"there are no region vectors for {model.name}: run `sisyphus regions build` and "
                            "then `sisyphus index build --kind regions`")
    raise AnnIndexError(f"there is no region index for {model.name}: run `sisyphus index build --kind regions`")


def local_search(db: Database, model: StoredModel, image: Path, request: SearchRequest, local: LocalRequest, *,
                 device: str = "auto") -> SearchOutcome:
    from sisyphus_db.embed.embedder import load_embedder
    from sisyphus_db.local.focus import class_direction
    from sisyphus_db.local.queries import load_query_image, query_vector

    validate_local(local, request, 1)
    embedder = load_embedder(model.name, device=device)
    if embedder.spec.dim != model.dim:
        raise InputError(f"model {model.name} now makes {embedder.spec.dim}-d vectors, the stored ones are {model.dim}-d")
    direction = None
    description = {}
    if local.focus is not None:
        direction, label = class_direction(embedder.spec, local.focus)
        description["focus"] = label
    if local.method == "regions":
        require_regions(db, model)
    if local.method == "bow":
        from sisyphus_db.local.bow.search import require_bow

        require_bow(db, model)
    query_image = load_query_image(image, local.box)
    description = {**query_image.description(), **description}
    if local.method == "global":
        vector = query_vector(embedder, query_image.rgb, method="global", direction=direction)
        return search(db, model, Query(vector, description), request)
    if local.method == "regions":
        from sisyphus_db.local.region_search import RegionMethod

        vector = query_vector(embedder, query_image.rgb, method="regions", direction=direction)
        method = RegionMethod(db, model, vector, where=request.where, nprobe=request.nprobe)
        return search(db, model, Query(vector, description), request, method=method)
    from sisyphus_db.local.bow.search import BowMethod, bow_query

    query = bow_query(db, model, embedder, query_image.rgb, direction=direction)
    method_bow = BowMethod(db, model, query, where=request.where, expand=local.expand, spatial=local.spatial)
    return search(db, model, Query(query.vector, {**description, "expand": local.expand}), request,
                  method=method_bow)
