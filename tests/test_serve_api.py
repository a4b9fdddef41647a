"""The HTTP API against a real database, a real faiss index and the real model (efficientnet-lite0).

One module-scoped world is ingested once: three folders of generated images and a short
video, with tags, and a Flat faiss index. Tests that change the index or need a token get
their own app or database.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from conftest import create_database_from_template
from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.db.embedded import EmbeddedServer
from sisyphus_db.embed.embedder import Embedder, load_embedder
from sisyphus_db.errors import ConfigError
from sisyphus_db.ingest.messages import KeyframeOptions
from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest
from sisyphus_db.label.labels import current_user
from sisyphus_db.media import synthetic
from sisyphus_db.search.indexing import build_faiss_index, update_faiss_index
from sisyphus_db.serve.app import create_app
from sisyphus_db.serve.auth import prepare_tokens, read_tokens
from sisyphus_db.serve.state import ServeConfig
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import find_model, register_model
from sisyphus_db.store.vectors import vectors_by_id

MODEL = "efficientnet-lite0"
INJECTION = "berlin' OR '1'='1"


@dataclass
class World:
    url: str
    home: Path
    db: Database
    client: TestClient
    images: dict[str, list[Path]]  # folder -> image files
    frames: dict[int, dict[str, Any]]  # frame id -> {source_id, city, speed, pts, kind, path}
    video: Path
    video_source: int
    big_frame: int


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(MODEL, device="cpu")


def _ingest(db: Database, paths: list[Path], embedder: Embedder, tags: dict[str, str]) -> None:
    options = IngestOptions(keyframes=KeyframeOptions(method="scene"), workers=1, tags=tags, device="cpu")
    summary = run_ingest(db, paths, options, embedder=embedder)
    assert summary.errors == 0, summary.error_details


def _frames(db: Database) -> dict[int, dict[str, Any]]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT f.id, f.source_id, f.pts_seconds AS pts, f.path, s.kind, s.tags->>'city' AS city, "
            "s.tags->>'speed' AS speed FROM frames f JOIN sources s ON s.id = f.source_id ORDER BY f.id")).mappings()
        return {row["id"]: dict(row) for row in rows}


@pytest.fixture(scope="module")
def world(pg_server: EmbeddedServer, template_url: str, tmp_path_factory: pytest.TempPathFactory,
          embedder: Embedder) -> Iterator[World]:
    root = tmp_path_factory.mktemp("serve-world")
    url = create_database_from_template(pg_server)
    home = root / "home"
    db = open_database(Settings(home=home, database_url=url))
    images: dict[str, list[Path]] = {}
    for folder, seeds in {"berlin": range(0, 5), "paris": range(10, 15), "inject": range(20, 22)}.items():
        images[folder] = [synthetic.write_test_image(root / folder / f"img{seed:02d}.jpg", seed) for seed in seeds]
    images["berlin"].append(synthetic.write_test_image(root / "berlin" / "big.jpg", 99, size=(800, 600)))
    _ingest(db, [root / "berlin"], embedder, {"city": "berlin", "speed": "60"})
    _ingest(db, [root / "paris"], embedder, {"city": "paris", "speed": "30"})
    _ingest(db, [root / "inject"], embedder, {"city": INJECTION, "speed": "45"})
    video = root / "clip.mp4"
    synthetic.write_test_video(video, synthetic.default_segments(4, 2.0), fps=10)
    _ingest(db, [video], embedder, {"city": "oslo"})
    # A second model with vectors but no index: searching it is a clear 409, not a 500.
    other = register_model(db, name="no-index-8", dim=8, weights_sha256="0" * 64, pooling="avg", preprocessing={})
    frames = _frames(db)
    any_source = next(iter(frames.values()))["source_id"]
    load_frames(db, other.id, [FrameRow(source_id=any_source, frame_index=900 + i, pts_seconds=0.0,
                                        path=f"/nowhere/{i}.jpg", width=8, height=8, sha256=f"{i:064x}",
                                        keyframe_method="image") for i in range(3)],
                np.eye(3, 8, dtype=np.float32))
    model = find_model(db, MODEL)
    assert model is not None
    build_faiss_index(db, model, factory="Flat")
    frames = {i: f for i, f in _frames(db).items() if not f["path"].startswith("/nowhere/")}
    video_source = next(f["source_id"] for f in frames.values() if f["kind"] == "video")
    big_frame = next(i for i, f in frames.items() if f["path"].endswith("big.jpg"))
    app = create_app(ServeConfig(Settings(home=home, database_url=url), model=MODEL, registry_ttl_s=0.0))
    with TestClient(app) as client:
        yield World(url, home, db, client, images, frames, video, video_source, big_frame)
    db.dispose()


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def _error(response: httpx.Response, status: int, *needles: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    assert "Traceback" not in response.text
    for needle in needles:
        assert needle in body["error"], body["error"]
    return body["error"]


def _search(world: World, **body: Any) -> dict[str, Any]:
    return _ok(world.client.post("/api/search", json=body))


def _ids(document: dict[str, Any]) -> list[int]:
    return [row["frame_id"] for row in document["results"]]


def _frame_of(world: World, folder: str, index: int = 0) -> int:
    path = str(world.images[folder][index])
    return next(i for i, f in world.frames.items() if f["path"] == path)


def _counts(db: Database) -> tuple[int, ...]:
    with db.transaction() as conn:
        return tuple(int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
                     for table in ("search_runs", "search_results", "labels", "frames", "ann_indexes"))


# ---- health, config, docs ---------------------------------------------------------------------


def test_health_ready_config_and_openapi(world: World) -> None:
    assert _ok(world.client.get("/healthz")) == {"status": "ok"}
    ready = world.client.get("/readyz")
    # Two models are stored and one has no index: ready, and the one without an index is listed.
    assert ready.status_code == 200 and ready.json()["not_indexed"] == ["no-index-8"], ready.text
    loaded = [entry for entry in ready.json()["indexes"] if entry["model"] == MODEL]
    assert loaded[0]["loaded"] is True and loaded[0]["ntotal"] == len(world.frames)
    config = _ok(world.client.get("/api/config"))
    assert config["defaults"]["model"] == MODEL and config["user"] == current_user() and config["auth"] is False
    names = {m["name"]: m for m in config["models"]}
    assert names[MODEL]["can_embed_images"] is True and names[MODEL]["faiss_index"]["factory"] == "Flat"
    assert names["no-index-8"]["faiss_index"] is None
    assert {"city", "speed"} <= set(config["filters"]["tag_keys"])
    assert "between" in config["filters"]["ops"]
    paths = _ok(world.client.get("/openapi.json"))["paths"]
    for path in ("/api/search", "/api/search/image", "/api/frames/{frame_id}/thumbnail", "/api/sources/{source_id}/frames",
                 "/api/runs/{run_id}", "/api/labels/{name}/discover", "/api/labels/{name}/frames/{frame_id}"):
        assert path in paths
    assert world.client.get("/docs").status_code == 200


# ---- search ------------------------------------------------------------------------------------


def test_search_by_frame_vector_and_text_store_runs(world: World) -> None:
    frame = _frame_of(world, "berlin", 1)
    document = _search(world, frame_id=frame, k=5)
    assert document["run_id"] is not None and document["elapsed_ms"] > 0 and document["backend"] == "faiss"
    first = document["results"][0]
    assert first["frame_id"] == frame and first["distance"] < 1e-3
    assert set(first) >= {"rank", "frame_id", "distance", "path", "source_id", "source_uri", "pts_seconds",
                          "thumbnail_url", "labels"}
    assert first["thumbnail_url"] == f"/api/frames/{frame}/thumbnail" and first["labels"] == []
    assert [row["rank"] for row in document["results"]] == [1, 2, 3, 4, 5]
    distances = [row["distance"] for row in document["results"]]
    assert distances == sorted(distances)
    # The run is stored with the same ranking.
    run = _ok(world.client.get(f"/api/runs/{document['run_id']}"))
    assert _ids(run) == _ids(document) and run["run"]["query"] == {"kind": "frame", "frame_id": frame}

    model = find_model(world.db, MODEL)
    assert model is not None
    _, vectors = vectors_by_id(world.db, model.id, model.dim, [frame])
    by_vector = _search(world, vector=vectors[0].tolist(), k=5)
    assert _ids(by_vector) == _ids(document)
    by_text = _search(world, text="street sign", k=3)
    assert len(by_text["results"]) == 3
    # The exact backend agrees with faiss on a Flat index (near-ties may swap: halfvec rounding).
    exact = _search(world, frame_id=frame, k=5, backend="exact")
    assert set(_ids(exact)) == set(_ids(document)) and _ids(exact)[0] == frame
    assert [r["distance"] for r in exact["results"]] == pytest.approx(distances, abs=1e-3)
    assert _search(world, frame_id=frame, k=5, save=False)["run_id"] is None


def test_search_by_uploaded_image_finds_the_ingested_frame(world: World) -> None:
    path = world.images["paris"][2]
    frame = _frame_of(world, "paris", 2)
    response = world.client.post("/api/search/image", files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                                 data={"k": "4", "per_source": "", "filters": ""})
    document = _ok(response)
    assert document["results"][0]["frame_id"] == frame and document["results"][0]["distance"] < 1e-3
    assert len(document["results"]) == 4
    run = _ok(world.client.get(f"/api/runs/{document['run_id']}"))["run"]
    assert run["query"]["kind"] == "image" and run["query"]["upload"] == path.name
    # With form filters: only the other cities.
    filtered = _ok(world.client.post(
        "/api/search/image", files={"file": (path.name, path.read_bytes(), "image/jpeg")},
        data={"k": "50", "filters": '[{"field": "sources.tags.city", "op": "!=", "value": "paris"}]'}))
    assert filtered["results"] and all(world.frames[i]["city"] != "paris" for i in _ids(filtered))


def _matching(world: World, condition: Any) -> set[int]:
    return {i for i, f in world.frames.items() if condition(f)}


FILTER_CASES: list[tuple[str, list[dict[str, Any]], Any]] = [
    ("=", [{"field": "sources.tags.city", "op": "=", "value": "berlin"}], lambda f: f["city"] == "berlin"),
    ("!=", [{"field": "sources.tags.city", "op": "!=", "value": "berlin"}], lambda f: f["city"] != "berlin"),
    ("<", [{"field": "sources.tags.speed", "op": "<", "value": 45}], lambda f: f["speed"] == "30"),
    ("<=", [{"field": "sources.tags.speed", "op": "<=", "value": 45}], lambda f: f["speed"] in ("30", "45")),
    (">", [{"field": "sources.tags.speed", "op": ">", "value": 45}], lambda f: f["speed"] == "60"),
    (">=", [{"field": "sources.tags.speed", "op": ">=", "value": 45.0}], lambda f: f["speed"] in ("45", "60")),
    ("in", [{"field": "sources.tags.city", "op": "in", "value": ["paris", "oslo"]}],
     lambda f: f["city"] in ("paris", "oslo")),
    ("between", [{"field": "frames.pts_seconds", "op": "between", "value": [1.5, 5]}],
     lambda f: 1.5 <= f["pts"] <= 5),
    ("is_null", [{"field": "sources.tags.speed", "op": "is_null", "value": True}], lambda f: f["speed"] is None),
    ("is_not_null", [{"field": "sources.tags.speed", "op": "is_null", "value": False}],
     lambda f: f["speed"] is not None),
    ("column", [{"field": "sources.kind", "op": "=", "value": "video"}, {"field": "frames.pts_seconds", "op": ">",
                                                                       "value": 0}],
     lambda f: f["kind"] == "video" and f["pts"] > 0),
    ("int-in", [{"field": "frames.source_id", "op": "in", "value": [-1]}], lambda f: False),
    ("metadata", [{"field": "frames.metadata.camera", "op": "is_null"}], lambda f: True),
    ("injection", [{"field": "sources.tags.city", "op": "=", "value": INJECTION}], lambda f: f["city"] == INJECTION),
    ("injection-nothing", [{"field": "sources.tags.city", "op": "=", "value": "x' OR '1'='1"}], lambda f: False),
    ("injection-key", [{"field": "sources.tags.city') OR (1=1", "op": "is_null", "value": False}], lambda f: False),
]


@pytest.mark.parametrize("backend", ["faiss", "exact"])
@pytest.mark.parametrize(("case", "filters", "expected"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_each_filter_operator_keeps_exactly_the_matching_frames(world: World, backend: str, case: str,
                                                                filters: list[dict[str, Any]], expected: Any) -> None:
    query = _frame_of(world, "berlin", 0)
    document = _search(world, frame_id=query, k=100, filters=filters, backend=backend)
    assert set(_ids(document)) == _matching(world, expected), case
    if document["run_id"] is not None:
        stored = _ok(world.client.get(f"/api/runs/{document['run_id']}"))["run"]["filter"]
        assert stored is not None and filters[0]["field"] in stored


def test_injection_values_are_matched_literally_and_change_nothing(world: World) -> None:
    before = _counts(world.db)
    document = _search(world, frame_id=_frame_of(world, "paris"), k=100, save=False,
                       filters=[{"field": "sources.uri", "op": "=", "value": "x'; DELETE FROM frames; --"}])
    assert document["results"] == []
    assert _counts(world.db) == before


def test_per_source_and_exclude_source_of_query(world: World) -> None:
    query = _frame_of(world, "berlin", 2)
    capped = _search(world, frame_id=query, k=4, per_source=1)
    sources = [row["source_id"] for row in capped["results"]]
    assert len(sources) == 4 and len(set(sources)) == 4
    excluded = _search(world, frame_id=query, k=100, exclude_source_of_query=True)
    own = world.frames[query]["source_id"]
    assert excluded["results"] and all(row["source_id"] != own for row in excluded["results"])
    assert len(excluded["results"]) == len([f for f in world.frames.values() if f["source_id"] != own])


# ---- frames, sources, runs ---------------------------------------------------------------------


def test_frame_metadata_image_and_cached_thumbnail(world: World) -> None:
    frame = world.big_frame
    detail = _ok(world.client.get(f"/api/frames/{frame}"))
    assert detail["id"] == frame and detail["tags"]["city"] == "berlin" and detail["width"] == 800
    assert detail["image_url"] == f"/api/frames/{frame}/image" and detail["labels"] == []
    image = world.client.get(f"/api/frames/{frame}/image")
    assert image.status_code == 200 and image.content == Path(world.frames[frame]["path"]).read_bytes()
    thumb = world.client.get(f"/api/frames/{frame}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as picture:
        assert max(picture.size) == 320 and picture.size == (320, 240)
    cached = list((world.home / "thumbnails").rglob(f"{frame}-*.jpg"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert world.client.get(f"/api/frames/{frame}/thumbnail").content == thumb.content
    assert cached[0].stat().st_mtime_ns == stamp  # served from the cache, not made again
    small = _frame_of(world, "paris")
    with Image.open(io.BytesIO(world.client.get(f"/api/frames/{small}/thumbnail").content)) as picture:
        assert picture.size == (96, 72)  # never enlarged


def test_sources_pages_timeline_and_video_ranges(world: World) -> None:
    listing = _ok(world.client.get("/api/sources", params={"limit": 2}))
    assert listing["total"] == 4 and len(listing["sources"]) == 2 and listing["offset"] == 0
    second = _ok(world.client.get("/api/sources", params={"page": 2, "per_page": 2}))
    assert [s["id"] for s in second["sources"]] != [s["id"] for s in listing["sources"]]
    assert len(second["sources"]) == 2
    everything = _ok(world.client.get("/api/sources"))["sources"]
    assert sum(s["frames"] for s in everything) == len(world.frames) + 3  # + the other model's rows
    assert _ok(world.client.get("/api/sources", params={"q": "clip.mp4"}))["total"] == 1
    video = _ok(world.client.get(f"/api/sources/{world.video_source}"))
    assert video["kind"] == "video" and video["video_url"] == f"/api/sources/{world.video_source}/video"
    timeline = _ok(world.client.get(f"/api/sources/{world.video_source}/frames", params={"limit": 2}))
    expected = sorted((f["pts"], i) for i, f in world.frames.items() if f["source_id"] == world.video_source)
    assert timeline["total"] == len(expected) >= 3
    assert [f["id"] for f in timeline["frames"]] == [i for _, i in expected[:2]]
    rest = _ok(world.client.get(f"/api/sources/{world.video_source}/frames", params={"offset": 2, "limit": 100}))
    assert [f["id"] for f in rest["frames"]] == [i for _, i in expected[2:]]
    assert all("labels" in f and f["thumbnail_url"] for f in rest["frames"])
    size = world.video.stat().st_size
    full = world.client.get(f"/api/sources/{world.video_source}/video")
    assert full.status_code == 200 and full.content == world.video.read_bytes()
    part = world.client.get(f"/api/sources/{world.video_source}/video", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == world.video.read_bytes()[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{size}"
    image_source = world.frames[_frame_of(world, "paris")]["source_id"]
    _error(world.client.get(f"/api/sources/{image_source}/video"), 404, "not a video")


def test_runs_list_and_pages_of_results(world: World) -> None:
    document = _search(world, frame_id=_frame_of(world, "inject"), k=7, name="paged")
    runs = _ok(world.client.get("/api/runs", params={"limit": 3}))
    assert runs["total"] >= 1 and runs["runs"][0]["id"] == document["run_id"]
    assert runs["runs"][0]["results"] == 7 and runs["runs"][0]["name"] == "paged"
    page = _ok(world.client.get(f"/api/runs/{document['run_id']}", params={"offset": 5, "limit": 5}))
    assert page["total"] == 7 and [r["rank"] for r in page["results"]] == [6, 7]
    assert _ids(page) == _ids(document)[5:]
    assert all(r["thumbnail_url"].endswith("/thumbnail") for r in page["results"])


# ---- labels ------------------------------------------------------------------------------------


def test_labels_through_the_api_are_library_rows(world: World) -> None:
    search = _search(world, frame_id=_frame_of(world, "paris"), k=3)
    a, b, c = _ids(search)
    added = _ok(world.client.post("/api/labels", json={"name": "scooter", "frame_ids": [a, b], "positive": True,
                                                        "run_id": search["run_id"]}))
    assert added["added"] == 2 and added["created_by"] == current_user()
    _ok(world.client.post("/api/labels", json={"name": "scooter", "frame_ids": [c], "positive": False}))
    with world.db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, positive, run_id, rule, created_by FROM labels "
                                    "WHERE label = 'scooter' ORDER BY frame_id")).all()
    assert {(r[0], r[1]) for r in rows} == {(a, True), (b, True), (c, False)}
    assert {r[4] for r in rows} == {current_user()}
    assert {r[0]: r[2] for r in rows}[a] == search["run_id"] and {r[0]: r[3] for r in rows}[c] == "api"
    summary = next(s for s in _ok(world.client.get("/api/labels"))["labels"] if s["label"] == "scooter")
    assert (summary["positives"], summary["negatives"]) == (2, 1)
    detail = _ok(world.client.get("/api/labels/scooter"))
    assert {f["frame_id"] for f in detail["positive_frames"]} == {a, b}
    assert detail["negative_frames"][0]["thumbnail_url"] == f"/api/frames/{c}/thumbnail"
    # The search results now carry the labels.
    again = _search(world, frame_id=_frame_of(world, "paris"), k=3)
    marks = {row["frame_id"]: row["labels"] for row in again["results"]}
    assert marks[a][0]["name"] == "scooter" and marks[c][0]["positive"] is False
    frame_labels = _ok(world.client.get(f"/api/frames/{c}"))["labels"]
    assert frame_labels == [{"name": "scooter", "positive": False, "origin": "manual", "score": None}]
    removed = _ok(world.client.delete(f"/api/labels/scooter/frames/{c}"))
    assert removed["removed"] == 1
    _error(world.client.delete(f"/api/labels/scooter/frames/{c}"), 404, "not on frame")
    pytest.importorskip("sisyphus_db.label.discover")
    proposals = _ok(world.client.post("/api/labels/scooter/discover", json={"k": 3}))
    assert proposals["label"] == "scooter" and len(proposals["results"]) == 3
    assert not {a, b} & set(_ids(proposals))  # labelled frames are not proposed again
    assert all(r["thumbnail_url"] and "labels" in r for r in proposals["results"])
    assert _ok(world.client.get(f"/api/runs/{proposals['run_id']}"))["total"] == 3
    with world.db.transaction() as conn:
        conn.execute(sa.text("DELETE FROM labels WHERE label = 'scooter'"))


# ---- bad input ---------------------------------------------------------------------------------


def _upload(world: World, data: bytes, **form: str) -> httpx.Response:
    return world.client.post("/api/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, data=form)


def test_every_bad_input_is_a_4xx_json_error_and_changes_nothing(world: World, tmp_path: Path) -> None:
    frame = _frame_of(world, "berlin")
    good = world.images["berlin"][0].read_bytes()
    truncated = synthetic.write_truncated_jpeg(tmp_path / "cut.jpg").read_bytes()
    bomb = synthetic.write_decompression_bomb_png(tmp_path / "bomb.png").read_bytes()
    before = _counts(world.db)
    client = world.client
    # Uploads: not an image, truncated, empty, a decompression bomb, over the size limit, no file.
    _error(_upload(world, b"hello, not an image"), 422, "not an image")
    _error(_upload(world, truncated), 422, "truncated")
    _error(_upload(world, b""), 422, "empty")
    _error(_upload(world, bomb), 422, "too large")
    _error(_upload(world, good + b"\0" * (21 << 20)), 413, "20 MB")
    _error(client.post("/api/search/image", data={"k": "3"}), 422, "file")
    _error(_upload(world, good, k="many"), 400, "k must be an integer")
    _error(_upload(world, good, filters="[{"), 400, "not valid JSON")
    _error(_upload(world, good, filters='{"field": "x"}'), 400, "JSON list")
    _error(_upload(world, good, backend="annoy"), 400, "unknown backend")
    _error(_upload(world, good, model="no-index-8"), 409, "no-index-8")
    # Unknown things.
    _error(client.post("/api/search", json={"frame_id": 999_999_999}), 404, "frame 999999999 does not exist")
    _error(client.get("/api/frames/999999999"), 404, "frame 999999999 does not exist")
    _error(client.get("/api/frames/999999999/image"), 404)
    _error(client.get("/api/frames/999999999/thumbnail"), 404)
    _error(client.get("/api/sources/999999999"), 404, "source 999999999")
    _error(client.get("/api/sources/999999999/frames"), 404)
    _error(client.get("/api/sources/999999999/video"), 404)
    _error(client.get("/api/runs/999999999"), 404, "search run 999999999")
    _error(client.get("/api/labels/nope"), 404, "no label named 'nope'")
    _error(client.delete("/api/labels/nope/frames/1"), 404)
    _error(client.post("/api/labels/nope/discover", json={}), 404)
    _error(client.post("/api/labels", json={"name": "x", "frame_ids": [999_999_999]}), 400, "unknown frame")
    _error(client.post("/api/labels", json={"name": "x", "frame_ids": [frame], "run_id": 999_999_999}), 400,
           "search run")
    _error(client.post("/api/labels", json={"name": "a/b", "frame_ids": [frame]}), 400, "slashes")
    _error(client.post("/api/labels", json={"name": "x", "frame_ids": []}), 422, "frame_ids")
    _error(client.get("/api/nothing-here"), 404, "no such endpoint")
    _error(client.put("/api/search"), 405)
    # Filters: malformed, unknown fields and operators, wrong value types.
    for filters, needle in [
        ([{"field": "frames.nope", "op": "=", "value": 1}], "unknown filter field"),
        ([{"field": "frames.id; DROP TABLE frames", "op": "=", "value": 1}], "unknown filter field"),
        ([{"field": "frames.pts_seconds", "op": "~", "value": 1}], "unknown operator"),
        ([{"field": "frames.pts_seconds", "op": ">"}], "number"),
        ([{"field": "frames.pts_seconds", "op": ">", "value": "ten"}], "number"),
        ([{"field": "frames.id", "op": "in", "value": []}], "non-empty list"),
        ([{"field": "frames.id", "op": "between", "value": [1]}], "two values"),
        ([{"field": "frames.captured_at", "op": ">", "value": "yesterday"}], "ISO 8601"),
        ([{"field": "sources.tags.", "op": "=", "value": "x"}], "key"),
        ([{"field": "sources.tags.speed", "op": "in", "value": [1, "a"]}], "mix"),
        ([{"field": "frames.id", "op": "=", "value": 1, "sql": "1=1"}], "unknown keys"),
        (["frames.id = 1"], "must be an object"),
    ]:
        _error(client.post("/api/search", json={"frame_id": frame, "filters": filters}), 400, needle)
    # Query shapes.
    _error(client.post("/api/search", json={"vector": [0.1, 0.2, 0.3]}), 400, "1280-d")
    _error(client.post("/api/search", json={"vector": [0.0] * 1280}), 400, "no direction")
    _error(client.post("/api/search", json={"frame_id": frame, "text": "cat"}), 400, "exactly one")
    _error(client.post("/api/search", json={}), 400, "exactly one")
    _error(client.post("/api/search", json={"text": "zzzz-not-a-class"}), 400)
    _error(client.post("/api/search", json={"vector": [1.0] * 1280, "exclude_source_of_query": True}), 400,
           "frame_id")
    _error(client.post("/api/search", json={"frame_id": frame, "k": 0}), 422, "k")
    _error(client.post("/api/search", json={"frame_id": frame, "backend": "annoy"}), 422, "backend")
    _error(client.post("/api/search", json={"frame_id": frame, "where": "1=1"}), 422, "where")
    _error(client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"}), 422)
    _error(client.post("/api/search", json={"frame_id": frame, "nprobe": 4}), 400, "nprobe")  # Flat: no lists
    # A model without an index.
    _error(client.post("/api/search", json={"vector": [1.0] * 8, "model": "no-index-8"}), 409,
           "no ready faiss index")
    _error(client.post("/api/search", json={"frame_id": frame, "model": "resnet-nope"}), 400, "no vectors")
    _error(client.get("/api/sources", params={"limit": 0}), 400, "limit")
    # Ids beyond bigint are refused, never a 500.
    huge = str(2**70)
    for path in (f"/api/frames/{huge}", f"/api/frames/{huge}/thumbnail", f"/api/sources/{huge}/frames",
                 f"/api/runs/{huge}", f"/api/sources?offset={huge}"):
        response = client.get(path)
        assert response.status_code in (400, 404), (path, response.text)
        _error(response, response.status_code)
    _error(client.delete(f"/api/labels/nope/frames/{huge}"), 404)
    _error(client.post("/api/search", json={"frame_id": 2**70}), 422, "frame_id")
    _error(client.post("/api/labels", json={"name": "x", "frame_ids": [2**70]}), 422, "frame_ids")
    _error(client.get("/api/runs", params={"offset": 1, "page": 2}), 400, "not both")
    assert _counts(world.db) == before


# ---- concurrency and index swaps ------------------------------------------------------------------


def test_concurrent_searches_give_the_sequential_answers(world: World) -> None:
    queries = list(world.frames)[:8]
    expected = {q: _ids(_search(world, frame_id=q, k=5, save=False)) for q in queries}

    def one(q: int) -> tuple[int, list[int]]:
        return q, _ids(_search(world, frame_id=q, k=5, save=False))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, queries * 4))
    assert all(ids == expected[q] for q, ids in answers)


@pytest.mark.slow
def test_a_new_index_is_picked_up_while_the_app_runs(pg_server: EmbeddedServer, template_url: str, tmp_path: Path,
                                                      embedder: Embedder) -> None:
    url = create_database_from_template(pg_server)
    settings = Settings(home=tmp_path / "home", database_url=url)
    db = open_database(settings)
    first = [synthetic.write_test_image(tmp_path / "a" / f"{i}.jpg", 40 + i) for i in range(3)]
    _ingest(db, [tmp_path / "a"], embedder, {})
    model = find_model(db, MODEL)
    assert model is not None
    build_faiss_index(db, model, factory="Flat")
    app = create_app(ServeConfig(settings, registry_ttl_s=0.0))
    # A second server that has not looked at the registry again yet: it keeps searching the
    # generation it loaded, even after `index update` replaced the file and deleted its refine store.
    lagging = TestClient(create_app(ServeConfig(settings, registry_ttl_s=3600.0)))
    with TestClient(app) as client, lagging:
        _ok(lagging.post("/api/search", json={"text": "street sign", "k": 10}))
        old = {row["frame_id"] for row in _ok(client.post("/api/search", json={"text": "street sign", "k": 10}))
               ["results"]}
        assert len(old) == 3
        [synthetic.write_test_image(tmp_path / "b" / f"{i}.jpg", 50 + i) for i in range(2)]
        _ingest(db, [tmp_path / "b"], embedder, {})
        pending = _ok(client.post("/api/search", json={"text": "street sign", "k": 10}))
        assert {row["frame_id"] for row in pending["results"]} == old
        assert any("index update" in warning for warning in pending["warnings"])
        update_faiss_index(db, model)
        stale = _ok(lagging.post("/api/search", json={"text": "street sign", "k": 10}))
        assert {row["frame_id"] for row in stale["results"]} == old
        fresh = _ok(client.post("/api/search", json={"text": "street sign", "k": 10}))
        assert len(fresh["results"]) == 5 and not fresh["warnings"]
        newest = max(row["frame_id"] for row in fresh["results"])
        assert _ok(client.post("/api/search", json={"frame_id": newest, "k": 1}))["results"][0]["frame_id"] == newest
        # A registry row whose file does not match (yet) is never loaded: the index in memory keeps serving.
        with db.transaction() as conn:
            conn.execute(sa.text("UPDATE ann_indexes SET sha256 = :s"), {"s": "f" * 64})
        still = _ok(client.post("/api/search", json={"text": "street sign", "k": 10}))
        assert len(still["results"]) == 5
        # A dropped index is a clear 409.
        with db.transaction() as conn:
            conn.execute(sa.text("DELETE FROM ann_indexes"))
        _error(client.post("/api/search", json={"text": "street sign", "k": 10}), 409, "sisyphus index build")
        assert len(_ok(client.post("/api/search", json={"text": "street sign", "k": 10, "backend": "exact"}))
                   ["results"]) == 5
    db.dispose()
    del first


# ---- the token rule ----------------------------------------------------------------------------


def test_a_non_loopback_bind_refuses_to_start_without_a_token(world: World, tmp_path: Path) -> None:
    settings = Settings(home=world.home, database_url=world.url)
    with pytest.raises(ConfigError, match="needs a token"):
        create_app(ServeConfig(settings, host="0.0.0.0"))
    assert prepare_tokens("127.0.0.1", None, tmp_path) is None
    generated = prepare_tokens("0.0.0.0", None, tmp_path)
    assert generated is not None and generated.generated and len(generated.generated) >= 32
    path = tmp_path / "serve-token"
    assert path.stat().st_mode & 0o777 == 0o600
    again = prepare_tokens("0.0.0.0", None, tmp_path)  # the same file: the same token, not printed again
    assert again is not None and again.first == generated.first and again.generated is None
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_tokens(path)


def test_with_a_token_every_request_must_carry_it(world: World, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("alice " + "a" * 32 + "\n" + "b" * 32 + "\n")
    token_file.chmod(0o600)
    tokens = prepare_tokens("0.0.0.0", token_file, tmp_path)
    assert tokens is not None and tokens.names == {"a" * 32: "alice", "b" * 32: "token"}
    app = create_app(ServeConfig(Settings(home=world.home, database_url=world.url), host="0.0.0.0", tokens=tokens,
                                 model=MODEL, preload=False))
    frame = _frame_of(world, "berlin")
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200  # liveness only, no data
        for path in ("/api/config", "/readyz", f"/api/frames/{frame}", f"/api/frames/{frame}/image", "/",
                     "/openapi.json"):
            _error(client.get(path), 401, "token")
            _error(client.get(path, headers={"Authorization": "Bearer " + "c" * 32}), 401)
            _error(client.get(path, params={"token": "a" * 31}), 401)
        _error(client.post("/api/search", json={"frame_id": frame}), 401)
        # A refused upload is not even read.
        _error(client.post("/api/search/image", files={"file": ("q.jpg", b"x" * 1000, "image/jpeg")}), 401)
        bearer = {"Authorization": "Bearer " + "a" * 32}
        assert _ok(client.get("/api/config", headers=bearer))["user"] == "alice"
        assert client.get(f"/api/frames/{frame}/image", params={"token": "b" * 32}).status_code == 200
        assert client.get(f"/api/frames/{frame}/thumbnail", params={"token": "a" * 32}).status_code == 200
        assert _ok(client.post("/api/search", json={"frame_id": frame, "k": 2, "save": False}, headers=bearer))
        _ok(client.post("/api/labels", json={"name": "by-alice", "frame_ids": [frame]}, headers=bearer))
    with world.db.transaction() as conn:
        who = conn.execute(sa.text("SELECT created_by FROM labels WHERE label = 'by-alice'")).scalar_one()
        conn.execute(sa.text("DELETE FROM labels WHERE label = 'by-alice'"))
    assert who == "alice"


# ---- the real server -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_sisyphus_serve_answers_on_loopback_and_stops_cleanly_on_ctrl_c(world: World) -> None:
    port = _free_port()
    env = {**os.environ, "SISYPHUS_HOME": str(world.home), "SISYPHUS_DATABASE_URL": world.url}
    process = subprocess.Popen([sys.executable, "-m", "sisyphus_db.cli.main", "serve", "--port", str(port),
                                "--model", MODEL], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        frame = _frame_of(world, "paris")
        answer = httpx.post(f"http://127.0.0.1:{port}/api/search", json={"frame_id": frame, "k": 3}, timeout=30)
        assert answer.status_code == 200 and answer.json()["results"][0]["frame_id"] == frame
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}/" in stderr and "stopped" in stderr and "Traceback" not in stderr


def test_serve_refuses_a_token_file_others_can_read(cli: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("x" * 32 + "\n")
    token_file.chmod(0o644)
    result = cli("serve", "--host", "0.0.0.0", "--token-file", str(token_file))
    assert result.exit_code != 0 and "chmod 600" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_streamed_upload_is_cut_off_at_the_limit(world: World) -> None:
    app = create_app(ServeConfig(Settings(home=world.home, database_url=world.url), model=MODEL, max_upload_mb=0.5,
                                 preload=False))
    boundary = "sisyphus-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield head
        for _ in range(40):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    before = _counts(world.db)
    with TestClient(app) as client:
        response = client.post("/api/search/image", content=chunks(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        _error(response, 413, "0.5 MB")
        # Just under the limit, the file itself is still checked against it.
        small = world.images["berlin"][0].read_bytes()
        assert client.post("/api/search/image", files={"file": ("q.jpg", small, "image/jpeg")},
                           data={"k": "2"}).status_code == 200
    assert _counts(world.db)[2:] == before[2:]


@pytest.mark.slow
def test_concurrent_uploads_are_embedded_in_batches_and_each_gets_its_own_answer(world: World,
                                                                                 embedder: Embedder) -> None:
    from sisyphus_db.media.images import load_image
    from sisyphus_db.serve.embedding import EmbedBatcher

    class Gated:  # the real model, held at its first pass until the others have queued
        spec = embedder.spec

        def __init__(self) -> None:
            self.gate = threading.Event()
            self.calls = 0

        def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
            self.calls += 1
            if self.calls == 1:
                assert self.gate.wait(30)
            return embedder.embed_images(images)

    images = [load_image(path).rgb for path in world.images["paris"][:5]]
    gated, batcher = Gated(), EmbedBatcher()
    try:
        with ThreadPoolExecutor(max_workers=5) as pool:
            first = pool.submit(batcher.embed, gated, images[0])
            while batcher._queue.qsize():  # the worker has taken the first job
                time.sleep(0.01)
            rest = [pool.submit(batcher.embed, gated, image) for image in images[1:]]
            while batcher._queue.qsize() < 4:
                time.sleep(0.01)
            gated.gate.set()
            vectors = [first.result(60)] + [future.result(60) for future in rest]
        assert batcher.batches[-2:] == [1, 4]
        singles = embedder.embed_images(images)
        np.testing.assert_allclose(np.stack(vectors), singles, atol=1e-4)
    finally:
        batcher.close()
    # Through the API: concurrent uploads of different images each find their own frame.
    paths = world.images["paris"][:4] * 2

    def upload(path: Path) -> tuple[Path, int]:
        document = _ok(world.client.post("/api/search/image", files={"file": (path.name, path.read_bytes(),
                                                                              "image/jpeg")}, data={"k": "1"}))
        return path, document["results"][0]["frame_id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        for path, frame in pool.map(upload, paths):
            assert world.frames[frame]["path"] == str(path)


def test_serve_says_in_one_line_when_the_port_is_taken(cli: Any, world: World) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("--database-url", world.url, "serve", "--port", str(port))
    assert result.exit_code != 0 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_the_listening_socket_gives_connections_without_nagle_delays() -> None:
    from sisyphus_db.cli.serve import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        # asyncio sets TCP_NODELAY on accepted connections only for sockets with IPPROTO_TCP:
        # with proto 0, Nagle and delayed ACKs added ~40 ms to every small request.
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
    finally:
        sock.close()


# ---- a small world of random vectors: index swaps, deleted frames, readiness -----------------------


@dataclass
class Tiny:
    settings: Settings
    db: Database
    frames: list[int]


TINY_MODEL = "tiny-16"


def _tiny_world(pg_server: EmbeddedServer, tmp_path: Path, *, count: int = 40) -> Tiny:
    """One source of `count` frames with random 16-d vectors under TINY_MODEL, and its Flat faiss index."""
    from sisyphus_db.store.registry import upsert_source

    url = create_database_from_template(pg_server)
    settings = Settings(home=tmp_path / "home", database_url=url)
    db = open_database(settings)
    model = register_model(db, name=TINY_MODEL, dim=16, weights_sha256="1" * 64, pooling="avg", preprocessing={})
    source = upsert_source(db, uri=str(tmp_path / "tiny"), kind="folder", tags={}, keyframe_method="image")
    vectors = np.random.default_rng(3).standard_normal((count, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    load_frames(db, model.id, [FrameRow(source_id=source.id, frame_index=i, pts_seconds=float(i),
                                        path=f"/tiny/{i}.jpg", width=8, height=8, sha256=f"{i + 1:064x}",
                                        keyframe_method="image") for i in range(count)], vectors)
    build_faiss_index(db, model, factory="Flat")
    with db.transaction() as conn:
        frames = [int(i) for i in conn.execute(sa.text("SELECT id FROM frames ORDER BY id")).scalars()]
    return Tiny(settings, db, frames)


def _delete_frames(db: Database, frame_ids: list[int]) -> None:
    with db.transaction() as conn:
        conn.execute(sa.text("DELETE FROM frames WHERE id = ANY(:ids)"), {"ids": frame_ids})


def test_discover_keeps_the_loaded_index_after_index_update_swaps_its_files(pg_server: EmbeddedServer,
                                                                            template_url: str, tmp_path: Path) -> None:
    from sisyphus_db.label.labels import add_labels
    from sisyphus_db.search.refine_sidecar import refine_files
    from sisyphus_db.store.indexes import find_index

    pytest.importorskip("sisyphus_db.label.discover")
    tiny = _tiny_world(pg_server, tmp_path)
    model = find_model(tiny.db, TINY_MODEL)
    assert model is not None
    old = find_index(tiny.db, model.id, "faiss")
    assert old is not None and refine_files(old) is not None
    add_labels(tiny.db, "tiny", tiny.frames[:3], positive=True, created_by="test")
    add_labels(tiny.db, "tiny", tiny.frames[3:4], positive=False, created_by="test")
    # A server that has not looked at the registry again yet keeps its generation in memory.
    lagging = TestClient(create_app(ServeConfig(tiny.settings, registry_ttl_s=3600.0)))
    with lagging:
        before = _ok(lagging.post("/api/labels/tiny/discover", json={"k": 5, "method": "rocchio"}))
        assert len(before["results"]) == 5
        # `index update` after a deletion writes a new generation and deletes the old refine files.
        _delete_frames(tiny.db, tiny.frames[-2:])
        update_faiss_index(tiny.db, model)
        assert not Path(str(refine_files(old).vectors_path)).exists()  # type: ignore[union-attr]
        for method in ("rocchio", "classifier"):
            after = _ok(lagging.post("/api/labels/tiny/discover", json={"k": 5, "method": method}))
            assert len(after["results"]) == 5 and not set(_ids(after)) & set(tiny.frames[:4])
            assert not set(_ids(after)) & set(tiny.frames[-2:])  # deleted frames are never proposed
    tiny.db.dispose()


def test_a_frame_deleted_since_the_last_index_update_is_a_404_as_a_query(pg_server: EmbeddedServer,
                                                                         template_url: str, tmp_path: Path) -> None:
    tiny = _tiny_world(pg_server, tmp_path)
    gone, kept = tiny.frames[5], tiny.frames[6]
    with TestClient(create_app(ServeConfig(tiny.settings, registry_ttl_s=0.0))) as client:
        assert _ids(_ok(client.post("/api/search", json={"frame_id": gone, "k": 3})))[0] == gone
        _delete_frames(tiny.db, [gone])  # the faiss index and its refine store still hold its vector
        for body in ({"frame_id": gone, "k": 3}, {"frame_id": gone, "k": 3, "backend": "exact"},
                     {"frame_id": gone, "k": 3, "exclude_source_of_query": True}):
            _error(client.post("/api/search", json=body), 404, f"frame {gone} does not exist")
        found = _ok(client.post("/api/search", json={"frame_id": kept, "k": 40}))
        assert _ids(found)[0] == kept and gone not in _ids(found)
    tiny.db.dispose()


def test_readyz_lists_models_without_an_index_and_fails_on_a_broken_registered_one(pg_server: EmbeddedServer,
                                                                                  template_url: str, tmp_path: Path) -> None:
    from sisyphus_db.store.indexes import find_index

    tiny = _tiny_world(pg_server, tmp_path)
    register_model(tiny.db, name="bare-8", dim=8, weights_sha256="2" * 64, pooling="avg", preprocessing={})
    bare = find_model(tiny.db, "bare-8")
    assert bare is not None
    with tiny.db.transaction() as conn:
        source = int(conn.execute(sa.text("SELECT source_id FROM frames LIMIT 1")).scalar_one())
    load_frames(tiny.db, bare.id, [FrameRow(source_id=source, frame_index=900, pts_seconds=0.0, path="/bare/0.jpg",
                                            width=8, height=8, sha256="e" * 64, keyframe_method="image")],
                np.eye(1, 8, dtype=np.float32))
    settings = tiny.settings
    with TestClient(create_app(ServeConfig(settings, model=TINY_MODEL, registry_ttl_s=0.0))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and "error" not in body
        entries = {entry["model"]: entry for entry in body["indexes"]}
        assert entries[TINY_MODEL]["loaded"] is True and entries[TINY_MODEL]["ntotal"] == len(tiny.frames)
        assert entries["bare-8"]["indexed"] is False and entries["bare-8"]["loaded"] is False
        assert body["not_indexed"] == ["bare-8"]
    model = find_model(tiny.db, TINY_MODEL)
    assert model is not None
    record = find_index(tiny.db, model.id, "faiss")
    assert record is not None and record.path
    path = Path(record.path)
    good = path.read_bytes()
    # A registered index whose file is corrupt or missing: not ready, and it says why.
    for broken in ("corrupt", "missing"):
        if broken == "corrupt":
            path.write_bytes(good[: len(good) // 2])
        else:
            path.unlink()
        with TestClient(create_app(ServeConfig(settings, model=TINY_MODEL, registry_ttl_s=0.0))) as client:
            ready = client.get("/readyz")
            _error(ready, 503, TINY_MODEL)
            entries = {entry["model"]: entry for entry in ready.json()["indexes"]}
            assert entries[TINY_MODEL]["indexed"] is True and entries[TINY_MODEL]["loaded"] is False
            assert entries["bare-8"]["indexed"] is False
    path.write_bytes(good)
    tiny.db.dispose()
