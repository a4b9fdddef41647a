"""The files of a model's faiss sidecar, generation by generation.

An index file is `<model>-<id>[-<kind>].<generation>.faiss`; its refine store is
`<index file>.refine-<generation>.f16.npy` and `.ids.npy`. Every build and update writes
new names, switches the registry row to them in one update, then deletes the old ones: a
reader that mapped the old files finishes on them, and a writer that fails or is killed
before the switch leaves the registered files untouched. What a killed writer left is
recognised by these names alone (never by a prefix: `a-1.5-9.faiss` is another model's
file, not a generation of `a-1`) and removed under the sidecar lock.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

GENERATION_HEX = 10


def new_generation() -> str:
    return uuid.uuid4().hex[:GENERATION_HEX]


def new_index_file(base: Path) -> Path:
    """A fresh name for the next index file of `base` (`<model>-<id>[-<kind>].faiss`)."""
    return base.with_name(f"{base.stem}.{new_generation()}.faiss")


def _patterns(base: Path) -> re.Pattern[str]:
    generation = f"[0-9a-f]{{{GENERATION_HEX}}}"
    index = rf"{re.escape(base.stem)}(?:\.{generation})?\.faiss"  # the name without a generation: older builds
    refine = rf"{index}\.refine-{generation}\.(?:f16|ids)\.npy"
    temporary = rf"\.(?:{refine}|{index})\.[^/]+\.tmp"  # tempfile.mkstemp's names of atomic writes
    return re.compile(rf"{index}|{refine}|{temporary}")


def sidecar_files(base: Path) -> list[Path]:
    """Every file of `base`'s sidecar in its folder: index files, refine stores, temporaries."""
    if not base.parent.is_dir():
        return []
    pattern = _patterns(base)
    return sorted(path for path in base.parent.iterdir() if pattern.fullmatch(path.name))


def drop_leftovers(base: Path, keep: Iterable[Path]) -> list[Path]:
    """Delete the sidecar files of `base` other than `keep` (the registered ones): what a killed
    build or update left behind. Only under the sidecar lock (`sidecar_lock.sidecar_writer`):
    then nobody else is writing them."""
    kept = {Path(path).resolve() for path in keep}
    leftovers = [path for path in sidecar_files(base) if path.resolve() not in kept]
    for path in leftovers:
        path.unlink(missing_ok=True)
    if leftovers:
        logger.info("removed %d files left behind by an interrupted build of %s", len(leftovers), base.stem)
    return leftovers
