"""VGGish sound embeddings in plain torch + numpy, for weights that are already on disk.

The network is the one of the public torch port (harritaylor/torchvggish): same layers, same
state-dict keys (`features.N.*`, `embeddings.N.*`), same channels-last flattening, so that
port's `vggish-10086976.pth` loads with strict=True. The front end follows the original
`vggish_input.waveform_to_examples`: 16 kHz mono, 25 ms periodic-Hann frames every 10 ms
(FFT 512), magnitude spectrum, 64 HTK-mel bands 125-7500 Hz, log(mel + 0.01), examples of
96 frames (0.96 s) without overlap -> one 128-d embedding per example, L2-normalised here
like the other sound vectors. The optional PCA/quantisation post-processing of the original
is not applied (it needs a separate parameters file; cosine search does not need it).

Weights are never downloaded: `SISYPHUS_VGGISH_WEIGHTS` names a local file, or the caller
falls back to the log-mel baseline (`audio_features`).
"""

from __future__ import annotations

import os
import pickle
from math import gcd
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from scipy.signal import resample_poly
from torch import nn

from sisyphus_db.errors import ModelError
from sisyphus_db.temporal.audio_features import AudioSeconds

METHOD = "vggish"
WEIGHTS_ENV = "SISYPHUS_VGGISH_WEIGHTS"
SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512  # next power of two above the window, as the original
N_MELS = 64
F_MIN, F_MAX = 125.0, 7_500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
EXAMPLE_SECONDS = EXAMPLE_FRAMES * HOP / SAMPLE_RATE  # 0.96
DIM = 128


class VGGish(nn.Module):
    """The VGG-like network of the torch port, without its optional PCA post-processor."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for item in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True),
            nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Linear(4096, DIM), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 96, 64) log-mel examples -> (N, 128)."""
        x = self.features(x)
        # The port flattens channels-last (N, 6, 4, 512) to match the TF checkpoint's order.
        x = torch.transpose(x, 1, 3)
        x = torch.transpose(x, 1, 2)
        x = x.contiguous().view(x.size(0), -1)
        return self.embeddings(x)


def _hz_to_mel(hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)  # HTK


def mel_matrix() -> npt.NDArray[np.float64]:
    """(257, 64) weights, built in mel space like the original's `spectrogram_to_mel_matrix`."""
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2)
    weights = np.empty((bins_mel.size, N_MELS))
    for band in range(N_MELS):
        low, centre, high = edges[band:band + 3]
        rising = (bins_mel - low) / (centre - low)
        falling = (high - bins_mel) / (high - centre)
        weights[:, band] = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin is left out, as the original does
    return weights


_MEL = mel_matrix()
_HANN = 0.5 - 0.5 * np.cos(2 * np.pi / WINDOW * np.arange(WINDOW))  # periodic Hann


def to_16k_mono(samples: npt.NDArray[np.floating], rate: int) -> npt.NDArray[np.float32]:
    """Samples (frames[, channels]) at `rate` -> 16 kHz mono (polyphase resampling)."""
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim > 1:
        data = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        common = gcd(int(rate), SAMPLE_RATE)
        data = resample_poly(data, SAMPLE_RATE // common, int(rate) // common)
    return data.astype(np.float32)


def examples(samples: npt.NDArray[np.floating], rate: int = SAMPLE_RATE) -> npt.NDArray[np.float32]:
    """(N, 96, 64) log-mel examples, one per whole 0.96 s (a shorter remainder is dropped)."""
    data = to_16k_mono(samples, rate).astype(np.float64)
    if data.size < WINDOW:
        return np.zeros((0, EXAMPLE_FRAMES, N_MELS), dtype=np.float32)
    count = 1 + (data.size - WINDOW) // HOP
    index = np.arange(WINDOW)[None, :] + HOP * np.arange(count)[:, None]
    magnitude = np.abs(np.fft.rfft(data[index] * _HANN[None, :], n=N_FFT, axis=1))
    log_mel = np.log(magnitude @ _MEL + LOG_OFFSET)
    whole = log_mel.shape[0] // EXAMPLE_FRAMES
    return log_mel[:whole * EXAMPLE_FRAMES].reshape(whole, EXAMPLE_FRAMES, N_MELS).astype(np.float32)


def weights_from_env() -> Path | None:
    """The weights file named by SISYPHUS_VGGISH_WEIGHTS, or None when the variable is unset/empty."""
    text = os.environ.get(WEIGHTS_ENV, "").strip()
    return Path(text).expanduser() if text else None


def load_vggish(path: Path) -> VGGish:
    """The network with the local weights at `path` (strict keys and shapes), or one-line ModelError."""
    where = f"{WEIGHTS_ENV}={path}"
    if not path.is_file():
        raise ModelError(f"{where}: no such file (VGGish weights are never downloaded; unset it for log-mel)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError,
            KeyError) as exc:  # what torch raises for a file that is not a (safe) checkpoint
        raise ModelError(f"{where}: not a readable torch state dict ({exc.__class__.__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{where}: not a VGGish state dict (expected a mapping of tensors)")
    model = VGGish()
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]  # in network order: features.0.weight first
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        raise ModelError(f"{where}: not VGGish weights of the torch port ({len(missing)} keys missing, first "
                         f"{missing[0] if missing else '-'}; {len(unexpected)} unexpected, first "
                         f"{unexpected[0] if unexpected else '-'})")
    wrong = [key for key, value in expected.items() if tuple(state[key].shape) != tuple(value.shape)]
    if wrong:
        raise ModelError(f"{where}: not VGGish weights ({wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                         f"expected {tuple(expected[wrong[0]].shape)})")
    model.load_state_dict(state, strict=True)
    return model.eval()


@torch.inference_mode()
def embed(model: VGGish, samples: npt.NDArray[np.floating], rate: int = SAMPLE_RATE,
          batch: int = 32) -> AudioSeconds:
    """One L2-normalised 128-d vector per 0.96 s example, with its start time."""
    batches = examples(samples, rate)
    out: list[npt.NDArray[np.float32]] = []
    for start in range(0, batches.shape[0], batch):
        tensor = torch.from_numpy(batches[start:start + batch]).unsqueeze(1)
        out.append(model(tensor).numpy())
    vectors = np.concatenate(out) if out else np.zeros((0, DIM), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.where(norms > 0, vectors / np.maximum(norms, 1e-12), vectors).astype(np.float32)
    starts = np.arange(vectors.shape[0], dtype=np.float64) * EXAMPLE_SECONDS
    return AudioSeconds(starts, vectors)
