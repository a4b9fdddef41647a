"""Segment windows and pooling, `sisyphus segments build`, and `sisyphus search --video / --segment`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import CliRunner, create_database_from_template

from sisyphus_db.config import Settings
from sisyphus_db.db.database import open_database
from sisyphus_db.db.embedded import EmbeddedServer
from sisyphus_db.errors import InputError
from sisyphus_db.ingest.messages import KeyframeOptions
from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest
from sisyphus_db.media.synthetic import write_garbage_video
from sisyphus_db.search.indexing import resolve_model
from sisyphus_db.temporal.align import temporal_iou
from sisyphus_db.temporal.segments import build_segments
from sisyphus_db.temporal.transforms import make_copy, write_generated_video
from sisyphus_db.temporal.windows import (
    check_window,
    pool_window,
    segment_vectors,
    window_bounds,
)

# ---- window maths ------------------------------------------------------------------------------


def test_window_bounds_and_strides() -> None:
    assert window_bounds(10.0, 4.0) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert window_bounds(8.0, 4.0, 4.0) == [(0.0, 4.0), (4.0, 8.0)]
    # The grid stops short of the end: one more window ends exactly at the end.
    assert window_bounds(9.0, 4.0, 4.0) == [(0.0, 4.0), (4.0, 8.0), (5.0, 9.0)]
    assert window_bounds(5.0, 2.0, 1.5) == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0)]
    # Shorter than one window: one window over all of it.
    assert window_bounds(2.5, 4.0) == [(0.0, 2.5)]


@pytest.mark.parametrize(("window", "stride", "message"), [
    (0.0, None, "--window must be > 0 seconds, got 0"),
    (-2.0, None, "--window must be > 0 seconds, got -2"),
    (4.0, 0.0, "--stride must be > 0 seconds, got 0"),
])
def test_non_positive_window_or_stride_is_refused(window: float, stride: float | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_window(window, stride)


def test_pooling_is_mean_and_max_normalised() -> None:
    vectors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    pooled = pool_window(vectors)
    assert pooled.shape == (6,)
    assert np.linalg.norm(pooled) == pytest.approx(1.0, abs=1e-6)
    half = 1 / np.sqrt(2)
    np.testing.assert_allclose(pooled, np.array([half, half, 0, half, half, 0]) * half, atol=1e-6)


def test_frames_fall_in_the_windows_that_cover_them() -> None:
    times = np.arange(0.0, 10.0, 0.5)  # 20 frames, the last at 9.5 s
    vectors = np.eye(20, dtype=np.float32)
    segments = segment_vectors(times, vectors, duration=10.0, window=4.0)
    assert [(s.start, s.end, s.frames) for s in segments] == [
        (0.0, 4.0, 8), (2.0, 6.0, 8), (4.0, 8.0, 8), (6.0, 10.0, 8)]
    # Sparse key frames: a window without frames is left out.
    sparse = segment_vectors(np.array([0.0, 9.0]), vectors[:2], duration=10.0, window=4.0)
    assert [(s.start, s.frames) for s in sparse] == [(0.0, 1), (6.0, 1)]


# ---- stored segments and video search ----------------------------------------------------------


@dataclass
class VideoWorld:
    url: str
    home: Path
    videos: list[Path]
    source_ids: dict[str, int]


@pytest.fixture(scope="module")
def video_world(pg_server: EmbeddedServer, template_url: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[VideoWorld]:
    """Three generated 12 s videos ingested at 2 frames/s, with 4 s segments (a committed database)."""
    url = create_database_from_template(pg_server)
    home = tmp_path_factory.mktemp("video-home")
    folder = tmp_path_factory.mktemp("videos")
    videos = [write_generated_video(folder / f"clip{i}.mp4", 12.0, seed=i) for i in range(3)]
    db = open_database(Settings(home=home, database_url=url))
    summary = run_ingest(db, videos, IngestOptions(keyframes=KeyframeOptions(method="fps", fps=2.0), workers=1))
    assert summary.errors == 0 and summary.frames == 72
    model = resolve_model(db, None)
    report = build_segments(db, model, window=4.0)
    assert report.sources == 3 and report.segments_added == 15
    with db.transaction() as conn:
        ids = dict(conn.execute(sa.text("SELECT uri, id FROM sources")).all())
    db.dispose()
    yield VideoWorld(url, home, videos, {uri: int(i) for uri, i in ids.items()})


def test_segments_build_again_adds_nothing(cli: CliRunner, video_world: VideoWorld) -> None:
    result = cli("--database-url", video_world.url, "segments", "build", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["segments_added"] == 0 and report["segments_total"] == 15 and report["sources"] == 0


@pytest.mark.slow
def test_search_video_finds_an_excerpt_and_its_range(cli: CliRunner, video_world: VideoWorld, tmp_path: Path) -> None:
    truth = make_copy(video_world.videos[1], "excerpt", tmp_path / "excerpt.mp4", rng=np.random.default_rng(3),
                      min_excerpt=4.5, max_excerpt=6.0)
    result = cli("--database-url", video_world.url, "search", "--video", str(truth.path), "--k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"run_id", "results"}
    first = document["results"][0]
    assert set(first) == {"rank", "source_id", "source_uri", "score", "query_start", "query_end",
                          "match_start", "match_end"}
    assert first["rank"] == 1 and first["source_uri"] == str(video_world.videos[1].resolve())
    assert temporal_iou((first["match_start"], first["match_end"]), truth.match_range) > 0.6
    assert first["score"] > 2 * document["results"][1]["score"]
    db = open_database(Settings(home=video_world.home, database_url=video_world.url))
    with db.transaction() as conn:
        run = conn.execute(sa.text("SELECT query->>'kind', backend, params->'ranges'->0->>'source_id' "
                                   "FROM search_runs WHERE id = :r"), {"r": document["run_id"]}).one()
        matched = conn.execute(sa.text("SELECT f.source_id, f.pts_seconds FROM search_results r JOIN frames f "
                                       "ON f.id = r.frame_id WHERE r.run_id = :r AND r.rank = 1"),
                               {"r": document["run_id"]}).one()
    db.dispose()
    assert run == ("video", "segments+align", str(first["source_id"]))
    assert matched[0] == first["source_id"] and abs(matched[1] - first["match_start"]) <= 0.5


@pytest.mark.slow
def test_clip_inserted_into_another_video_is_found_with_its_range(cli: CliRunner, video_world: VideoWorld,
                                                                  tmp_path: Path) -> None:
    truth = make_copy(video_world.videos[2], "insert", tmp_path / "insert.mp4", rng=np.random.default_rng(5),
                      min_excerpt=4.5, max_excerpt=6.0)
    result = cli("--database-url", video_world.url, "search", "--video", str(truth.path), "--k", "2", "--json",
                 "--no-save")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    first = document["results"][0]
    assert first["source_uri"] == str(video_world.videos[2].resolve()) and document["run_id"] is None
    assert temporal_iou((first["query_start"], first["query_end"]), truth.query_range) > 0.6
    assert temporal_iou((first["match_start"], first["match_end"]), truth.match_range) > 0.5


@pytest.mark.slow
def test_search_by_stored_segment(cli: CliRunner, video_world: VideoWorld) -> None:
    source = video_world.source_ids[str(video_world.videos[0].resolve())]
    result = cli("--database-url", video_world.url, "search", "--segment", f"{source}:2-8", "--json", "--no-save")
    assert result.exit_code == 0, result.stderr
    first = json.loads(result.stdout)["results"][0]
    assert first["source_id"] == source
    assert first["match_start"] == pytest.approx(2.0, abs=0.6) and first["match_end"] == pytest.approx(8.0, abs=0.6)


def test_bad_video_queries_fail_with_one_line(cli: CliRunner, video_world: VideoWorld, tmp_path: Path) -> None:
    garbage = write_garbage_video(tmp_path / "garbage.mp4")
    short = write_generated_video(tmp_path / "short.mp4", 2.0, seed=9)
    url = video_world.url
    cases = [
        (("search", "--video", str(garbage)), f"Error: {garbage}: not a readable video"),
        (("search", "--video", str(short)), "Error: the query is 2.00 s long, shorter than one window (4 s)"),
        (("search", "--video", str(short), "--window", "3"), "Error: there are no 3 s segments for"),
        (("search", "--segment", "12-x"), "Error: --segment expects SOURCE_ID:START-END"),
        (("search", "--segment", "99999:0-4"), "Error: --segment 99999:0-4: there is no source 99999"),
        (("segments", "build", "--window", "0"), "Error: --window must be > 0 seconds, got 0"),
        (("segments", "build", "--window", "-4"), "Error: --window must be > 0 seconds, got -4"),
    ]
    for args, message in cases:
        result = cli("--database-url", url, *args)
        assert result.exit_code == 1, (args, result.stderr)
        assert result.stderr.startswith(message), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


@pytest.mark.slow
def test_ingest_keeps_segments_current_and_the_segment_index_uses_the_shared_registry(
        cli: CliRunner, video_world: VideoWorld, tmp_path: Path) -> None:
    url = video_world.url
    built = cli("--database-url", url, "index", "build", "--kind", "segments", "--factory", "Flat", "--json")
    assert built.exit_code == 0, built.stderr
    assert json.loads(built.stdout)["ntotal"] == 15
    assert cli("--database-url", url, "index", "verify", "--kind", "segments").exit_code == 0
    extra = write_generated_video(tmp_path / "extra.mp4", 8.0, seed=7)
    ingested = cli("--database-url", url, "ingest", str(extra), "--keyframes", "fps", "--fps", "2", "--json")
    assert ingested.exit_code == 0, ingested.stderr
    db = open_database(Settings(home=video_world.home, database_url=url))
    with db.transaction() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM segments s JOIN sources o ON o.id = s.source_id "
                                     "WHERE o.uri = :u"), {"u": str(extra.resolve())}).scalar_one()
    db.dispose()
    assert count == 3  # 8 s in 4 s windows, stride 2 s: the ingest built them
    truth = make_copy(extra, "excerpt", tmp_path / "q.mp4", rng=np.random.default_rng(1), min_excerpt=4.5)
    stale = cli("--database-url", url, "search", "--video", str(truth.path), "--no-save", "--json")
    assert "warning: 3 segments are newer than the segment index and were compared exactly" in stale.stderr
    assert json.loads(stale.stdout)["results"][0]["source_uri"] == str(extra.resolve())
    assert cli("--database-url", url, "index", "update", "--kind", "segments").exit_code == 0
    result = cli("--database-url", url, "search", "--video", str(truth.path), "--json", "--save", "segments-faiss")
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    first = json.loads(result.stdout)["results"][0]
    assert first["source_uri"] == str(extra.resolve())
    db = open_database(Settings(home=video_world.home, database_url=url))
    with db.transaction() as conn:
        backend = conn.execute(sa.text("SELECT params->>'segment_backend' FROM search_runs "
                                       "WHERE name = 'segments-faiss'")).scalar_one()
    db.dispose()
    assert backend == "faiss"
