"""ParameterSpace refuses what faiss would ignore; index files are atomic and checksummed."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from sisyphus_db.ann import (
    apply_search_params,
    build_index,
    clustered_vectors,
    file_sha256,
    index_ids,
    read_index,
    search,
    write_index_atomic,
)
from sisyphus_db.ann.params import set_parameter
from sisyphus_db.errors import AnnIndexError


@pytest.fixture(scope="module")
def ivf() -> tuple[faiss.Index, np.ndarray, np.ndarray]:
    x = clustered_vectors(2_000, 16, seed=4)
    ids = 500 + 3 * np.arange(2_000)
    return build_index(x, ids, factory="IVF16,Flat"), x, ids


def test_nprobe_goes_through_parameter_space(ivf: tuple) -> None:
    index, _, _ = ivf
    apply_search_params(index, nprobe=7)
    assert faiss.extract_index_ivf(index).nprobe == 7


def test_misspelt_nprobes_raises_instead_of_being_ignored(ivf: tuple) -> None:
    # the original sisyphus set `nprobes`, which faiss silently ignored
    index, _, _ = ivf
    with pytest.raises(AnnIndexError) as exc:
        apply_search_params(index, params={"nprobes": 16})
    assert str(exc.value).startswith("faiss rejected parameter nprobes=16: ")
    assert "\n" not in str(exc.value)
    with pytest.raises(AnnIndexError, match="^faiss rejected parameter efSearch=32: "):
        set_parameter(index, "efSearch", 32)


def test_nprobe_on_flat_index_is_an_error() -> None:
    x = clustered_vectors(100, 16)
    flat = build_index(x, np.arange(100), factory="Flat")
    with pytest.raises(AnnIndexError) as exc:
        apply_search_params(flat, nprobe=8)
    assert str(exc.value) == (
        "nprobe=8 applies only to IVF indexes; this IndexIDMap2 index is exact: "
        "leave nprobe unset"
    )
    apply_search_params(flat, nprobe=None)  # nothing asked, nothing done


def test_bad_nprobe_values(ivf: tuple) -> None:
    index, _, _ = ivf
    for bad in (0, -2, 1.5, True):
        with pytest.raises(AnnIndexError, match="^nprobe must be a positive integer"):
            apply_search_params(index, nprobe=bad)  # type: ignore[arg-type]


def test_write_read_roundtrip_with_checksum(ivf: tuple, tmp_path: Path) -> None:
    index, x, ids = ivf
    path = tmp_path / "idx" / "model.faiss"
    sha = write_index_atomic(index, path)
    assert sha == file_sha256(path)
    assert [p.name for p in path.parent.iterdir()] == ["model.faiss"]  # no temp left over
    back = read_index(path, expected_sha256=sha)
    np.testing.assert_array_equal(index_ids(back), index_ids(index))
    a = search(index, x[:5], 4, nprobe=4)
    b = search(back, x[:5], 4, nprobe=4)
    np.testing.assert_array_equal(a[1], b[1])


def test_tampered_file_is_refused(ivf: tuple, tmp_path: Path) -> None:
    index, _, _ = ivf
    path = tmp_path / "model.faiss"
    sha = write_index_atomic(index, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AnnIndexError) as exc:
        read_index(path, expected_sha256=sha)
    assert str(exc.value) == (
        f"index file {path} does not match its registry checksum: "
        "rebuild with `sisyphus index build`"
    )


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.faiss"
    with pytest.raises(AnnIndexError, match="does not exist: rebuild with"):
        read_index(missing)
    junk = tmp_path / "junk.faiss"
    junk.write_bytes(b"not a faiss index at all")
    with pytest.raises(AnnIndexError) as exc:
        read_index(junk)
    assert str(exc.value).startswith(f"index file {junk} is not a readable faiss index (")
    assert "\n" not in str(exc.value)


def test_overwrite_replaces_atomically(ivf: tuple, tmp_path: Path) -> None:
    index, _, _ = ivf
    path = tmp_path / "model.faiss"
    path.write_bytes(b"old")
    sha = write_index_atomic(index, path)
    assert file_sha256(path) == sha and path.stat().st_size > 3
