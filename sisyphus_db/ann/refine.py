"""The refine store: every indexed frame's full vector as float16, memory-mapped, by frame id.

IVF-PQ codes rank candidates approximately; the exact rerank needs the full vectors. They
used to be fetched from PostgreSQL for every query (a round trip and a COPY of hundreds of
halfvecs); this store keeps them next to the index instead, in two plain `.npy` files:

- `<stem>.f16.npy`: (n, d) float16, rows in ascending frame-id order, opened with
  `np.load(mmap_mode="r")`, so only the pages touched are read and a store larger than
  free memory still works;
- `<stem>.ids.npy`: (n,) int64 frame ids, ascending (8 bytes a frame, kept in memory); a
  frame's row is `searchsorted(ids, frame_id)`.

Why not faiss's IndexRefine(IndexScalarQuantizer fp16): it addresses the refine vectors
by insertion position, not by frame id, so it cannot `remove_ids` or `add_with_ids` (the
sidecar's update path), it is read into memory whole by `read_index`, and its vectors are
not reachable for the other jobs that need them by id (exact filtered search over the
allowed rows, the k-NN graph, `index verify` against the table). float16 is exactly what
PostgreSQL stores (halfvec), so the store holds the table's values bit for bit.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import numpy.typing as npt

from sisyphus_db.ann.arrays import to_float32
from sisyphus_db.ann.files import _fsync_dir, file_sha256
from sisyphus_db.errors import AnnIndexError, InputError

_REBUILD = "rebuild with `sisyphus index build`"
_COPY_ROWS = 262_144     # rows copied per block when writing (bounds the extra memory)
_RERANK_BLOCK = 256      # queries per block in the vectorised rerank (bounds the gathered rows)

@dataclass(frozen=True)
class RefineFiles:
    """Where a store lives and what its files must hash to (kept in ann_indexes.params)."""

    vectors_path: str
    ids_path: str
    vectors_sha256: str
    ids_sha256: str
    ntotal: int
    dim: int

    def to_params(self) -> dict[str, object]:
        return {"vectors_path": self.vectors_path, "ids_path": self.ids_path, "sha256": self.vectors_sha256,
                "ids_sha256": self.ids_sha256, "ntotal": self.ntotal, "dim": self.dim, "dtype": "float16"}

    @classmethod
    def from_params(cls, params: dict[str, object]) -> RefineFiles:
        return cls(str(params["vectors_path"]), str(params["ids_path"]), str(params["sha256"]),
                   str(params["ids_sha256"]), int(params["ntotal"]), int(params["dim"]))  # type: ignore[call-overload]

    def paths(self) -> tuple[Path, Path]:
        return Path(self.vectors_path), Path(self.ids_path)


class RefineStore:
    """Read-only view of a refine store: ids in memory, vectors memory-mapped."""

    def __init__(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float16]) -> None:
        self.ids = ids
        self.vectors = vectors
        # Frame ids come from an identity column, so they are nearly dense: a direct id -> row
        # table (4 bytes per id in the range) is 5-10x faster than a binary search per lookup.
        self._base = int(ids[0]) if ids.size else 0
        self._dense: npt.NDArray[np.int32] | None = None
        span = int(ids[-1]) - self._base + 1 if ids.size else 0
        if ids.size and span <= 4 * ids.size + 4096 and ids.size < 2**31:
            self._dense = np.full(span, -1, dtype=np.int32)
            self._dense[ids - self._base] = np.arange(ids.size, dtype=np.int32)

    @property
    def ntotal(self) -> int:
        return int(self.ids.size)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def rows_of(self, frame_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Row of each frame id (any shape), -1 where the id is not stored or is -1."""
        wanted = np.asarray(frame_ids, dtype=np.int64)
        if self.ids.size == 0:
            return np.full(wanted.shape, -1, dtype=np.int64)
        if self._dense is not None:
            offset = wanted - self._base
            inside = (offset >= 0) & (offset < self._dense.size)
            return np.where(inside, self._dense[np.where(inside, offset, 0)], -1).astype(np.int64)
        pos = np.minimum(np.searchsorted(self.ids, wanted), self.ids.size - 1)
        return np.where((self.ids[pos] == wanted) & (wanted >= 0), pos, -1).astype(np.int64)

    def take(self, rows: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """float32 copies of these rows (a gather from the mapped file)."""
        r = np.asarray(rows, dtype=np.int64)
        return to_float32(self.vectors[r])

    def vectors_of(self, frame_ids: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(ids, float32 vectors) of the stored frames among these, ascending by id."""
        wanted = np.unique(np.asarray(frame_ids, dtype=np.int64))
        rows = self.rows_of(wanted)
        keep = rows >= 0
        return wanted[keep], self.take(rows[keep])

    def rerank(self, queries: npt.ArrayLike, candidates: npt.ArrayLike, k: int) -> (
        tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
    ):
        """Exact cosine rerank of each query's candidates: (distances (m, k), ids (m, k)).

        Candidates that are -1 or not in the store are dropped; rows with fewer than k
        usable candidates are padded with id -1 and distance +inf. Vectorised over blocks
        of queries (one gather + one batched matrix product each).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        q = q[None, :] if q.ndim == 1 else q
        cand = np.asarray(candidates, dtype=np.int64)
        cand = cand[None, :] if cand.ndim == 1 else cand
        if q.shape[0] != cand.shape[0] or q.shape[1] != self.dim:
            raise InputError(f"expected {cand.shape[0]} queries of dimension {self.dim}, got {q.shape}")
        m, depth = cand.shape
        out_d = np.full((m, k), np.inf, dtype=np.float32)
        out_i = np.full((m, k), -1, dtype=np.int64)
        if depth == 0 or m == 0:
            return out_d, out_i
        kk = min(k, depth)
        for start in range(0, m, _RERANK_BLOCK):
            block = cand[start:start + _RERANK_BLOCK]
            rows = self.rows_of(block)
            vecs = to_float32(self.vectors[np.maximum(rows, 0)])  # (b, depth, d)
            sims = np.matmul(vecs, q[start:start + _RERANK_BLOCK, :, None])[:, :, 0]
            dist = np.where(rows >= 0, np.clip(1.0 - sims, 0.0, 2.0), np.inf).astype(np.float32)
            if kk < depth:
                part = np.argpartition(dist, kk - 1, axis=1)[:, :kk]
            else:
                part = np.broadcast_to(np.arange(depth), (block.shape[0], depth))
            pd = np.take_along_axis(dist, part, axis=1)
            pi = np.take_along_axis(block, part, axis=1)
            order = np.lexsort((pi, pd), axis=1) if pd.shape[1] > 1 else np.zeros_like(pi)
            pd, pi = np.take_along_axis(pd, order, axis=1), np.take_along_axis(pi, order, axis=1)
            pi = np.where(np.isfinite(pd), pi, -1)
            out_d[start:start + block.shape[0], :kk] = pd
            out_i[start:start + block.shape[0], :kk] = pi
        return out_d, out_i

    def exact_among(self, query: npt.ArrayLike, allowed_ids: npt.ArrayLike, k: int) -> (
        tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]
    ):
        """Brute force over the stored rows of these ids only: (ids, cosine distances), nearest first."""
        q = np.asarray(query, dtype=np.float32).ravel()
        rows = self.rows_of(allowed_ids)
        rows = rows[rows >= 0]
        if rows.size == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        rows.sort()  # ascending rows read the mapped file sequentially
        dist = np.clip(1.0 - to_float32(self.vectors[rows]) @ q, 0.0, 2.0).astype(np.float32)
        kk = min(k, rows.size)
        part = np.argpartition(dist, kk - 1)[:kk] if kk < rows.size else np.arange(rows.size)
        ids = self.ids[rows[part]]
        order = np.lexsort((ids, dist[part]))
        return ids[order], dist[part][order]


def refine_stem(index_path: Path, tag: str) -> Path:
    """File stem of a store generation: new generations get new names, so a reader's mapped
    old files stay valid and the registry switches to the new ones in one row update."""
    return index_path.with_name(f"{index_path.name}.refine-{tag}")


def _atomic_target(target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _finish(tmp: Path, target: Path) -> str:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    sha = file_sha256(tmp)
    os.replace(tmp, target)
    return sha


class RefineWriter:
    """A new store filled block by block in ascending-id order, then written atomically.

    `capacity`: the rows expected (a count taken before the vectors are read). A build
    streams PostgreSQL's vectors straight into the mapped file, so it never holds a second
    copy of them; should the table change between the count and the read, the file is
    resized once (one copy) instead of failing. `abort()` (or an exception in a `with`
    block) removes the temporary file.
    """

    def __init__(self, stem: Path, dim: int, capacity: int) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.stem, self.dim = stem, int(dim)
        self._vec_target = Path(f"{stem}.f16.npy")
        self._tmp = _atomic_target(self._vec_target)
        self._rows = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.float16,
                                               shape=(max(0, int(capacity)), self.dim))
        self._ids: list[npt.NDArray[np.int64]] = []
        self.filled = 0
        self._last_id = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None:
            self.abort()

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Append rows: ids ascending, above every id added before; vectors (len(ids), dim)."""
        id_arr = np.ascontiguousarray(ids, dtype=np.int64)
        v = np.asarray(vectors)
        if v.ndim != 2 or v.shape != (id_arr.size, self.dim):
            raise InputError(f"expected {id_arr.size} refine vectors of dimension {self.dim}, got {v.shape}")
        if id_arr.size == 0:
            return
        if int(id_arr[0]) <= self._last_id or (id_arr.size > 1 and not bool((np.diff(id_arr) > 0).all())):
            raise InputError("refine ids must be unique and ascending")
        stop = self.filled + id_arr.size
        if stop > self._rows.shape[0]:
            self._resize(max(stop, 2 * self._rows.shape[0]))
        self._rows[self.filled:stop] = v
        self._ids.append(id_arr)
        self.filled, self._last_id = stop, int(id_arr[-1])

    def finish(self) -> RefineFiles:
        """fsync, checksum and rename both files into place; the store's files."""
        try:
            if self.filled != self._rows.shape[0]:
                self._resize(self.filled)
            self._rows.flush()
            del self._rows
            id_arr = np.concatenate(self._ids) if self._ids else np.empty(0, dtype=np.int64)
            id_target = Path(f"{self.stem}.ids.npy")
            id_tmp = _atomic_target(id_target)
            try:
                with open(id_tmp, "wb") as fh:  # a file object: np.save would append .npy to a name
                    np.save(fh, id_arr)
                vec_sha = _finish(self._tmp, self._vec_target)
                id_sha = _finish(id_tmp, id_target)
            except BaseException:
                id_tmp.unlink(missing_ok=True)
                raise
        except BaseException:
            self.abort()
            raise
        _fsync_dir(self.stem.parent)
        return RefineFiles(str(self._vec_target), str(id_target), vec_sha, id_sha, int(id_arr.size), self.dim)

    def abort(self) -> None:
        self._tmp.unlink(missing_ok=True)

    def _resize(self, rows: int) -> None:
        bigger = _atomic_target(self._vec_target)
        out = np.lib.format.open_memmap(bigger, mode="w+", dtype=np.float16, shape=(rows, self.dim))
        kept = min(self.filled, rows)
        for start in range(0, kept, _COPY_ROWS):
            stop = min(start + _COPY_ROWS, kept)
            out[start:stop] = self._rows[start:stop]
        del self._rows
        self._tmp.unlink(missing_ok=True)
        self._tmp, self._rows = bigger, out


def write_refine(stem: Path, ids: npt.ArrayLike, blocks: list[tuple[int, npt.ArrayLike]] | None = None, *,
                 vectors: npt.ArrayLike | None = None, dim: int | None = None) -> RefineFiles:
    """Write a store atomically (temp file, fsync, rename) and return its files and checksums.

    ids: all frame ids, ascending and unique. Either `vectors` (n, d) in the same order, or
    `blocks`: consecutive (row offset, array) pieces that together fill all n rows (used by
    update to stream kept old rows and new rows without a second full copy in memory).
    """
    id_arr = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors is not None:
        v = np.asarray(vectors)
        dim = int(v.shape[1])
        if v.shape[0] != id_arr.size:
            raise InputError(f"{v.shape[0]} vectors for {id_arr.size} ids")
        blocks = [(start, v[start:start + _COPY_ROWS]) for start in range(0, v.shape[0], _COPY_ROWS)]
    if dim is None or blocks is None:
        raise InputError("write_refine needs vectors, or blocks and dim")
    with RefineWriter(stem, dim, id_arr.size) as writer:
        for offset, block in blocks:
            b = np.asarray(block)
            if offset != writer.filled:
                raise InputError(f"refine block at row {offset}, expected row {writer.filled}")
            writer.add(id_arr[offset:offset + b.shape[0]], b)
        if writer.filled != id_arr.size:
            raise InputError(f"refine blocks filled {writer.filled} of {id_arr.size} rows")
        return writer.finish()


def open_refine(files: RefineFiles, *, check_vectors_sha: bool = False) -> RefineStore:
    """Open a store, refusing missing files, a changed ids file and a wrong shape.

    The ids file (8 bytes a frame) is checksummed on every open; the vectors file only
    when asked (it is n x d x 2 bytes: `index verify` checks it, and its values against
    the table), so that opening stays a memory map and a server starts at once.
    """
    vec_path, id_path = files.paths()
    for path in (vec_path, id_path):
        if not path.is_file():
            raise AnnIndexError(f"refine file {path} does not exist: {_REBUILD}")
    if file_sha256(id_path) != files.ids_sha256:
        raise AnnIndexError(f"refine ids file {id_path} does not match its registry checksum: {_REBUILD}")
    if check_vectors_sha and file_sha256(vec_path) != files.vectors_sha256:
        raise AnnIndexError(f"refine vectors file {vec_path} does not match its registry checksum: {_REBUILD}")
    try:
        ids = np.load(id_path)
        vectors = np.load(vec_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise AnnIndexError(f"refine files {vec_path.name} are not readable ({exc}): {_REBUILD}") from exc
    if vectors.dtype != np.float16 or vectors.shape != (files.ntotal, files.dim) or ids.shape != (files.ntotal,):
        raise AnnIndexError(f"refine file {vec_path} holds {vectors.shape} {vectors.dtype}, the registry says "
                            f"({files.ntotal}, {files.dim}) float16: {_REBUILD}")
    return RefineStore(ids.astype(np.int64, copy=False), vectors)


def remove_refine(files: RefineFiles) -> None:
    for path in files.paths():
        path.unlink(missing_ok=True)
