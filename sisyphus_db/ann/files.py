"""Writing and reading index files atomically, checked against the registry's sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from sisyphus_db.ann.device import to_cpu
from sisyphus_db.ann.factory import _first_line
from sisyphus_db.errors import AnnIndexError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_REBUILD = "rebuild with `sisyphus index build`"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # the rename itself is only durable once the directory entry is on disk
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_index_atomic(index: Any, path: str | os.PathLike[str]) -> str:
    """Write the index so readers see the old file or the new one, never half of one.

    A GPU index is copied to the CPU first. Returns the sha256 of the written file.
    """
    import faiss

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            faiss.write_index(to_cpu(index), str(tmp))
        except RuntimeError as exc:
            raise AnnIndexError(f"could not write index file {target}: {_first_line(exc)}") from exc
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        sha = file_sha256(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    logger.info("wrote index %s (sha256 %s)", target, sha[:12])
    return sha


def read_index(path: str | os.PathLike[str], *, expected_sha256: str | None = None, mmap: bool = False) -> Any:
    """Read an index file, refusing a missing, tampered or corrupt one.

    mmap: map the file read-only instead of copying it into memory (faiss
    IO_FLAG_MMAP_IFC: flat codes and IVF inverted lists are used in place, zero-copy),
    so a large index opens in milliseconds and pages in on demand. Such an index cannot
    be changed (add/remove): `index update` reads a private copy without mmap.
    """
    import faiss

    target = Path(path)
    if not target.is_file():
        raise AnnIndexError(f"index file {target} does not exist: {_REBUILD}")
    if expected_sha256 is not None and file_sha256(target) != expected_sha256.lower():
        raise AnnIndexError(
            f"index file {target} does not match its registry checksum: {_REBUILD}"
        )
    try:
        if mmap:
            return faiss.read_index(str(target), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        return faiss.read_index(str(target))
    except MemoryError:
        raise AnnIndexError(f"index file {target} ({target.stat().st_size / 2**20:.0f} MB) does not fit in the "
                            "memory this process may use") from None
    except RuntimeError as exc:
        raise AnnIndexError(
            f"index file {target} is not a readable faiss index ({_first_line(exc)}): {_REBUILD}"
        ) from exc
