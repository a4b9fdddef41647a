"""The ingest pipeline end to end: generated videos with known cuts, images, broken inputs.

Everything runs through the real pipeline (decoding worker process, the pretrained
efficientnet-lite0 model, binary COPY) on tiny inputs, so each test stays a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from sisyphus_db.db.database import Database
from sisyphus_db.embed.embedder import Embedder, load_embedder
from sisyphus_db.ingest.messages import KeyframeOptions
from sisyphus_db.ingest.pipeline import IngestOptions, IngestSummary, run_ingest
from sisyphus_db.media import synthetic
from sisyphus_db.media.images import frame_jpeg_path

FPS = 10
SEGMENT_SECONDS = 3.0  # four segments: cuts at 3, 6 and 9 s of a 12 s clip


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    # One loaded model for the module: loading it is the slowest part of a tiny ingest.
    return load_embedder("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    path = tmp_path_factory.mktemp("videos") / "cuts.mp4"
    cuts = synthetic.write_test_video(path, synthetic.default_segments(4, SEGMENT_SECONDS), fps=FPS)
    assert cuts == [3.0, 6.0, 9.0]
    return path, cuts


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "gop25.mp4"
    synthetic.write_test_video(path, synthetic.default_segments(4, SEGMENT_SECONDS), fps=FPS, gop=25)
    return path


def _ingest(db: Database, paths: list[Path], embedder: Embedder, method: str = "scene", fps: float | None = None,
            max_gap_seconds: float | None = None, **options: Any) -> IngestSummary:
    # No forced scene keeps by default here: the test clips check the cuts themselves.
    keyframes = KeyframeOptions(method=method, fps=fps, max_gap_seconds=max_gap_seconds)
    return run_ingest(db, paths, IngestOptions(keyframes=keyframes, workers=1, **options), embedder=embedder)


def _source(db: Database, uri: Path | str) -> dict[str, Any]:
    with db.transaction() as conn:
        row = conn.execute(sa.text("SELECT * FROM sources WHERE uri = :u"), {"u": str(uri)}).mappings().one()
    return dict(row)


def _frames(db: Database, source_id: int) -> list[dict[str, Any]]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT f.*, (SELECT count(*) FROM embeddings e WHERE e.frame_id = f.id) AS vectors "
            "FROM frames f WHERE f.source_id = :s ORDER BY f.frame_index, f.path"
        ), {"s": source_id}).mappings().all()
    return [dict(row) for row in rows]


def _errors(db: Database) -> dict[str, dict[str, Any]]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT uri, stage, reason, source_id FROM ingest_errors ORDER BY id")).mappings()
        return {row["uri"]: dict(row) for row in rows}


def _vectors(db: Database, source_id: int) -> dict[str, np.ndarray]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text(
            "SELECT f.path, e.vec::text AS vec FROM frames f JOIN embeddings e ON e.frame_id = f.id "
            "WHERE f.source_id = :s"
        ), {"s": source_id}).all()
    return {row.path: np.array(json.loads(row.vec), dtype=np.float32) for row in rows}


def _check_video_frames(db: Database, source_id: int, method: str) -> list[dict[str, Any]]:
    """Every frame of the source has its JPEG where the layout says, matching sha256, and one vector."""
    frames = _frames(db, source_id)
    assert frames, "no frames stored"
    for frame in frames:
        expected = frame_jpeg_path(db.settings.frames_dir, source_id, frame["frame_index"])
        assert frame["path"] == str(expected)
        assert expected.name == f"{frame['frame_index']:010d}.jpg"
        data = expected.read_bytes()
        assert hashlib.sha256(data).hexdigest() == frame["sha256"]
        with Image.open(expected) as image:
            assert image.format == "JPEG" and image.size == (160, 120)
        assert (frame["width"], frame["height"]) == (160, 120)
        assert frame["keyframe_method"] == method
        assert frame["vectors"] == 1
    return frames


# --- key-frame methods through the pipeline -------------------------------------------------


def test_scene_keyframes_are_exactly_the_cuts(database: Database, cut_video: tuple[Path, list[float]],
                                              embedder: Embedder) -> None:
    path, cuts = cut_video
    summary = _ingest(database, [path], embedder, "scene")
    assert (summary.sources, summary.frames, summary.errors, summary.skipped) == (1, 4, 0, 0)
    source = _source(database, path)
    frames = _check_video_frames(database, source["id"], "scene")
    assert [f["frame_index"] for f in frames] == [0, 30, 60, 90]
    assert [f["pts_seconds"] for f in frames] == pytest.approx([0.0, *cuts])
    assert frames[0]["keyframe_score"] == pytest.approx(1.0)
    assert all(f["keyframe_score"] > 0.3 for f in frames)
    # Video details from the container headers.
    assert source["state"] == "complete" and source["kind"] == "video"
    assert source["duration_seconds"] == pytest.approx(12.0, abs=0.15)
    assert source["fps"] == pytest.approx(FPS)
    assert (source["width"], source["height"], source["codec"]) == (160, 120, "h264")
    assert source["keyframe_method"] == "scene"


def test_iframe_keeps_the_codec_key_frames_of_a_known_gop(database: Database, gop_video: Path,
                                                          embedder: Embedder) -> None:
    summary = _ingest(database, [gop_video], embedder, "iframe")
    frames = _check_video_frames(database, _source(database, gop_video)["id"], "iframe")
    assert [f["frame_index"] for f in frames] == [0, 25, 50, 75, 100]
    assert [f["pts_seconds"] for f in frames] == pytest.approx([0.0, 2.5, 5.0, 7.5, 10.0])
    assert summary.frames == 5


def test_fps_keeps_one_frame_per_step_with_its_pts(database: Database, cut_video: tuple[Path, list[float]],
                                                   embedder: Embedder) -> None:
    path, _ = cut_video
    summary = _ingest(database, [path], embedder, "fps", fps=0.5)
    frames = _check_video_frames(database, _source(database, path)["id"], "fps")
    assert [f["frame_index"] for f in frames] == [0, 20, 40, 60, 80, 100]
    assert [f["pts_seconds"] for f in frames] == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    assert summary.frames == 6


def test_similarity_keeps_a_subset_with_scores(database: Database, cut_video: tuple[Path, list[float]],
                                               embedder: Embedder) -> None:
    path, _ = cut_video
    # Candidates at 2 fps: 24 frames, 6 per segment; the rule keeps the first and then only
    # frames unlike the last kept one.
    summary = _ingest(database, [path], embedder, "similarity", fps=2.0)
    frames = _check_video_frames(database, _source(database, path)["id"], "similarity")
    indexes = [f["frame_index"] for f in frames]
    assert summary.frames == len(frames)
    assert all(index % 5 == 0 for index in indexes)  # only candidates on the 2 fps grid
    assert 4 <= len(frames) < 24 / 2, indexes  # far fewer than the candidates...
    for start in (0, 30, 60, 90):  # ...yet every scene is represented, from its first frame
        assert start in indexes, indexes
    assert frames[0]["keyframe_score"] == pytest.approx(1.0)
    # The score is 1 - cosine similarity to the last kept frame: above 1 - 0.95 when kept.
    assert all(0.05 < f["keyframe_score"] <= 2.0 for f in frames[1:])


# --- re-runs ---------------------------------------------------------------------------------


def test_running_again_adds_nothing(database: Database, cut_video: tuple[Path, list[float]], tmp_path: Path,
                                    embedder: Embedder) -> None:
    path, _ = cut_video
    for seed in range(3):
        synthetic.write_test_image(tmp_path / "photos" / f"{seed}.jpg", seed)
    first = _ingest(database, [path, tmp_path / "photos"], embedder, "scene")
    assert (first.sources, first.frames, first.skipped) == (2, 7, 0)
    video, folder = _source(database, path), _source(database, tmp_path / "photos")
    before = _frames(database, video["id"]) + _frames(database, folder["id"])

    again = _ingest(database, [path, tmp_path / "photos"], embedder, "scene")
    assert (again.frames, again.errors) == (0, 0)
    assert again.skipped == 4  # the finished video, and each of the three stored images
    assert _frames(database, video["id"]) + _frames(database, folder["id"]) == before

    # A new image in the folder is the only thing a third run adds.
    synthetic.write_test_image(tmp_path / "photos" / "3.jpg", 3)
    third = _ingest(database, [path, tmp_path / "photos"], embedder, "scene")
    assert (third.frames, third.skipped) == (1, 4)
    assert [f["path"] for f in _frames(database, folder["id"])] == [str(tmp_path / "photos" / f"{i}.jpg")
                                                                    for i in range(4)]


# --- images: EXIF, pretrained model ----------------------------------------------------------


def test_exif_capture_time_is_stored(database: Database, tmp_path: Path, embedder: Embedder) -> None:
    when = datetime(2021, 6, 30, 17, 45, 12)
    synthetic.write_test_image(tmp_path / "dated.jpg", 1, captured_at=when)
    synthetic.write_test_image(tmp_path / "undated.png", 2)
    summary = _ingest(database, [tmp_path], embedder)
    assert summary.frames == 2
    frames = {Path(f["path"]).name: f for f in _frames(database, _source(database, tmp_path)["id"])}
    # EXIF has no zone: the camera's wall clock is kept, stored as UTC.
    assert frames["dated.jpg"]["captured_at"] == when.replace(tzinfo=timezone.utc)
    assert frames["undated.png"]["captured_at"] is None
    assert frames["dated.jpg"]["keyframe_method"] == "image"
    assert (frames["dated.jpg"]["width"], frames["dated.jpg"]["height"]) == (96, 72)
    assert frames["dated.jpg"]["sha256"] == hashlib.sha256((tmp_path / "dated.jpg").read_bytes()).hexdigest()


def test_pretrained_model_puts_two_crops_of_one_image_closest(database: Database, tmp_path: Path,
                                                              embedder: Embedder) -> None:
    base = synthetic.write_test_image(tmp_path / "src" / "a.png", 21, size=(320, 240))
    other = synthetic.write_test_image(tmp_path / "src" / "b.png", 22, size=(320, 240))
    (tmp_path / "in").mkdir()
    with Image.open(base) as image:
        # Two crops sharing 60 % x 60 % of the picture, and a crop of another picture.
        image.crop((0, 0, 256, 192)).save(tmp_path / "in" / "a_left.png")
        image.crop((64, 48, 320, 240)).save(tmp_path / "in" / "a_right.png")
    with Image.open(other) as image:
        image.crop((32, 24, 288, 216)).save(tmp_path / "in" / "b_mid.png")
    _ingest(database, [tmp_path / "in"], embedder)
    vectors = {Path(p).stem: v for p, v in _vectors(database, _source(database, tmp_path / "in")["id"]).items()}
    assert set(vectors) == {"a_left", "a_right", "b_mid"}
    same = float(vectors["a_left"] @ vectors["a_right"])
    different = max(float(vectors["a_left"] @ vectors["b_mid"]), float(vectors["a_right"] @ vectors["b_mid"]))
    assert same > different + 0.05, (same, different)
    # Stored vectors are unit length (halfvec precision).
    assert all(abs(float(np.linalg.norm(v)) - 1.0) < 1e-2 for v in vectors.values())


# --- broken inputs ---------------------------------------------------------------------------


def _write_broken(folder: Path) -> dict[str, str]:
    """Every kind of broken input, and the reason each must be recorded with."""
    synthetic.write_empty_file(folder / "empty.jpg")
    synthetic.write_truncated_jpeg(folder / "truncated.jpg")
    synthetic.write_text_as_image(folder / "text.jpg")
    synthetic.write_decompression_bomb_png(folder / "bomb.png")
    synthetic.write_garbage_video(folder / "garbage.mp4")
    return {
        "empty.jpg": "empty file (0 bytes)",
        "truncated.jpg": "truncated or corrupt image",
        "text.jpg": "not an image (unrecognised format)",
        "bomb.png": "image too large",
        "garbage.mp4": "not a readable video",
    }


def test_each_broken_input_is_recorded_and_the_run_goes_on(database: Database, tmp_path: Path,
                                                           embedder: Embedder) -> None:
    synthetic.write_test_image(tmp_path / "in" / "before.jpg", 1)
    first = _ingest(database, [tmp_path / "in"], embedder)
    assert first.frames == 1
    expected = _write_broken(tmp_path / "in")
    synthetic.write_test_image(tmp_path / "in" / "z_after.jpg", 2)  # sorted after the broken ones
    missing = tmp_path / "nowhere" / "missing.jpg"

    summary = _ingest(database, [tmp_path / "in", missing], embedder)

    errors = _errors(database)
    for name, reason in expected.items():
        uri = str(tmp_path / "in" / name)
        assert uri in errors, f"{name} not recorded: {sorted(errors)}"
        assert errors[uri]["reason"].startswith(reason), errors[uri]
        assert str(tmp_path) not in errors[uri]["reason"]  # the uri has its own column
        assert errors[uri]["stage"] == "decode"
    assert errors[str(missing)]["reason"] == "no such file or directory"
    assert errors[str(missing)]["stage"] == "discover"
    # The summary lists exactly what was recorded.
    assert summary.errors == len(expected) + 1
    assert {d["uri"] for d in summary.error_details} == set(errors)
    # The run went on: the good image after the broken ones is stored, and nothing stored before is lost.
    folder = _source(database, tmp_path / "in")
    assert [Path(f["path"]).name for f in _frames(database, folder["id"])] == ["before.jpg", "z_after.jpg"]
    assert summary.frames == 1 and summary.skipped == 1
    assert all(f["vectors"] == 1 for f in _frames(database, folder["id"]))
    # A video that yielded nothing leaves no source behind, so the next run tries it again.
    with database.transaction() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM sources WHERE uri = :u"),
                            {"u": str(tmp_path / "in" / "garbage.mp4")}).scalar() == 0


def test_a_video_whose_stream_is_garbage_after_a_valid_header(database: Database, tmp_path: Path,
                                                              cut_video: tuple[Path, list[float]],
                                                              embedder: Embedder) -> None:
    # A real MP4 whose frame data is overwritten with noise: the container opens, decoding does not.
    data = bytearray(cut_video[0].read_bytes())
    noise = np.random.default_rng(3).integers(0, 256, size=len(data) // 2, dtype=np.uint8).tobytes()
    start = len(data) // 4
    data[start:start + len(noise)] = noise
    broken = tmp_path / "scrambled.mp4"
    broken.write_bytes(bytes(data))
    summary = _ingest(database, [broken], embedder, "fps", fps=1.0)
    # The decoder gives up partway: recorded as a failure, the run does not crash, and the
    # frames decoded before the break are kept (the source is complete, not retried forever).
    assert summary.errors == 1
    error = _errors(database)[str(broken)]
    assert error["stage"] == "decode"
    assert error["reason"].startswith("decoding failed after "), error
    source = _source(database, broken)
    frames = _check_video_frames(database, source["id"], "fps")
    assert 0 < len(frames) < 12 and summary.frames == len(frames)
    assert [f["frame_index"] for f in frames] == [10 * i for i in range(len(frames))]
    assert source["state"] == "complete" and error["source_id"] == source["id"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_recorded(database: Database, tmp_path: Path, embedder: Embedder) -> None:
    locked = synthetic.write_test_image(tmp_path / "locked.jpg", 1)
    locked.chmod(0)
    try:
        summary = _ingest(database, [locked], embedder)
    finally:
        locked.chmod(0o644)
    assert summary.errors == 1
    assert _errors(database)[str(locked)]["reason"] == "permission denied"


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(fresh_database_url: str) -> dict[str, str]:
    return {"SISYPHUS_DATABASE_URL": fresh_database_url}


@pytest.fixture
def warm_model(embedder: Embedder) -> None:
    """The CLI loads through the same in-process cache, so the module's model is reused."""


