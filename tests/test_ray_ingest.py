"""Ingest on a real local Ray instance: the same rows as a local ingest, retried writer tasks
leave no duplicate, and each bad input is one clear line."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.distributed.cluster import DistributedError, ray_cluster
from sisyphus_db.distributed.ingest_job import FAIL_ONCE_ENV, run_ray_ingest
from sisyphus_db.ingest.messages import KeyframeOptions
from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest
from sisyphus_db.media.synthetic import default_segments, write_test_image, write_test_video

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray instance for the module, in its own temp dir (no stale cluster file)."""
    temp_dir = tempfile.mkdtemp(prefix="sisyphus-ray-")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-inputs")
    for i in range(10):
        write_test_image(root / "photos" / f"img_{i:02d}.jpg", seed=100 + i)
    write_test_image(root / "photos" / "broken.jpg", seed=1)
    (root / "photos" / "broken.jpg").write_bytes(b"not a jpeg at all")
    write_test_video(root / "clip.mp4", default_segments(3, seconds=1.0), fps=10)
    return root


OPTIONS = IngestOptions(keyframes=KeyframeOptions(method="fps", fps=2.0), batch_size=8, workers=1, device="cpu")


def _rows(url: str) -> tuple[list[tuple[object, ...]], dict[tuple[str, int], np.ndarray]]:
    with psycopg.connect(url) as conn:
        frames = conn.execute(
            "SELECT s.uri, f.frame_index, f.pts_seconds, regexp_replace(f.path, '^.*/frames/\\d+/', ''), f.width, "
            "f.height, f.sha256, f.keyframe_method FROM frames f JOIN sources s ON s.id = f.source_id "
            "ORDER BY 1, 2, 4").fetchall()
        vectors = {}
        for uri, index, path, vec in conn.execute(
                "SELECT s.uri, f.frame_index, f.path, e.vec::text FROM embeddings e JOIN frames f ON f.id = e.frame_id "
                "JOIN sources s ON s.id = f.source_id"):
            vectors[(uri + "|" + Path(path).name, index)] = np.array([float(x) for x in vec.strip("[]").split(",")])
    return frames, vectors


def _database(url: str, home: Path) -> Database:
    return open_database(Settings(home=home, database_url=url))


def test_ray_ingest_gives_the_rows_of_a_local_ingest(ray_session: None, inputs: Path, tmp_path: Path,
                                                      pg_server: object, template_url: str) -> None:
    from conftest import create_database_from_template

    local_url = create_database_from_template(pg_server)  # type: ignore[arg-type]
    ray_url = create_database_from_template(pg_server)  # type: ignore[arg-type]
    local_db, ray_db = _database(local_url, tmp_path / "local"), _database(ray_url, tmp_path / "ray")
    try:
        local = run_ingest(local_db, [inputs], OPTIONS)
        distributed = run_ray_ingest(ray_db, [inputs], OPTIONS)
        assert (distributed.sources, distributed.frames, distributed.errors) == (local.sources, local.frames, 1)
        assert distributed.error_details[0]["uri"].endswith("broken.jpg")
        local_frames, local_vectors = _rows(local_url)
        ray_frames, ray_vectors = _rows(ray_url)
        assert ray_frames == local_frames and len(ray_frames) == local.frames
        assert ray_vectors.keys() == local_vectors.keys()
        worst = max(float(np.abs(ray_vectors[key] - local_vectors[key]).max()) for key in local_vectors)
        assert worst <= 2e-3  # the same model on the same pixels: equal within float16

        again = run_ray_ingest(ray_db, [inputs], OPTIONS)  # idempotent: everything is stored already
        assert again.frames == 0 and _rows(ray_url)[0] == ray_frames
    finally:
        local_db.dispose()
        ray_db.dispose()


def test_a_writer_task_killed_after_its_commit_is_retried_without_duplicates(
        ray_session: None, inputs: Path, tmp_path: Path, fresh_database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "writer-died"
    monkeypatch.setenv(FAIL_ONCE_ENV, str(marker))
    db = _database(fresh_database_url, tmp_path / "home")
    try:
        summary = run_ray_ingest(db, [inputs / "photos"], OPTIONS)
    finally:
        db.dispose()
    assert marker.exists()  # a writer really died after committing its batch
    with psycopg.connect(fresh_database_url) as conn:
        frames = conn.execute("SELECT count(*), count(DISTINCT path) FROM frames").fetchone()
        embeddings = conn.execute("SELECT count(*) FROM embeddings").fetchone()
        state = conn.execute("SELECT state FROM sources").fetchall()
    assert frames == (10, 10) and embeddings == (10,)
    assert state == [("complete",)]
    assert summary.errors == 1


def test_similarity_key_frames_are_refused_on_ray(tmp_path: Path, fresh_database_url: str, inputs: Path) -> None:
    db = _database(fresh_database_url, tmp_path / "home")
    try:
        with pytest.raises(DistributedError, match="similarity"):
            run_ray_ingest(db, [inputs], IngestOptions(keyframes=KeyframeOptions(method="similarity")))
    finally:
        db.dispose()


def test_an_unreachable_ray_address_fails_in_one_line_and_fast() -> None:
    with socket.socket() as reserved:  # a loopback port nobody listens on, kept bound so nobody takes it
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        with pytest.raises(DistributedError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
            with ray_cluster(f"127.0.0.1:{port}"):
                pass
    with pytest.raises(DistributedError, match="HOST:PORT"):
        with ray_cluster("no-port-here"):
            pass


def test_cli_refuses_an_embedded_database_without_tcp(cli, inputs: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("ingest", str(inputs / "photos"), "--ray")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the embedded database listens only on a Unix socket")
    assert "sisyphus db start --port" in result.stderr
    status = cli("db", "status", "--json")
    assert '"frames": 0' in status.stdout  # nothing was stored


def test_cli_reports_a_path_the_workers_cannot_read(ray_session: None, tmp_path: Path, fresh_database_url: str) -> None:
    from sisyphus_db.distributed.ingest_job import _check_paths_visible
    from sisyphus_db.ingest.messages import ImageTask

    with pytest.raises(DistributedError, match="cannot read /nonexistent/shared/a.jpg"):
        _check_paths_visible([ImageTask(1, "/nonexistent/shared", ("/nonexistent/shared/a.jpg",), {}, 1)])
    assert os.environ.get(FAIL_ONCE_ENV) is None
