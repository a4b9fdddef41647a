"""A small generated vector corpus with a planted rare class, for the label and discover tests.

Background frames come from `clustered_vectors` (many clusters of unequal size). The
planted class has two looks (two nearby centres, cosine ~0.6 apart) so that one query
alone does not reach every positive; a decoy cluster sits close to the first look and
is what negatives are for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sisyphus_db.ann.synthetic import clustered_vectors
from sisyphus_db.db.database import Database
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import StoredModel, register_model, upsert_source


@dataclass
class PlantedCorpus:
    model: StoredModel
    ids: list[int]           # every frame id, in load order
    positives: list[int]     # the planted class (both looks)
    decoys: list[int]        # near the class, not of it
    source_ids: list[int]


def _around(centre: npt.NDArray[np.float32], n: int, spread: float,
            rng: np.random.Generator) -> npt.NDArray[np.float32]:
    d = centre.shape[0]
    points = centre + rng.standard_normal((n, d)).astype(np.float32) * np.float32(spread / np.sqrt(d))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _unit(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (v / np.linalg.norm(v)).astype(np.float32)


def make_planted_corpus(db: Database, *, n_background: int = 400, per_look: int = 10, n_decoys: int = 15,
                        d: int = 32, n_sources: int = 8, seed: int = 0,
                        model_name: str = "planted-32") -> PlantedCorpus:
    rng = np.random.default_rng(seed)
    background = clustered_vectors(n_background, d, seed=seed + 1)
    look_a = _unit(rng.standard_normal(d).astype(np.float32))
    look_b = _unit(look_a + 1.3 * _unit(rng.standard_normal(d).astype(np.float32)))
    decoy = _unit(look_a + 0.9 * _unit(rng.standard_normal(d).astype(np.float32)))
    planted = np.vstack([_around(look_a, per_look, 0.5, rng), _around(look_b, per_look, 0.5, rng)])
    decoys = _around(decoy, n_decoys, 0.5, rng)
    vectors = np.vstack([background, planted, decoys])
    kinds = ["bg"] * n_background + ["pos"] * len(planted) + ["decoy"] * n_decoys
    order = rng.permutation(len(vectors))
    vectors = vectors[order]
    kinds = [kinds[i] for i in order]
    model = register_model(db, name=model_name, dim=d, weights_sha256=f"{seed:064x}", pooling="avg",
                           preprocessing={})
    sources = [upsert_source(db, uri=f"/planted/{seed}/clip-{s:02d}.mp4", kind="video", tags={"n": str(s)}).id
               for s in range(n_sources)]
    rows = [FrameRow(source_id=sources[i % n_sources], frame_index=i, pts_seconds=float(i), path=f"/planted/{seed}/"
                     f"{i:05d}.jpg", width=64, height=48, sha256=f"{seed:032x}{i:032x}", keyframe_method="fps")
            for i in range(len(vectors))]
    load_frames(db, model.id, rows, vectors)
    with db.transaction() as conn:
        found = dict(conn.execute(sa.text("SELECT path, id FROM frames WHERE path = ANY(:p)"),
                                  {"p": [row.path for row in rows]}).all())
    ids = [int(found[row.path]) for row in rows]
    return PlantedCorpus(model, ids, [i for i, kind in zip(ids, kinds, strict=True) if kind == "pos"],
                         [i for i, kind in zip(ids, kinds, strict=True) if kind == "decoy"], sources)
