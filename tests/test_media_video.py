"""probe_video() and iter_video_frames() on generated clips, and on every broken kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sisyphus_db.errors import MediaError
from sisyphus_db.media import synthetic
from sisyphus_db.media.video import file_fingerprint, iter_video_frames, probe_video

GOP = 7  # does not divide the cut frames (30, 60, 90): key frames cannot come from cuts


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    cuts = synthetic.write_test_video(path, synthetic.default_segments(4, seconds=3.0), fps=10, gop=GOP)
    assert cuts == [3.0, 6.0, 9.0]
    return path


def test_probe_reads_headers(clip: Path) -> None:
    info = probe_video(clip)
    assert info.duration_seconds == pytest.approx(12.0, abs=0.11)
    assert info.fps == pytest.approx(10.0)
    assert (info.width, info.height) == (160, 120)
    assert info.codec == "h264"
    assert info.frame_count == 120
    assert info.fingerprint == file_fingerprint(clip)
    assert len(info.fingerprint) == 64


def test_all_frames_have_ordinals_pts_and_pixels(clip: Path) -> None:
    frames = list(iter_video_frames(clip))
    assert [f.index for f in frames] == list(range(120))
    assert [f.pts_seconds for f in frames] == pytest.approx([i / 10 for i in range(120)])
    assert frames[0].rgb.shape == (120, 160, 3) and frames[0].rgb.dtype == np.uint8
    # Segment 1 is solid (200, 40, 40); segment 3 a blue/yellow checkerboard.
    assert np.abs(frames[5].rgb.reshape(-1, 3).mean(axis=0) - (200, 40, 40)).max() < 8
    assert frames[65].rgb.reshape(-1, 3).std(axis=0).min() > 50
    assert [f.index for f in frames if f.is_keyframe] == list(range(0, 120, GOP))


def test_keyframes_only_keeps_true_ordinals(clip: Path) -> None:
    frames = list(iter_video_frames(clip, keyframes_only=True))
    assert [f.index for f in frames] == list(range(0, 120, GOP))
    assert all(f.is_keyframe for f in frames)
    assert [f.pts_seconds for f in frames] == pytest.approx([i / 10 for i in range(0, 120, GOP)])


def test_sampling_rate_while_decoding(clip: Path) -> None:
    frames = list(iter_video_frames(clip, fps=2))
    assert [f.index for f in frames] == list(range(0, 120, 5))
    with pytest.raises(MediaError, match="sampling rate must be > 0"):
        next(iter_video_frames(clip, fps=0))


def test_fingerprint_reads_only_size_head_and_tail(tmp_path: Path) -> None:
    data = bytearray(np.random.default_rng(1).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    original = file_fingerprint(path, chunk=1000)
    data[5000] ^= 0xFF  # the middle is not read: same identity, by design
    path.write_bytes(data)
    assert file_fingerprint(path, chunk=1000) == original
    data[-1] ^= 0xFF
    path.write_bytes(data)
    assert file_fingerprint(path, chunk=1000) != original
    path.write_bytes(data + b"\0")
    assert file_fingerprint(path, chunk=1000) != original


def test_mpeg4_fallback_when_codec_missing(tmp_path: Path) -> None:
    path = tmp_path / "old.avi"
    synthetic.write_test_video(path, [synthetic.Segment("solid", 0.5)], fps=10, codec="no-such-codec")
    info = probe_video(path)
    assert info.codec == "mpeg4"
    assert len(list(iter_video_frames(path))) == 5


def test_garbage_video(tmp_path: Path) -> None:
    path = synthetic.write_garbage_video(tmp_path / "junk.mp4")
    expected = f"{path}: not a readable video (Invalid data found when processing input)"
    with pytest.raises(MediaError) as probed:
        probe_video(path)
    assert str(probed.value) == expected
    with pytest.raises(MediaError) as decoded:
        list(iter_video_frames(path))
    assert str(decoded.value) == expected


def test_empty_and_missing_video(tmp_path: Path) -> None:
    empty = synthetic.write_empty_file(tmp_path / "empty.mp4")
    with pytest.raises(MediaError) as caught:
        probe_video(empty)
    assert str(caught.value) == f"{empty}: empty file (0 bytes)"
    with pytest.raises(MediaError) as caught:
        list(iter_video_frames(tmp_path / "gone.mkv"))
    assert str(caught.value) == f"{tmp_path / 'gone.mkv'}: no such file"


def test_file_without_video_stream(tmp_path: Path) -> None:
    path = synthetic.write_audio_only(tmp_path / "memo.mkv")
    with pytest.raises(MediaError) as probed:
        probe_video(path)
    assert str(probed.value) == f"{path}: no video stream"
    with pytest.raises(MediaError) as decoded:
        list(iter_video_frames(path))
    assert str(decoded.value) == f"{path}: no video stream"


def test_failure_mid_stream_keeps_earlier_frames(tmp_path: Path) -> None:
    path = tmp_path / "broken.mkv"
    synthetic.write_test_video(path, synthetic.default_segments(4, seconds=3.0), fps=10)
    data = bytearray(path.read_bytes())
    start = len(data) // 3
    data[start : start + 20_000] = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    path.write_bytes(data)

    kept = []
    with pytest.raises(MediaError) as caught:
        for frame in iter_video_frames(path):
            kept.append(frame.index)
    assert 0 < len(kept) < 120
    assert kept == list(range(len(kept)))
    assert str(caught.value).startswith(f"{path}: decoding failed after {len(kept)} frames (")


def test_truncated_video_ends_early_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cut.mkv"
    synthetic.write_test_video(path, synthetic.default_segments(4, seconds=3.0), fps=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="sisyphus_db.media.video"):
        count = sum(1 for _ in iter_video_frames(path))
    assert 0 < count < 120
    assert "header claims 12.00 s (truncated file?)" in caplog.text


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "phone.mp4"
    # A portrait phone clip is stored landscape with a 90-degree (counterclockwise) display rotation.
    synthetic.write_test_video(
        path, [synthetic.Segment("gradient", 0.3, color=(250, 250, 250))], size=(64, 32), rotation=90
    )
    frame = next(iter_video_frames(path))
    assert frame.rgb.shape == (64, 32, 3)
    # The gradient brightens left to right when stored; turned counterclockwise, it brightens bottom to top.
    rows = frame.rgb.astype(float).mean(axis=(1, 2))
    assert rows[:8].mean() > rows[-8:].mean() + 50
    assert (probe_video(path).width, probe_video(path).height) == (64, 32)
