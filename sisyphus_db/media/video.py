"""Probe and decode videos with PyAV, turning every FFmpeg failure into a MediaError.

Frame indexes are ordinals in the decoded stream, so the same video yields the same
(index, pts) pairs on every run and an interrupted ingest can resume where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from sisyphus_db.errors import MediaError

logger = logging.getLogger(__name__)

FINGERPRINT_CHUNK = 4 * 1024 * 1024
# Tolerance when comparing pts against sampling steps: timestamps in coarse time bases
# (e.g. 1/90000 or 1001/30000) land a hair before the exact step.
_PTS_EPSILON = 1e-3


@dataclass(frozen=True)
class VideoInfo:
    """What a video claims about itself (container/stream headers), plus a cheap identity.

    width/height are the coded size; frames from iter_video_frames are turned upright,
    so a phone video with a 90-degree display rotation yields height x width frames.
    """

    duration_seconds: float | None
    fps: float | None
    width: int
    height: int
    codec: str
    frame_count: int | None
    fingerprint: str


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its ordinal in the stream, time in seconds and upright RGB pixels."""

    index: int
    pts_seconds: float
    rgb: np.ndarray
    is_keyframe: bool


def file_fingerprint(path: Path | str, *, chunk: int = FINGERPRINT_CHUNK) -> str:
    """sha256 over the size and the first and last `chunk` bytes: identity without a full read.

    Multi-GB drive recordings would take minutes to hash; size plus both ends tells
    re-encoded, truncated or appended files apart, which is what resume needs.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        size = path.stat().st_size
        digest.update(f"size:{size}\n".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(chunk))
            if size > chunk:
                # The tail may overlap the head for files under 2 chunks; still deterministic.
                handle.seek(max(size - chunk, chunk))
                digest.update(handle.read(chunk))
    except OSError as exc:
        raise MediaError(f"{path}: {_os_reason(exc)}") from None
    return digest.hexdigest()


def probe_video(path: Path | str) -> VideoInfo:
    """Read a video's headers (no full decode): duration, fps, size, codec, frame count."""
    path = Path(path)
    _check_readable_file(path)
    fingerprint = file_fingerprint(path)
    with _open_container(path) as container:
        stream = _video_stream(path, container)
        fps = _stream_fps(stream)
        duration = _stream_duration(stream, container)
        frame_count: int | None = int(stream.frames) if stream.frames and stream.frames > 0 else None
        if frame_count is None and duration is not None and fps is not None:
            frame_count = int(round(duration * fps))  # an estimate: the header had no count
        context = stream.codec_context
        return VideoInfo(
            duration_seconds=duration,
            fps=fps,
            width=int(context.width),
            height=int(context.height),
            codec=str(context.name),
            frame_count=frame_count,
            fingerprint=fingerprint,
        )


