"""Media: find inputs, decode images and videos, pick key frames, write frame JPEGs.

`synthetic` (generated test media) is deliberately not re-exported: import it by name.
"""

from sisyphus_db.media.discover import Discovery, ImageGroup, InputFailure, discover, media_kind
from sisyphus_db.media.images import LoadedImage, encode_jpeg, frame_jpeg_path, load_image
from sisyphus_db.media.keyframes import (
    KEYFRAME_METHODS,
    KeyframeDecision,
    KeyframeSelector,
    make_selector,
)
from sisyphus_db.media.video import VideoFrame, VideoInfo, file_fingerprint, iter_video_frames, probe_video

__all__ = [
    "KEYFRAME_METHODS",
    "Discovery",
    "ImageGroup",
    "InputFailure",
    "KeyframeDecision",
    "KeyframeSelector",
    "LoadedImage",
    "VideoFrame",
    "VideoInfo",
    "discover",
    "encode_jpeg",
    "file_fingerprint",
    "frame_jpeg_path",
    "iter_video_frames",
    "load_image",
    "make_selector",
    "media_kind",
    "probe_video",
]
