"""Key-frame selectors: scene cuts, embedding similarity, codec key frames, uniform fps."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from sisyphus_db.errors import InputError
from sisyphus_db.media import synthetic
from sisyphus_db.media.keyframes import (
    FpsSelector,
    IframeSelector,
    KeyframeSelector,
    SceneSelector,
    SimilaritySelector,
    make_selector,
)
from sisyphus_db.media.video import VideoFrame, iter_video_frames

GOP = 7


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    path = tmp_path_factory.mktemp("keyframes") / "cuts.mp4"
    cuts = synthetic.write_test_video(path, synthetic.default_segments(4, seconds=3.0), fps=10, gop=GOP)
    return path, cuts


def _select(selector: KeyframeSelector, frames: list[VideoFrame]) -> list[tuple[int, float]]:
    kept = []
    for frame in frames:
        decision = selector.offer(frame)
        if decision is not None:
            kept.append((frame.index, decision.score))
    return kept


def _frames(segment: synthetic.Segment, count: int, fps: float = 10.0) -> list[VideoFrame]:
    return [
        VideoFrame(
            index=i,
            pts_seconds=i / fps,
            rgb=synthetic.segment_frame(segment, i, (64, 48)),
            is_keyframe=i == 0,
        )
        for i in range(count)
    ]


def test_scene_finds_exactly_the_cuts(clip: tuple[Path, list[float]]) -> None:
    path, cuts = clip
    assert cuts == [3.0, 6.0, 9.0]
    kept = _select(
        make_selector("scene", fps=None, threshold=None, video_fps=10.0, max_gap_seconds=None),
        list(iter_video_frames(path)),
    )
    assert [index for index, _ in kept] == [0, 30, 60, 90]
    assert kept[0][1] == 1.0
    assert all(score > 0.3 for _, score in kept[1:])


def test_scene_by_default_keeps_a_frame_at_least_every_two_seconds(clip: tuple[Path, list[float]]) -> None:
    path, _ = clip
    kept = _select(make_selector("scene"), list(iter_video_frames(path)))
    # 3 s scenes at 10 fps: each cut, then a forced keep 2 s after it.
    assert [index for index, _ in kept] == [0, 20, 30, 50, 60, 80, 90, 110]


def test_scene_threshold_changes_the_outcome(clip: tuple[Path, list[float]]) -> None:
    path, _ = clip
    frames = list(iter_video_frames(path))
    # A difference must exceed the threshold, and no difference exceeds 1.0: only the
    # first frame and the forced max-gap samples remain.
    kept = _select(SceneSelector(1.0, max_gap_seconds=5.0), frames)
    assert [index for index, _ in kept] == [0, 50, 100]


def test_scene_samples_a_long_static_shot_every_max_gap() -> None:
    frames = _frames(synthetic.Segment("blobs", 0, seed=3), 120)
    kept = _select(SceneSelector(max_gap_seconds=5.0), frames)
    assert [index for index, _ in kept] == [0, 50, 100]
    assert all(score < 0.01 for _, score in kept[1:])
    assert _select(SceneSelector(max_gap_seconds=None), frames) == [(0, 1.0)]


def test_scene_follows_drift_against_the_last_kept_frame() -> None:
    # A slow pan: each frame is close to the previous one, yet the view drifts far.
    frames = _frames(synthetic.Segment("blobs", 0, seed=5, motion=1.5), 60)
    kept = [index for index, _ in _select(SceneSelector(0.1, max_gap_seconds=None), frames)]
    assert len(kept) >= 3  # comparing with the previous frame only would keep just frame 0
    assert kept[0] == 0
    assert len(kept) < 30


def test_scene_min_gap_stops_bursts() -> None:
    looks = [
        synthetic.Segment("solid", 0, color=(250, 250, 250)),
        synthetic.Segment("checker", 0, color=(10, 10, 200)),
    ]
    frames = [
        VideoFrame(i, i / 10, synthetic.segment_frame(looks[i % 2], 0, (64, 48)), False) for i in range(20)
    ]  # flicker between two looks every frame
    kept = [index for index, _ in _select(SceneSelector(min_gap_seconds=0.25), frames)]
    gaps = np.diff(kept)
    assert len(kept) > 3
    assert gaps.min() >= 3  # 0.25 s at 10 fps: never two kept frames closer than 3 frames


def test_similarity_compares_with_the_last_kept_embedding() -> None:
    selector = make_selector("similarity", fps=None, threshold=0.95, video_fps=None)
    assert selector.needs_embedding is True
    frame = VideoFrame(0, 0.0, np.zeros((2, 2, 3), np.uint8), True)
    kept = []
    for step in range(41):
        angle = math.radians(2.0 * step)  # turns 2 degrees a frame; cos(18.19 deg) = 0.95
        embedding = np.array([math.cos(angle), math.sin(angle), 0.0]) * (1 + step)  # scale must not matter
        decision = selector.offer(frame, embedding)
        if decision is not None:
            kept.append((step, round(decision.score, 4)))
    assert [step for step, _ in kept] == [0, 10, 20, 30, 40]
    assert kept[0][1] == 1.0
    assert kept[1][1] == round(1 - math.cos(math.radians(20)), 4)


def test_similarity_threshold_is_respected() -> None:
    frame = VideoFrame(0, 0.0, np.zeros((2, 2, 3), np.uint8), True)
    selector = SimilaritySelector(0.6)  # acos(0.6) = 53.1 degrees: keep every 27th 2-degree step
    kept = [
        step
        for step in range(60)
        if selector.offer(
            frame, np.array([math.cos(math.radians(2 * step)), math.sin(math.radians(2 * step))])
        )
    ]
    assert kept == [0, 27, 54]
    with pytest.raises(ValueError, match="needs the frame's embedding"):
        selector.offer(frame)


def test_iframe_keeps_codec_key_frames(clip: tuple[Path, list[float]]) -> None:
    path, _ = clip
    expected = list(range(0, 120, GOP))
    selector = make_selector("iframe", fps=None, threshold=None, video_fps=10.0)
    assert [i for i, _ in _select(selector, list(iter_video_frames(path)))] == expected
    fresh = IframeSelector()
    assert [i for i, _ in _select(fresh, list(iter_video_frames(path, keyframes_only=True)))] == expected


def test_fps_resamples_by_pts(clip: tuple[Path, list[float]]) -> None:
    path, _ = clip
    frames = list(iter_video_frames(path))
    two = _select(make_selector("fps", fps=2.0, threshold=None, video_fps=10.0), frames)
    assert [index for index, _ in two] == list(range(0, 120, 5))
    three = [index for index, _ in _select(FpsSelector(3.0), frames)]
    assert len(three) == 36
    assert three[:4] == [0, 4, 7, 10]  # first frames at or after 0, 1/3, 2/3, 1 s


def test_fps_counts_steps_from_the_first_frame_and_skips_gaps() -> None:
    pts = [0.4, 0.5, 0.9, 1.0, 3.0, 3.2, 3.4]  # starts late, then a 2 s hole
    frames = [VideoFrame(i, t, np.zeros((2, 2, 3), np.uint8), False) for i, t in enumerate(pts)]
    kept = [frames[i].pts_seconds for i, _ in _select(FpsSelector(2.0), frames)]
    assert kept == [0.4, 0.9, 3.0, 3.4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"method": "histogram"},
            "unknown keyframe method 'histogram': expected one of scene, similarity, iframe, fps",
        ),
        ({"method": "fps"}, "keyframe method 'fps' needs a rate: give fps > 0"),
        ({"method": "fps", "fps": 0.0}, "keyframe method 'fps' needs a rate > 0 frames per second, got 0.0"),
        (
            {"method": "fps", "fps": -1.0},
            "keyframe method 'fps' needs a rate > 0 frames per second, got -1.0",
        ),
        ({"method": "scene", "threshold": 0.0}, "scene threshold must be in (0, 1], got 0.0"),
        ({"method": "similarity", "threshold": 1.5}, "similarity threshold must be in [-1, 1], got 1.5"),
    ],
)
def test_make_selector_errors(kwargs: dict[str, object], message: str) -> None:
    method = str(kwargs.pop("method"))
    with pytest.raises(InputError) as caught:
        make_selector(method, fps=kwargs.get("fps"), threshold=kwargs.get("threshold"), video_fps=None)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_make_selector_types_and_pickling() -> None:
    frame = VideoFrame(0, 0.0, np.full((8, 8, 3), 100, np.uint8), True)
    for method, cls in [
        ("scene", SceneSelector),
        ("similarity", SimilaritySelector),
        ("iframe", IframeSelector),
        ("fps", FpsSelector),
    ]:
        selector = make_selector(method, fps=1.0, threshold=None, video_fps=None)
        assert type(selector) is cls
        assert isinstance(selector, KeyframeSelector)
        selector.offer(frame, np.ones(4) if selector.needs_embedding else None)
        clone = pickle.loads(pickle.dumps(selector))
        assert type(clone) is cls
    assert make_selector("scene", fps=None, threshold=0.5, video_fps=None).threshold == 0.5  # type: ignore[attr-defined]
