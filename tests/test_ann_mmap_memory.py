"""An index larger than the memory a process may allocate still opens and searches when mapped."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

from sisyphus_db.ann.files import write_index_atomic

# In a child process: cap private data (heap, anonymous maps: what a copy of the index needs;
# a read-only file mapping does not count) at what is in use plus 48 MB, then open the index.
CHILD = textwrap.dedent("""
    import resource, sys
    import faiss  # loaded before the cap: the library's own data is not the index's
    import numpy as np
    from sisyphus_db.ann.files import read_index
    data_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmData:"))
    cap = (data_kb + 48 * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    try:
        index = read_index(sys.argv[1], mmap=sys.argv[2] == "mmap")
    except Exception as exc:
        print("refused", type(exc).__name__, str(exc))
        sys.exit(3)
    query = np.load(sys.argv[3])
    _, found = index.search(query, 5)
    print("found", int(found[0, 0]))
""")


@pytest.mark.slow
def test_a_mapped_index_opens_under_a_memory_cap_a_copy_does_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((100_000, 512)).astype(np.float32)  # ~205 MB of IVF-Flat lists
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.index_factory(512, "IVF16,Flat")
    index.train(vectors[:4_000])
    index.add_with_ids(vectors, np.arange(vectors.shape[0], dtype=np.int64) + 1_000)
    index.nprobe = 16
    path = tmp_path / "big.faiss"
    write_index_atomic(index, path)
    assert path.stat().st_size > 4 * 48 * 2**20  # four times the cap
    np.save(tmp_path / "q.npy", vectors[777:778])
    del vectors, index

    def child(mode: str) -> subprocess.CompletedProcess[str]:
        # one thread: worker threads' stacks are private memory too and would count against the cap
        return subprocess.run([sys.executable, "-c", CHILD, str(path), mode, str(tmp_path / "q.npy")],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})

    mapped = child("mmap")
    assert mapped.returncode == 0, mapped.stderr[-2000:]
    assert mapped.stdout.split() == ["found", "1777"]  # the query's own vector, by its id
    copied = child("copy")
    # read into memory, it does not fit: one clear error, no crash
    assert copied.returncode == 3 and copied.stdout.startswith("refused AnnIndexError")
    assert "does not fit in the memory" in copied.stdout
