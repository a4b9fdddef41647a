"""An ingest killed (kill -9) or interrupted (Ctrl-C) midway resumes with no duplicate and no gap.

The CLI runs as a real subprocess (its own process group, like a shell job) against a
fresh committed database; the test waits until some batches are committed, stops it,
runs it again to completion and checks the stored frames against the known answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from sisyphus_db.media import synthetic

pytestmark = pytest.mark.slow

VIDEO_SECONDS = 30.0
VIDEO_FPS = 10
SAMPLE_FPS = 5.0  # every other frame: 150 key frames
IMAGES = 30
EXPECTED_VIDEO_INDEXES = list(range(0, int(VIDEO_SECONDS * VIDEO_FPS), int(VIDEO_FPS / SAMPLE_FPS)))
EXPECTED_FRAMES = len(EXPECTED_VIDEO_INDEXES) + IMAGES


@dataclass(frozen=True)
class Corpus:
    video: Path
    photos: Path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    video = root / "drive.mp4"
    synthetic.write_test_video(video, synthetic.default_segments(10, VIDEO_SECONDS / 10), fps=VIDEO_FPS)
    for seed in range(IMAGES):
        synthetic.write_test_image(root / "photos" / f"{seed:03d}.jpg", seed)
    return Corpus(video=video, photos=root / "photos")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _command(corpus: Corpus) -> list[str]:
    # Small batches: each is a transaction, so a stop lands between many commits.
    return [sys.executable, "-m", "sisyphus_db.cli.main", "ingest", str(corpus.video), str(corpus.photos),
            "--keyframes", "fps", "--fps", str(SAMPLE_FPS), "--batch-size", "8", "--workers", "1", "--json"]


def _env(url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"SISYPHUS_DATABASE_URL": url, "SISYPHUS_HOME": str(home), "SISYPHUS_DEVICE": "cpu"})
    env.pop("SISYPHUS_DEBUG", None)
    return env


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; their process groups are killed at the end whatever happened."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _start(corpus: Corpus, url: str, home: Path, started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(_command(corpus), env=_env(url, home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    started.append(process)
    return process


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM frames").fetchone()
    return int(row[0]) if row else 0


def _wait_for_some_frames(process: subprocess.Popen[str], url: str, timeout: float = 120.0) -> int:
    """Block until at least one batch (and not everything) is committed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = _count(url)
        if 0 < count:
            assert count < EXPECTED_FRAMES, "the run finished before it could be stopped: give it more input"
            return count
        assert process.poll() is None, f"the ingest exited early ({process.returncode}): {process.stderr.read() if process.stderr else ''}"
        time.sleep(0.1)
    raise AssertionError("no frame was committed in time")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; it only waits to be reaped by init


def _finish(corpus: Corpus, url: str, home: Path, started: list[subprocess.Popen[str]]) -> dict[str, object]:
    process = _start(corpus, url, home, started)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    summary: dict[str, object] = json.loads(stdout)
    return summary


def _check_complete(url: str, home: Path, corpus: Corpus) -> None:
    """Exactly the expected frames: no duplicate, no gap, one vector each, every source complete."""
    with psycopg.connect(url) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (source_id, frame_index, path)) FROM frames").fetchone() or (0, 0)
        assert (total, distinct) == (EXPECTED_FRAMES, EXPECTED_FRAMES)
        video_indexes = [row[0] for row in conn.execute(
            "SELECT f.frame_index FROM frames f JOIN sources s ON s.id = f.source_id "
            "WHERE s.uri = %s ORDER BY f.frame_index", (str(corpus.video),))]
        assert video_indexes == EXPECTED_VIDEO_INDEXES
        image_paths = [row[0] for row in conn.execute(
            "SELECT f.path FROM frames f JOIN sources s ON s.id = f.source_id WHERE s.uri = %s ORDER BY f.path",
            (str(corpus.photos),))]
        assert image_paths == [str(corpus.photos / f"{seed:03d}.jpg") for seed in range(IMAGES)]
        missing_vectors = conn.execute(
            "SELECT count(*) FROM frames f WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.frame_id = f.id)"
        ).fetchone()
        assert missing_vectors == (0,)
        embeddings = conn.execute("SELECT count(*), count(DISTINCT frame_id) FROM embeddings").fetchone()
        assert embeddings == (EXPECTED_FRAMES, EXPECTED_FRAMES)
        states = conn.execute("SELECT uri, state FROM sources ORDER BY uri").fetchall()
        assert states == [(str(corpus.video), "complete"), (str(corpus.photos), "complete")]
        frame_paths = [Path(row[0]) for row in conn.execute(
            "SELECT path FROM frames WHERE keyframe_method = 'fps'")]
    assert all(path.is_file() and path.is_relative_to(home / "frames") for path in frame_paths)


def test_kill_9_midway_then_resume(corpus: Corpus, fresh_database_url: str, home: Path,
                                   started: list[subprocess.Popen[str]]) -> None:
    runner = _start(corpus, fresh_database_url, home, started)
    _wait_for_some_frames(runner, fresh_database_url)
    workers = _children(runner.pid)
    assert workers, "the runner has no decoding worker to orphan"
    # Only the runner dies, as under the OOM killer: its workers must notice and exit.
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=10)
    assert runner.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "orphaned decoding workers outlived the killed runner"

    stored = _count(fresh_database_url)
    assert 0 < stored < EXPECTED_FRAMES
    summary = _finish(corpus, fresh_database_url, home, started)
    assert summary["frames"] == EXPECTED_FRAMES - stored
    assert summary["errors"] == 0
    _check_complete(fresh_database_url, home, corpus)

    # And a third run adds nothing.
    again = _finish(corpus, fresh_database_url, home, started)
    assert (again["frames"], again["errors"]) == (0, 0)
    assert again["skipped"] == 1 + IMAGES


def test_ctrl_c_exits_130_with_one_line_then_resumes(corpus: Corpus, fresh_database_url: str, home: Path,
                                                    started: list[subprocess.Popen[str]]) -> None:
    runner = _start(corpus, fresh_database_url, home, started)
    _wait_for_some_frames(runner, fresh_database_url)
    workers = _children(runner.pid)
    # A terminal's Ctrl-C reaches the whole foreground process group, workers included.
    os.killpg(runner.pid, signal.SIGINT)
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stderr
    assert stdout == ""
    assert stderr.strip().splitlines() == ["Error: interrupted: run the same command again to resume"], stderr
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)

    stored = _count(fresh_database_url)
    assert 0 < stored < EXPECTED_FRAMES
    summary = _finish(corpus, fresh_database_url, home, started)
    assert summary["frames"] == EXPECTED_FRAMES - stored
    _check_complete(fresh_database_url, home, corpus)