def test_cli_json_summary_lists_broken_inputs_and_exits_1(cli: Any, cli_env: dict[str, str], tmp_path: Path,
                                                          warm_model: None) -> None:
    expected = _write_broken(tmp_path / "in")
    synthetic.write_test_image(tmp_path / "in" / "ok.jpg", 5)
    result = cli("ingest", str(tmp_path / "in"), str(tmp_path / "missing.jpg"), "--workers", "1", "--json",
                 env=cli_env)
    assert result.exit_code == 1, result.stderr
    summary = json.loads(result.stdout)  # one JSON document, nothing else on stdout
    assert {"sources", "frames", "skipped", "errors"} <= set(summary)
    assert (summary["frames"], summary["skipped"], summary["errors"]) == (1, 0, len(expected) + 1)
    reasons = {Path(d["uri"]).name: d["reason"] for d in summary["error_details"]}
    for name, reason in expected.items():
        assert reasons[name].startswith(reason)
    assert reasons["missing.jpg"] == "no such file or directory"
    assert "Traceback" not in result.stderr

    # Running again stores nothing new and still fails on the same inputs; the good frame stays.
    again = cli("ingest", str(tmp_path / "in"), "--workers", "1", "--json", env=cli_env)
    assert again.exit_code == 1
    second = json.loads(again.stdout)
    assert (second["frames"], second["skipped"], second["errors"]) == (0, 1, len(expected))


