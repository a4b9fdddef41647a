"""Generated videos with a sound track (tests, benchmarks): footage plus tones at known times."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from sisyphus_db.temporal.transforms import filler_frames

AUDIO_RATE = 16_000


def tone_track(seconds: float, tones: Sequence[tuple[float, float, float]], *, seed: int = 0,
               rate: int = AUDIO_RATE) -> np.ndarray:
    """Mono float32 samples: quiet noise, with a sine of `freq` Hz over each (start, end, freq)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    samples = 0.005 * rng.standard_normal(t.size)
    for start, end, freq in tones:
        inside = (t >= start) & (t < end)
        samples[inside] += 0.3 * np.sin(2 * np.pi * freq * t[inside])
    return samples.astype(np.float32)


def write_av_clip(path: Path | str, seconds: float, tones: Sequence[tuple[float, float, float]], *, seed: int = 0,
                  fps: int = 10, size: tuple[int, int] = (160, 120), audio: bool = True,
                  tint: tuple[float, float, float] | None = None) -> Path:
    """An H.264 + AAC mp4 of generated footage whose sound is the given tones (no audio with audio=False);
    `tint` multiplies the footage's R, G and B (a class-wide colour cast)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = filler_frames(seconds, fps, size, seed=seed + 500)
    if tint is not None:
        frames = [np.clip(frame * np.asarray(tint), 0, 255).astype(np.uint8) for frame in frames]
    samples = tone_track(seconds, tones, seed=seed)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                     rate=Fraction(fps), options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        sound = container.add_stream("aac", rate=AUDIO_RATE) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            chunk = 1024
            for start in range(0, samples.size, chunk):
                block = samples[start:start + chunk]
                frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
                frame.sample_rate = AUDIO_RATE
                frame.pts = start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path
