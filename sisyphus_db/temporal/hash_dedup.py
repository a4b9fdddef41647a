"""Near-duplicates by perceptual hash for `sisyphus dedup --method phash --max-distance D`.

Pairs are the frames whose 64-bit pHashes differ in at most D bits, found with a faiss
binary flat index's range search (exact Hamming, all pairs in one pass over packed bits);
a frame's distance to its group's representative is the Hamming distance of their hashes.
It plugs into the labelling library's dedup (grouping, storing, counting are shared).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.temporal.hash_store import all_hashes, exact_duplicate_counts
from sisyphus_db.temporal.hashing import HASH_BITS, packed

_QUERY_CHUNK = 8192


def hamming_pairs(ids: npt.NDArray[np.int64], bits: npt.NDArray[np.bool_],
                  max_distance: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every pair (a < b) of ids whose hashes are at most max_distance bits apart."""
    import faiss

    if ids.size < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    codes = packed(bits)
    index = faiss.IndexBinaryFlat(HASH_BITS)
    index.add(codes)
    firsts, seconds = [], []
    for start in range(0, ids.size, _QUERY_CHUNK):
        # faiss binary range search keeps distances strictly below the radius.
        lims, _, found = index.range_search(codes[start:start + _QUERY_CHUNK], max_distance + 1)
        lims, found = lims.astype(np.int64), found.astype(np.int64)
        rows = np.repeat(np.arange(start, start + lims.size - 1), np.diff(lims))
        keep = rows < found
        firsts.append(ids[rows[keep]])
        seconds.append(ids[found[keep]])
    return np.concatenate(firsts), np.concatenate(seconds)


class PhashMethod:
    """Pairs of frames with pHashes at most --max-distance bits apart (default 6 of 64)."""

    name = "phash"
    default_threshold = 6.0

    def check_threshold(self, threshold: float) -> float:
        if not (0 <= threshold <= HASH_BITS and float(threshold).is_integer()):
            raise InputError(f"--max-distance is a number of differing bits in 0..{HASH_BITS}, got {threshold:g}")
        return float(threshold)

    def pairs(self, db: Database, model: StoredModel,
              threshold: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        ids, bits = all_hashes(db, "phash", model.id)
        if ids.size == 0:
            raise InputError(f"no {model.name} frame has a hash yet: run `sisyphus hashes build`")
        return hamming_pairs(ids, bits, int(threshold))

    def distances(self, db: Database, model: StoredModel, frame_ids: npt.NDArray[np.int64],
                  group_ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        ids, bits = all_hashes(db, "phash", model.id)
        at_frame, at_group = np.searchsorted(ids, frame_ids), np.searchsorted(ids, group_ids)
        return np.count_nonzero(bits[at_frame] != bits[at_group], axis=1).astype(np.float32)

    def extra(self, db: Database, model: StoredModel) -> dict[str, int]:
        """Byte-identical frames (same sha256), reported next to the near-duplicates."""
        groups, frames = exact_duplicate_counts(db, model.id)
        return {"exact_duplicate_groups": groups, "exact_duplicate_frames": frames}
