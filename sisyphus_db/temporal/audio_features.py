"""Sound per second: decode a media file's audio with PyAV and describe each second.

The method here is a documented baseline, `logmel-v1`: the audio is resampled to 16 kHz
mono; a short-time Fourier transform (25 ms Hann windows every 10 ms) feeds a 64-band mel
filterbank (125 Hz - 7.5 kHz, as VGGish uses); the log energies of each second are pooled
into their mean over time (minus its average over the bands, so loudness does not
dominate) and their standard deviation over time; the 128 numbers are L2-normalised.
Sounds with the same spectral shape (a siren, a horn, rain) are near; different ones far.
VGGish embeddings (when SISYPHUS_VGGISH_WEIGHTS names a local weights file) live in
`vggish.py`, in plain torch: torchaudio cannot be installed without replacing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import InputError, MediaError

METHOD = "logmel-v1"
SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 64
F_MIN, F_MAX = 125.0, 7_500.0
DIM = 2 * N_MELS


@dataclass(frozen=True)
class AudioSeconds:
    starts: npt.NDArray[np.float64]
    vectors: npt.NDArray[np.float32]


class NoAudioError(InputError):
    """A media file without an audio track was asked for its sound."""


def has_audio(path: Path | str) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, OSError, ValueError):
        return False


def decode_audio(path: Path | str) -> npt.NDArray[np.float32]:
    """The first audio track as 16 kHz mono float32 samples in [-1, 1]."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable media file ({exc.__class__.__name__})") from None
    with container:
        if not container.streams.audio:
            raise NoAudioError(f"{path}: no audio track, so there is no sound to compare")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        parts: list[npt.NDArray[np.float32]] = []
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as exc:
            raise MediaError(f"{path}: audio decoding failed ({exc.__class__.__name__})") from None
    if not parts:
        raise NoAudioError(f"{path}: the audio track holds no samples")
    return np.concatenate(parts).astype(np.float32)


def _mel_filterbank() -> npt.NDArray[np.float64]:
    def mel(hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)

    edges_mel = np.linspace(mel(F_MIN), mel(F_MAX), N_MELS + 2)
    edges_hz = 700.0 * np.expm1(edges_mel / 1127.0)
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    bank = np.zeros((N_MELS, bins.size))
    for band in range(N_MELS):
        low, centre, high = edges_hz[band:band + 3]
        rising = (bins - low) / (centre - low)
        falling = (high - bins) / (high - centre)
        bank[band] = np.clip(np.minimum(rising, falling), 0.0, None)
    return bank


_BANK = _mel_filterbank()


def log_mel(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(frames, N_MELS) log mel energies, one frame every 10 ms."""
    if samples.size < N_FFT:
        samples = np.pad(samples, (0, N_FFT - samples.size))
    count = 1 + (samples.size - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
    spectrum = np.abs(np.fft.rfft(samples[index] * np.hanning(N_FFT)[None, :], axis=1)) ** 2
    return np.log(spectrum @ _BANK.T + 1e-6).astype(np.float32)


def second_vectors(samples: npt.NDArray[np.float32], seconds: float = 1.0) -> AudioSeconds:
    """One 128-d vector per whole second of audio (a last partial second of >= half is kept)."""
    if not seconds > 0:
        raise InputError(f"audio segment length must be > 0 s, got {seconds:g}")
    mel = log_mel(samples)
    per = round(seconds * SAMPLE_RATE / HOP)
    total = samples.size / SAMPLE_RATE
    starts, vectors = [], []
    for number in range(int(np.ceil(total / seconds))):
        block = mel[number * per:(number + 1) * per]
        if block.shape[0] < per // 2:
            break
        mean = block.mean(axis=0)
        vector = np.concatenate([mean - mean.mean(), block.std(axis=0)])
        norm = float(np.linalg.norm(vector))
        starts.append(number * seconds)
        vectors.append(vector / norm if norm > 0 else vector)
    return AudioSeconds(np.asarray(starts, dtype=np.float64),
                        np.asarray(vectors, dtype=np.float32).reshape(len(vectors), DIM))
