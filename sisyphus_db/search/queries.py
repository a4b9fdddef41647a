"""Turning what the user gave (images, a frame id, a .npy vector, a class name) into one query vector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError
from sisyphus_db.store.registry import StoredModel
from sisyphus_db.store.vectors import vectors_by_id


@dataclass(frozen=True)
class Query:
    """A query vector (unit length) and how it was made, as stored in search_runs.query."""

    vector: npt.NDArray[np.float32]
    description: dict[str, Any]
    # A frame searched for itself is its own nearest neighbour; it stays in the results.
    frame_id: int | None = None


def _unit(vector: npt.NDArray[np.float32], what: str) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError(f"{what} has no direction (zero, NaN or infinite values)")
    return (vector / norm).astype(np.float32)


def query_from_images(paths: Sequence[Path], model: StoredModel, *, device: str = "auto") -> Query:
    """Embed the images with the index's model; several images average into one query."""
    from sisyphus_db.embed.embedder import load_embedder
    from sisyphus_db.media.images import load_image

    images = [load_image(path).rgb for path in paths]  # a broken image is reported first
    _refuse_imported(model)
    embedder = load_embedder(model.name, device=device)
    return query_from_rgb(images, model, embedder, {"kind": "image", "paths": [str(Path(p).resolve()) for p in paths]})


def _refuse_imported(model: StoredModel) -> None:
    """A model with no weights here (vectors from `sisyphus import-embeddings`) cannot embed an image."""
    from sisyphus_db.embed.models import parse_model_name
    from sisyphus_db.errors import ModelError

    try:
        parse_model_name(model.name)
    except ModelError:
        raise ModelError(f"model {model.name} cannot embed images: its vectors were imported "
                         "(`sisyphus import-embeddings`) and it has no weights here; search it with --frame ID "
                         "or --vector FILE.npy") from None


def query_from_rgb(images: Sequence[npt.NDArray[np.uint8]], model: StoredModel, embedder: Any,
                   description: dict[str, Any]) -> Query:
    """Decoded images (H x W x 3 uint8) through an already loaded embedder (the server keeps one)."""
    if embedder.spec.dim != model.dim:
        raise InputError(f"model {model.name} now makes {embedder.spec.dim}-d vectors, the stored ones are {model.dim}-d")
    vectors = embedder.embed_images(images)
    return Query(_unit(vectors.mean(axis=0), "the query images' mean vector"), description)


def query_from_frame(db: Database, frame_id: int, model: StoredModel) -> Query:
    ids, vectors = vectors_by_id(db, model.id, model.dim, [frame_id])
    if ids.size == 0:
        raise InputError(f"frame {frame_id} does not exist or has no {model.name} vector")
    return Query(_unit(vectors[0], f"frame {frame_id}'s vector"), {"kind": "frame", "frame_id": frame_id},
                 frame_id=frame_id)


def query_from_vector_file(path: Path, model: StoredModel) -> Query:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such vector file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy vector file ({exc.__class__.__name__})") from None
    vector = np.asarray(array, dtype=np.float32).reshape(-1) if np.asarray(array).ndim <= 2 else None
    if vector is None or (np.asarray(array).ndim == 2 and np.asarray(array).shape[0] != 1):
        raise InputError(f"{path}: expected one vector of shape ({model.dim},), got shape {np.asarray(array).shape}")
    if vector.shape[0] != model.dim:
        raise InputError(f"{path}: expected a {model.dim}-d vector for {model.name}, got {vector.shape[0]}-d")
    return Query(_unit(vector, str(path)), {"kind": "vector", "path": str(Path(path).resolve())})


def query_from_class(text: str, model: StoredModel) -> Query:
    """An ImageNet class name, through the model's classifier row (see embed.classes)."""
    from sisyphus_db.embed.classes import class_query
    from sisyphus_db.embed.models import get_model_spec

    spec = get_model_spec(model.name)
    if spec.dim != model.dim:
        raise InputError(f"model {model.name} now makes {spec.dim}-d vectors, the stored ones are {model.dim}-d")
    vector, label = class_query(spec, text)
    return Query(vector, {"kind": "text", "text": text, "class": label})


def build_query(db: Database, model: StoredModel, *, images: Sequence[Path] = (), frame_id: int | None = None,
                vector_file: Path | None = None, text: str | None = None, device: str = "auto") -> Query:
    given = sum([bool(images), frame_id is not None, vector_file is not None, text is not None])
    if given != 1:
        raise InputError("give exactly one query: --image FILE (repeatable), --frame ID, --vector FILE.npy "
                         "or --text CLASS")
    if text is not None:
        return query_from_class(text, model)
    if images:
        return query_from_images(images, model, device=device)
    if frame_id is not None:
        return query_from_frame(db, frame_id, model)
    assert vector_file is not None
    return query_from_vector_file(vector_file, model)
