"""`sisyphus eval videocopy`: transformed copies with known ranges, r@1 / mAP / tIoU per method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import CliRunner

from sisyphus_db.config import Settings
from sisyphus_db.db.database import open_database
from sisyphus_db.temporal.transforms import (
    TRANSFORMATIONS,
    make_copy,
    read_frames,
    write_generated_video,
)


def test_every_transformation_writes_a_copy_with_its_truth(tmp_path: Path) -> None:
    source = write_generated_video(tmp_path / "source.mp4", 8.0, seed=1)
    rng = np.random.default_rng(0)
    for name in TRANSFORMATIONS:
        truth = make_copy(source, name, tmp_path / f"{name}.mp4", rng=rng)
        frames, fps = read_frames(truth.path)
        seconds = len(frames) / fps
        assert truth.query_range[1] <= seconds + 1e-6, name
        assert 0.0 <= truth.match_range[0] < truth.match_range[1] <= 8.0 + 1e-6, name
        if name in ("excerpt", "insert"):
            assert 3.0 - 1e-6 <= truth.match_range[1] - truth.match_range[0] <= 6.0 + 1e-6
        if name == "insert":
            assert truth.query_range[0] >= 2.0 and seconds >= truth.query_range[1] + 2.0 - 1e-6
        if name == "speed":
            assert seconds == pytest.approx(8.0 / 1.25, abs=0.15)
        if name == "resize":
            assert frames[0].shape[:2] == (60, 80)


@pytest.mark.slow
def test_eval_videocopy_reports_and_stores_each_method(cli: CliRunner, fresh_database_url: str,
                                                       tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    for seed in range(3):
        write_generated_video(folder / f"v{seed}.mp4", 10.0, seed=seed)
    result = cli("--database-url", fresh_database_url, "eval", "videocopy", str(folder), "--transformations",
                 "excerpt,insert,speed", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["videos"] == 3 and report["queries"] == 9
    assert set(report["results"]) == {"frames", "segments", "segments+align"}
    aligned = report["results"]["segments+align"]
    assert set(aligned) == {"excerpt", "insert", "speed", "overall"}
    assert set(aligned["overall"]) == {"r@1", "map", "tiou", "queries"}
    assert aligned["overall"]["r@1"] == 1.0 and aligned["overall"]["map"] == 1.0
    assert aligned["overall"]["tiou"] > 0.7
    # Alignment localises an excerpt inside other footage better than segment voting does.
    assert aligned["insert"]["tiou"] >= report["results"]["segments"]["insert"]["tiou"]
    db = open_database(Settings(home=tmp_path / "home", database_url=fresh_database_url))
    with db.transaction() as conn:
        stored = conn.execute(sa.text(
            "SELECT m.value FROM eval_metrics m JOIN eval_runs r ON r.id = m.run_id WHERE r.kind = 'videocopy' "
            "AND m.backend = 'segments+align' AND m.subset = 'overall' AND m.metric = 'tiou'")).scalar_one()
    db.dispose()
    assert stored == pytest.approx(aligned["overall"]["tiou"])


def test_eval_videocopy_bad_input(cli: CliRunner, fresh_database_url: str, tmp_path: Path) -> None:
    one = write_generated_video(tmp_path / "one.mp4", 4.0, seed=0)
    cases = [
        ((str(one),), "Error: eval videocopy needs at least 2 videos, found 1 in the given paths"),
        ((str(one), str(one), "--transformations", "mirror"), "Error: unknown transformation 'mirror'"),
        ((str(one), "--window", "0"), "Error: --window must be > 0 seconds, got 0"),
    ]
    for args, message in cases:
        result = cli("--database-url", fresh_database_url, "eval", "videocopy", *args)
        assert result.exit_code == 1, result.stderr
        assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr
