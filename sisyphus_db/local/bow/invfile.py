"""The inverted file: for each visual word, the frames holding it and how often (tf), with idf.

Kept as a sidecar file (.npz of a scipy CSC matrix frames x words: each column is one
word's posting list) registered in `ann_indexes` (backend 'invfile', kind 'bow'). Scoring
a query touches only its words' posting lists in memory: a few milliseconds at 100k
frames, where the same join over a `bow_postings` table in PostgreSQL would read
hundreds of thousands of rows per query. The assignment maps in `bow_frames` are the
truth; the file is rebuilt from them by `sisyphus bow build`.

Weights: w(t, d) = tf(t, d) * idf(t), idf(t) = log(N / df(t)); the score of a frame is the
cosine of its weighted histogram with the query's.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sisyphus_db.errors import AnnIndexError


@dataclass(frozen=True)
class InvertedFile:
    frame_ids: npt.NDArray[np.int64]  # row -> frame id, ascending
    matrix: object                    # scipy.sparse.csc_matrix (frames x words) of tf counts
    idf: npt.NDArray[np.float64]      # per word
    norms: npt.NDArray[np.float64]    # per frame: |tf * idf|

    @property
    def words(self) -> int:
        return int(self.idf.shape[0])

    def score(self, histogram: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Cosine of every frame's tf-idf histogram with the query's tf histogram (words,)."""
        query = histogram * self.idf
        norm = float(np.linalg.norm(query))
        scores = np.zeros(self.frame_ids.shape[0], dtype=np.float64)
        if norm == 0.0:
            return scores
        present = np.flatnonzero(query)
        columns = self.matrix[:, present]  # type: ignore[index]
        scores = np.asarray(columns @ (query[present] * self.idf[present])).ravel()
        return scores / (np.maximum(self.norms, 1e-12) * norm)


def histogram(words: npt.NDArray[np.int32], vocabulary: int, weights: npt.NDArray[np.float32] | None = None
              ) -> npt.NDArray[np.float64]:
    return np.bincount(words, weights=weights, minlength=vocabulary).astype(np.float64)


def build_inverted_file(frame_ids: npt.NDArray[np.int64], maps: list[npt.NDArray[np.int32]], words: int) -> InvertedFile:
    from scipy import sparse

    rows = np.repeat(np.arange(len(maps)), [m.size for m in maps])
    cols = np.concatenate(maps) if maps else np.empty(0, dtype=np.int32)
    matrix = sparse.csc_matrix((np.ones(cols.size, dtype=np.float32), (rows, cols)), shape=(len(maps), words))
    matrix.sum_duplicates()
    return _weighted(frame_ids, matrix)


def _weighted(frame_ids: npt.NDArray[np.int64], matrix: object) -> InvertedFile:
    n = max(1, matrix.shape[0])  # type: ignore[attr-defined]
    df = np.asarray((matrix > 0).sum(axis=0)).ravel()  # type: ignore[operator]
    idf = np.where(df > 0, np.log(n / np.maximum(df, 1)), 0.0)
    squared = matrix.multiply(matrix).tocsr() @ (idf ** 2)  # type: ignore[attr-defined]
    return InvertedFile(frame_ids, matrix, idf, np.sqrt(np.asarray(squared).ravel()))


def write_inverted_file(inverted: InvertedFile, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = inverted.matrix
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        np.savez(out, frame_ids=inverted.frame_ids, data=m.data, indices=m.indices, indptr=m.indptr,  # type: ignore[attr-defined]
                 shape=np.array(m.shape))  # type: ignore[attr-defined]
    os.replace(temporary, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


_loaded: dict[tuple[str, str], InvertedFile] = {}
_lock = threading.Lock()


def read_inverted_file(path: Path, sha256: str) -> InvertedFile:
    """The file, checked against the registry checksum, cached per (path, sha256)."""
    from scipy import sparse

    key = (str(path), sha256)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        try:
            data = path.read_bytes()
        except OSError:
            raise AnnIndexError(f"inverted file {path} is missing: rebuild with `sisyphus bow build`") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise AnnIndexError(f"inverted file {path} does not match its registry checksum: "
                                "rebuild with `sisyphus bow build`")
        with np.load(path) as arrays:
            matrix = sparse.csc_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                                       shape=tuple(arrays["shape"]))
            inverted = _weighted(arrays["frame_ids"], matrix)
        _loaded[key] = inverted
        return inverted
