"""The synthetic drive video decodes, has the promised frames, and its truth is right."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.drive_scene import DriveScene
from sisyphus_db.evaluate.drive_video import (
    DriveVideoTruth,
    default_blockage_intervals,
    make_drive_video,
)


def _orange_fraction(pixels: np.ndarray) -> float:
    """Share of pixels in the traffic-cone / road-works-board orange."""
    r, g, b = (pixels[..., c].astype(np.int32) for c in range(3))
    orange = (r > 180) & (g > 60) & (g < 190) & (b < 100) & (r - b > 110)
    return float(orange.mean())


def _decode(path: Path) -> tuple[list[np.ndarray], float, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate), stream.codec_context.name


@pytest.fixture(scope="module")
def short_drive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DriveVideoTruth]:
    path = tmp_path_factory.mktemp("drive") / "drive.mp4"
    truth = make_drive_video(
        path, duration_s=6, fps=10, size=(320, 180), blockage_intervals=[(2.0, 3.5)], seed=3
    )
    return path, truth


def test_video_decodes_with_expected_frames_and_fps(
    short_drive: tuple[Path, DriveVideoTruth],
) -> None:
    path, truth = short_drive
    frames, fps, codec = _decode(path)
    assert truth == DriveVideoTruth(
        intervals=[(2.0, 3.5)], fps=10.0, n_frames=60, duration_s=6.0, codec=truth.codec
    )
    assert len(frames) == 60
    assert fps == 10.0
    assert frames[0].shape == (180, 320, 3)
    assert codec in ("h264", "mpeg4")
    assert not path.with_name("drive.mp4.part").exists()


def test_truth_intervals_are_half_open(short_drive: tuple[Path, DriveVideoTruth]) -> None:
    _, truth = short_drive
    assert truth.contains(2.0) and truth.contains(3.4)
    assert not truth.contains(1.9) and not truth.contains(3.5)
    assert truth.blockage_frames() == list(range(20, 35))
    assert truth.to_dict()["intervals"] == [[2.0, 3.5]]


def test_blockage_frames_are_orange_and_normal_frames_are_not(
    short_drive: tuple[Path, DriveVideoTruth],
) -> None:
    path, truth = short_drive
    frames, _, _ = _decode(path)
    inside = set(truth.blockage_frames())
    blockage = [_orange_fraction(f) for i, f in enumerate(frames) if i in inside]
    normal = [_orange_fraction(f) for i, f in enumerate(frames) if i not in inside]
    assert min(blockage) > 0  # cones are in view from the first to the last frame
    assert np.mean(blockage) > 0.003
    assert max(normal) < 0.0005


def test_normal_frames_vary_and_rendering_is_deterministic() -> None:
    scene = DriveScene(n_frames=100, fps=10, size=(160, 96), blockage_intervals=[], seed=1)
    again = DriveScene(n_frames=100, fps=10, size=(160, 96), blockage_intervals=[], seed=1)
    assert np.array_equal(scene.render(40), again.render(40))
    first, later = scene.render(0).astype(np.int32), scene.render(60).astype(np.int32)
    assert np.abs(first - later).mean() > 3  # traffic, trees, bends and light have moved


@pytest.mark.parametrize("seed", range(8))
def test_default_intervals_are_short_rare_and_inside(seed: int) -> None:
    intervals = default_blockage_intervals(120, 10, seed)
    assert 2 <= len(intervals) <= 3
    covered = sum(end - start for start, end in intervals)
    assert 0.045 * 120 <= covered <= 0.085 * 120
    for (start, end), following in zip(intervals, [*intervals[1:], (120.0, 120.0)], strict=True):
        assert 0 <= start < end <= following[0] <= 120
        assert round(start * 10) == pytest.approx(start * 10)  # on the frame grid


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (161, 96)}, r"^size must be two even integers of at least 32, got \(161, 96\)$"),
        ({"fps": 0}, r"^fps must be between 0 and 120, got 0$"),
        ({"duration_s": -1}, r"^duration_s must be a positive number, got -1$"),
        (
            {"blockage_intervals": [(5.0, 7.0)]},
            r"^blockage interval \(5, 7\) is not inside the video's 0-6 s$",
        ),
        (
            {"blockage_intervals": [(1.0, 3.0), (2.0, 4.0)]},
            r"^blockage intervals must be sorted and must not overlap$",
        ),
    ],
)
def test_bad_settings_are_input_errors(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    settings: dict[str, object] = {"duration_s": 6, "fps": 10, "size": (160, 96)}
    settings.update(kwargs)
    with pytest.raises(InputError, match=message):
        make_drive_video(tmp_path / "x.mp4", **settings)  # type: ignore[arg-type]
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_default_drive_video(tmp_path: Path) -> None:
    truth = make_drive_video(tmp_path / "drive.mp4")
    assert truth.n_frames == 1200 and truth.fps == 10.0 and truth.duration_s == 120.0
    assert 2 <= len(truth.intervals) <= 3
    assert 0.045 <= len(truth.blockage_frames()) / truth.n_frames <= 0.085
    with av.open(str(tmp_path / "drive.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1200


def test_falls_back_to_mpeg4_without_h264(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sisyphus_db.evaluate import drive_video

    monkeypatch.setattr(drive_video, "_CODECS", ("no_such_h264", "mpeg4"))
    truth = make_drive_video(tmp_path / "d.mp4", duration_s=1, fps=10, size=(64, 36))
    frames, fps, codec = _decode(tmp_path / "d.mp4")
    assert (truth.codec, codec, len(frames), fps) == ("mpeg4", "mpeg4", 10, 10.0)

    monkeypatch.setattr(drive_video, "_CODECS", ("no_such_h264",))
    with pytest.raises(InputError, match=r"^this FFmpeg build has no libx264 or mpeg4 encoder$"):
        make_drive_video(tmp_path / "e.mp4", duration_s=1, fps=10, size=(64, 36))
    assert not (tmp_path / "e.mp4").exists()
