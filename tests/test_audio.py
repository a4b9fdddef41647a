"""Sound per second (log-mel baseline): tones near and far, `sisyphus audio build`, `search --audio-of / --audio`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import CliRunner

from sisyphus_db.config import Settings
from sisyphus_db.db.database import open_database
from sisyphus_db.temporal.audio_features import (
    DIM,
    SAMPLE_RATE,
    NoAudioError,
    decode_audio,
    second_vectors,
)
from sisyphus_db.temporal.synthetic_av import tone_track, write_av_clip


def test_same_tone_is_near_and_different_tones_are_far() -> None:
    a440 = second_vectors(tone_track(3.0, [(0.0, 3.0, 440.0)], seed=1)).vectors
    a440_again = second_vectors(tone_track(3.0, [(0.0, 3.0, 440.0)], seed=2) * 0.3).vectors  # quieter
    e660 = second_vectors(tone_track(3.0, [(0.0, 3.0, 660.0)], seed=3)).vectors
    horn = second_vectors(tone_track(3.0, [(0.0, 3.0, 1500.0)], seed=4)).vectors
    assert a440.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(a440, axis=1), 1.0, atol=1e-5)
    assert (a440 @ a440_again.T).min() > 0.95
    assert (a440 @ e660.T).max() < 0.5 and (a440 @ horn.T).max() < 0.3


def test_audio_of_a_generated_video_is_decoded_with_its_times(tmp_path: Path) -> None:
    clip = write_av_clip(tmp_path / "av.mp4", 4.0, [(0.0, 2.0, 440.0), (2.0, 4.0, 1500.0)])
    samples = decode_audio(clip)
    assert samples.size / SAMPLE_RATE == pytest.approx(4.0, abs=0.1)
    seconds = second_vectors(samples)
    assert seconds.starts.tolist() == [0.0, 1.0, 2.0, 3.0]
    similarity = seconds.vectors @ seconds.vectors.T
    assert similarity[0, 1] > 0.95 and similarity[2, 3] > 0.95 and similarity[1, 2] < 0.3


def test_a_video_without_audio_is_one_clear_error(tmp_path: Path) -> None:
    silent = write_av_clip(tmp_path / "silent.mp4", 2.0, [], audio=False)
    with pytest.raises(NoAudioError, match=r"silent.mp4: no audio track, so there is no sound to compare$"):
        decode_audio(silent)


@pytest.mark.slow
def test_audio_build_and_search_by_sound(cli: CliRunner, fresh_database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    write_av_clip(folder / "siren.mp4", 6.0, [(0.0, 3.0, 440.0), (3.0, 6.0, 1500.0)], seed=1)
    write_av_clip(folder / "horn.mp4", 4.0, [(0.0, 4.0, 1500.0)], seed=2)
    write_av_clip(folder / "silent.mp4", 4.0, [], seed=3, audio=False)
    url = fresh_database_url
    ingested = cli("--database-url", url, "ingest", str(folder), "--keyframes", "fps", "--fps", "1", "--json")
    assert ingested.exit_code == 0, ingested.stderr
    built = cli("--database-url", url, "audio", "build", "--json")
    assert built.exit_code == 0, built.stderr
    report = json.loads(built.stdout)
    assert (report["videos"], report["without_audio"], report["seconds_added"]) == (3, 1, 10)
    assert json.loads(cli("--database-url", url, "audio", "build", "--json").stdout)["videos"] == 1  # the silent one
    db = open_database(Settings(home=tmp_path / "home", database_url=url))
    with db.transaction() as conn:
        frames = {(Path(uri).name, float(pts)): int(i) for i, uri, pts in conn.execute(sa.text(
            "SELECT f.id, s.uri, f.pts_seconds FROM frames f JOIN sources s ON s.id = f.source_id")).all()}
    db.dispose()
    siren_at_1 = frames[("siren.mp4", 1.0)]
    found = cli("--database-url", url, "search", "--audio-of", str(siren_at_1), "--k", "3", "--json")
    assert found.exit_code == 0, found.stderr
    hits = json.loads(found.stdout)["results"]
    assert {(Path(h["source_uri"]).name, h["start_seconds"]) for h in hits} == {
        ("siren.mp4", 0.0), ("siren.mp4", 1.0), ("siren.mp4", 2.0)}
    horn_file = write_av_clip(tmp_path / "query-horn.mp4", 2.0, [(0.0, 2.0, 1500.0)], seed=9)
    by_file = json.loads(cli("--database-url", url, "search", "--audio", str(horn_file), "--k", "7", "--json",
                             "--no-save").stdout)["results"]
    assert all(Path(h["source_uri"]).name == "horn.mp4" or h["start_seconds"] >= 3.0 for h in by_file)
    silent_frame = frames[("silent.mp4", 1.0)]
    no_sound = cli("--database-url", url, "search", "--audio-of", str(silent_frame))
    assert no_sound.exit_code == 1
    assert no_sound.stderr == f"Error: frame {silent_frame} comes from {folder.resolve() / 'silent.mp4'}, which has no audio track\n"
    no_sound_file = cli("--database-url", url, "search", "--audio", str(folder / "silent.mp4"))
    assert no_sound_file.exit_code == 1 and no_sound_file.stderr.endswith(
        "silent.mp4: no audio track, so there is no sound to compare\n")


@pytest.mark.slow
def test_eval_knn_videos_per_descriptor(cli: CliRunner, fresh_database_url: str, tmp_path: Path) -> None:
    tree = tmp_path / "classes"
    for number in range(3):
        write_av_clip(tree / "warm-siren" / f"w{number}.mp4", 4.0, [(0.0, 4.0, 440.0)], seed=10 + number,
                      tint=(1.0, 0.55, 0.3))
        write_av_clip(tree / "cold-horn" / f"c{number}.mp4", 4.0, [(0.0, 4.0, 1500.0)], seed=20 + number,
                      tint=(0.3, 0.55, 1.0))
    result = cli("--database-url", fresh_database_url, "eval", "knn", str(tree), "--videos", "--k", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["videos"] == 6 and report["classes"] == {"cold-horn": 3, "warm-siren": 3}
    accuracy = {row["descriptor"]: row["accuracy"] for row in report["results"]}
    assert set(accuracy) == {"frames", "segments", "colour", "sound", "combination"}
    assert accuracy["colour"] == 1.0 and accuracy["sound"] == 1.0 and accuracy["combination"] == 1.0
    db = open_database(Settings(home=tmp_path / "home", database_url=fresh_database_url))
    with db.transaction() as conn:
        stored = dict(conn.execute(sa.text(
            "SELECT m.backend, m.value FROM eval_metrics m JOIN eval_runs r ON r.id = m.run_id "
            "WHERE r.kind = 'knn-videos' AND m.subset = 'overall'")).all())
    db.dispose()
    assert stored == pytest.approx(accuracy)
    flat = cli("--database-url", fresh_database_url, "eval", "knn", str(tree / "warm-siren"), "--videos")
    assert flat.exit_code == 1 and "expected at least 2 class folders with videos, found 0" in flat.stderr