def iter_video_frames(
    path: Path | str, *, keyframes_only: bool = False, fps: float | None = None
) -> Iterator[VideoFrame]:
    """Decode frames in order as upright RGB (threaded decoding).

    `index` is the frame's ordinal in the decoded stream. With `keyframes_only` the
    decoder skips non-key frames (much faster), so ordinals cannot be counted; the index
    is then estimated as round((pts - stream start) * average fps), which equals the
    true ordinal for constant-frame-rate video and is close for variable rate.
    With `fps`, only the first frame reaching each 1/fps step (by pts) is converted and
    yielded; the others are decoded but skipped (indexes stay true ordinals).
    A failure after some frames raises MediaError; frames already yielded stay valid.
    """
    path = Path(path)
    if fps is not None and not fps > 0:
        raise MediaError(f"{path}: sampling rate must be > 0 frames per second, got {fps}")
    _check_readable_file(path)
    yielded = 0
    with _open_container(path) as container:
        stream = _video_stream(path, container)
        stream.thread_type = "AUTO"  # frame + slice threads: several x faster on H.264
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        time_base = stream.time_base
        start_pts = stream.start_time
        stream_fps = _stream_fps(stream)
        ordinal = 0
        next_step = 0  # with fps sampling: the next 1/fps step (counted from the first frame)
        first_pts: float | None = None
        pts_seconds = 0.0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except (av.error.FFmpegError, ValueError, OSError) as exc:
                raise MediaError(
                    f"{path}: decoding failed after {yielded} frames ({_one_line(exc)})"
                ) from None
            pts_seconds = _frame_seconds(frame, time_base, ordinal, stream_fps)
            index = ordinal
            if keyframes_only and frame.pts is not None and time_base is not None and stream_fps:
                offset = float((frame.pts - (start_pts or 0)) * time_base)
                index = max(0, int(round(offset * stream_fps)))
            ordinal += 1
            if fps is not None:
                if first_pts is None:
                    first_pts = pts_seconds
                if pts_seconds - first_pts + _PTS_EPSILON < next_step / fps:
                    continue
                next_step = math.floor((pts_seconds - first_pts + _PTS_EPSILON) * fps) + 1
            try:
                rgb = _upright(frame.to_ndarray(format="rgb24"), frame)
            except (av.error.FFmpegError, ValueError) as exc:
                raise MediaError(f"{path}: cannot convert frame {index} to RGB ({_one_line(exc)})") from None
            yielded += 1
            yield VideoFrame(
                index=index,
                pts_seconds=pts_seconds,
                rgb=rgb,
                is_keyframe=bool(frame.key_frame),
            )
        if not keyframes_only and yielded:
            _warn_if_short(path, stream, container, last_pts=pts_seconds, stream_fps=stream_fps)
    if yielded == 0:
        raise MediaError(f"{path}: no video frames could be decoded")


def _warn_if_short(
    path: Path, stream: Any, container: Any, *, last_pts: float, stream_fps: float | None
) -> None:
    """Truncated files usually just end early without an FFmpeg error; say so in the log.

    Not an error: header durations are often a little off (or include a longer audio
    track), so only a clear shortfall is reported, and the frames stay usable.
    """
    claimed = _stream_duration(stream, container)
    if claimed is None:
        return
    frame_seconds = 1.0 / stream_fps if stream_fps else 0.0
    start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
    missing = (start + claimed) - (last_pts + frame_seconds)
    if missing > max(1.0, 0.05 * claimed):
        logger.warning(
            "%s: decoding ended at %.2f s but the header claims %.2f s (truncated file?)",
            path,
            last_pts,
            claimed,
        )


def _check_readable_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise MediaError(f"{path}: {_os_reason(exc)}") from None
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not a file")
    if size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise MediaError(f"{path}: permission denied")


def _open_container(path: Path) -> Any:
    try:
        return av.open(str(path), mode="r")
    except av.error.PermissionError:
        raise MediaError(f"{path}: permission denied") from None
    except av.error.FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(f"{path}: not a readable video ({_one_line(exc)})") from None


def _video_stream(path: Path, container: Any) -> Any:
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
    return container.streams.video[0]


def _stream_fps(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _stream_duration(stream: Any, container: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration / av.time_base)
    return None


def _frame_seconds(frame: Any, time_base: Any, ordinal: int, stream_fps: float | None) -> float:
    if frame.pts is not None:
        base = frame.time_base if frame.time_base is not None else time_base
        if base is not None:
            return float(frame.pts * base)
    # No timestamp (some raw/AVI streams): fall back to the ordinal at the nominal rate.
    return ordinal / stream_fps if stream_fps else float(ordinal)


def _upright(rgb: np.ndarray, frame: Any) -> np.ndarray:
    """Apply the display-matrix rotation (phone videos) the way ffmpeg's autorotate does."""
    try:
        rotation = int(round(float(frame.rotation)))
    except (AttributeError, TypeError, ValueError):
        return rgb
    # FFmpeg's rotation is counterclockwise in degrees; np.rot90 also turns counterclockwise.
    turns = (rotation // 90) % 4 if rotation % 90 == 0 else 0
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or str(exc)).lower()


def _one_line(exc: BaseException) -> str:
    # FFmpeg errors render as "[Errno N] reason: 'path'"; the reason alone reads better.
    reason = exc.strerror if isinstance(exc, av.error.FFmpegError) and exc.strerror else str(exc)
    text = " ".join(str(reason).split())
    return text or type(exc).__name__