def test_cli_plain_summary_and_clean_run_exit_0(cli: Any, cli_env: dict[str, str], tmp_path: Path,
                                                cut_video: tuple[Path, list[float]], warm_model: None) -> None:
    result = cli("ingest", str(cut_video[0]), "--keyframes", "fps", "--fps", "0.25", "--workers", "1", env=cli_env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ingested 3 frames from 1 sources")
    assert "0 errors" in result.stdout
    home = Path(os.environ["SISYPHUS_HOME"])
    assert sorted(p.name for p in (home / "frames").glob("*/*.jpg")) == [
        "0000000000.jpg", "0000000040.jpg", "0000000080.jpg"]


def test_cli_tags_are_merged_into_the_source(cli: Any, cli_env: dict[str, str], tmp_path: Path,
                                             warm_model: None) -> None:
    synthetic.write_test_image(tmp_path / "photos" / "a.jpg", 1)
    first = cli("ingest", str(tmp_path / "photos"), "--workers", "1", "--tag", "city=berlin", "--tag",
                "camera=front", "--json", env=cli_env)
    assert first.exit_code == 0, first.stderr
    second = cli("ingest", str(tmp_path / "photos"), "--workers", "1", "--tag", "city=paris", "--tag",
                 "weather=rain=heavy", "--json", env=cli_env)
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["frames"] == 0
    engine = sa.create_engine(cli_env["SISYPHUS_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            tags = conn.execute(sa.text("SELECT tags FROM sources WHERE uri = :u"),
                                {"u": str(tmp_path / "photos")}).scalar_one()
    finally:
        engine.dispose()
    # Later values win; keys given once stay; the first '=' splits key from value.
    assert tags == {"city": "paris", "camera": "front", "weather": "rain=heavy"}


@pytest.mark.parametrize(("args", "message"), [
    (["--keyframes", "shots"], "Error: unknown --keyframes 'shots': expected one of scene, similarity, iframe, fps"),
    (["--keyframes", "fps"], "Error: --keyframes fps needs --fps F (frames per second)"),
    (["--tag", "novalue"], "Error: --tag expects KEY=VALUE, got 'novalue'"),
])
def test_cli_refuses_bad_options(cli: Any, cli_env: dict[str, str], tmp_path: Path, args: list[str],
                                 message: str) -> None:
    result = cli("ingest", str(tmp_path), *args, env=cli_env)
    assert result.exit_code != 0
    assert result.stderr.strip() == message
