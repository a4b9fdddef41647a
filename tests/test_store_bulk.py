"""Binary COPY loading: frames and vectors land together, and loading again adds nothing."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from sisyphus_db.db.database import Database
from sisyphus_db.errors import ModelError
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import register_model, source_is_done, upsert_source, mark_source_complete


def _rows(source_id: int, n: int) -> list[FrameRow]:
    return [FrameRow(source_id=source_id, frame_index=i, pts_seconds=i / 10, path=f"/f/{i:010d}.jpg",
                     width=32, height=24, sha256=f"{i:064x}", keyframe_method="fps", keyframe_score=0.5,
                     metadata={"i": i}) for i in range(n)]


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_load_frames_is_idempotent_and_keeps_vectors(database: Database) -> None:
    model = register_model(database, name="m", dim=16, weights_sha256="a" * 64, pooling="avg", preprocessing={})
    source = upsert_source(database, uri="/v.mp4", kind="video", tags={"city": "berlin"})
    vectors = _unit(50, 16)
    first = load_frames(database, model.id, _rows(source.id, 50), vectors)
    assert (first.frames_added, first.embeddings_added) == (50, 50)
    again = load_frames(database, model.id, _rows(source.id, 60), np.vstack([vectors, _unit(10, 16, 1)]))
    assert (again.frames_added, again.embeddings_added) == (10, 10)
    with database.transaction() as conn:
        stored = conn.execute(sa.text(
            "SELECT e.vec::text FROM embeddings e JOIN frames f ON f.id = e.frame_id "
            "WHERE f.frame_index = 7 AND f.source_id = :s"), {"s": source.id}).scalar_one()
        assert conn.execute(sa.text("SELECT count(*) FROM frames WHERE source_id = :s"), {"s": source.id}).scalar() == 60
    np.testing.assert_allclose(np.array(eval(stored)), vectors[7], atol=1e-3)  # halfvec precision


def test_a_second_model_adds_vectors_to_existing_frames(database: Database) -> None:
    first = register_model(database, name="m1", dim=8, weights_sha256="a" * 64, pooling="avg", preprocessing={})
    second = register_model(database, name="m2", dim=4, weights_sha256="b" * 64, pooling="max", preprocessing={})
    source = upsert_source(database, uri="/photos", kind="folder", tags={})
    load_frames(database, first.id, _rows(source.id, 5), _unit(5, 8))
    mark_source_complete(database, source.id)
    assert source_is_done(database, source.id, first.id)
    assert not source_is_done(database, source.id, second.id)
    result = load_frames(database, second.id, _rows(source.id, 5), _unit(5, 4))
    assert (result.frames_added, result.embeddings_added) == (0, 5)
    assert source_is_done(database, source.id, second.id)


def test_a_model_name_cannot_change_its_weights(database: Database) -> None:
    register_model(database, name="m", dim=16, weights_sha256="a" * 64, pooling="avg", preprocessing={})
    with pytest.raises(ModelError, match=r"^model 'm' is registered with other weights or dimension"):
        register_model(database, name="m", dim=16, weights_sha256="c" * 64, pooling="avg", preprocessing={})


def test_tags_merge_on_a_second_upsert(database: Database) -> None:
    a = upsert_source(database, uri="/v.mp4", kind="video", tags={"city": "berlin"})
    b = upsert_source(database, uri="/v.mp4", kind="video", tags={"camera": "front"}, fps=25.0)
    assert a.id == b.id
    with database.transaction() as conn:
        tags, fps = conn.execute(sa.text("SELECT tags, fps FROM sources WHERE id = :i"), {"i": a.id}).one()
    assert tags == {"city": "berlin", "camera": "front"} and fps == 25.0
