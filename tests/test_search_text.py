"""`search --text CLASS`: an ImageNet class through the model's classifier row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sisyphus_db.db.database import Database
from sisyphus_db.embed.classes import class_query, imagenet_categories, resolve_class
from sisyphus_db.embed.models import get_model_spec
from sisyphus_db.errors import InputError, ModelError
from sisyphus_db.search.backends import exact_neighbours
from sisyphus_db.search.queries import build_query
from sisyphus_db.store.bulk import FrameRow, load_frames
from sisyphus_db.store.registry import register_model, upsert_source


def test_class_names_resolve_exactly_by_substring_or_with_a_hint() -> None:
    assert imagenet_categories()[resolve_class("Motor_Scooter")] == "motor scooter"
    assert imagenet_categories()[resolve_class("scooter")] == "motor scooter"
    with pytest.raises(InputError, match=r"^unknown class 'trafic light' \(did you mean traffic light\?\)$"):
        resolve_class("trafic light")
    with pytest.raises(InputError, match=r"^class 'dog' is ambiguous: "):
        resolve_class("dog")


def test_text_query_is_the_unit_classifier_row_and_ranks_like_it(database: Database) -> None:
    spec = get_model_spec("efficientnet-lite0")
    vector, label = class_query(spec, "street sign")
    row = torch.load(spec.weights_path, map_location="cpu", weights_only=True)["_fc.weight"][919].numpy()
    assert label == "street sign"
    np.testing.assert_allclose(vector, row / np.linalg.norm(row), rtol=1e-5, atol=1e-6)

    model = register_model(database, name=spec.name, dim=spec.dim, weights_sha256=spec.weights_sha256,
                           pooling=spec.pooling, preprocessing=spec.preprocessing)
    source = upsert_source(database, uri="/text-query", kind="folder", tags={})
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, spec.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [FrameRow(source_id=source.id, frame_index=0, pts_seconds=0.0, path=f"/text-query/{i}.jpg", width=8,
                     height=8, sha256=f"{i:064x}", keyframe_method="image") for i in range(40)]
    load_frames(database, model.id, rows, vectors)
    query = build_query(database, model, text="street sign")
    assert query.description == {"kind": "text", "text": "street sign", "class": "street sign"}
    ids, distances = exact_neighbours(database, model, query.vector, 5)
    expected = np.sort(1.0 - vectors @ query.vector)[:5]
    np.testing.assert_allclose(distances, expected, atol=2e-3)  # halfvec storage


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_text_needs_a_model_with_an_imagenet_head(tmp_path) -> None:
    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float().mean(dim=(1, 2))

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(path))
    spec = get_model_spec(f"torchscript:{path}")
    with pytest.raises(ModelError, match=r"^--text needs a model with an ImageNet classifier"):
        class_query(spec, "street sign")
