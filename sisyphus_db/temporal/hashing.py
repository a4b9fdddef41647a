"""Perceptual hashes of a picture: pHash (DCT) and a Haar wavelet hash, 64 bits each (imagehash).

Both survive re-encoding, resizing and mild colour changes, so near-copies are a few bits
apart while different pictures differ in about half of the 64. They are stored as pgvector
`bit(64)` and compared by Hamming distance.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

HASH_BITS = 64


def _image(rgb: npt.NDArray[np.uint8]) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(rgb))


def phash_bits(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    import imagehash

    return np.asarray(imagehash.phash(_image(rgb)).hash, dtype=bool).reshape(-1)


def whash_bits(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    import imagehash

    return np.asarray(imagehash.whash(_image(rgb)).hash, dtype=bool).reshape(-1)


def bits_text(bits: npt.NDArray[np.bool_]) -> str:
    """'0101...' as PostgreSQL reads a bit(64) literal."""
    return "".join("1" if bit else "0" for bit in bits)


def text_bits(text: str) -> npt.NDArray[np.bool_]:
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


def hamming(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> int:
    return int(np.count_nonzero(a != b))


def packed(bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """(N, 64) bools -> (N, 8) bytes, the layout of faiss binary indexes."""
    return np.packbits(np.atleast_2d(bits).astype(np.uint8), axis=1)
