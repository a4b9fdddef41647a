"""`search --focus CLASS`: the query's feature map re-weighted by the class activation map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sisyphus_db.embed.classes import imagenet_categories
from sisyphus_db.embed.models import get_model_spec
from sisyphus_db.errors import ModelError
from sisyphus_db.evaluate.instance_data import (
    generate_objects,
    generate_scenes,
    load_rgba,
)
from sisyphus_db.local.focus import activation_map, class_direction, focus_map


def test_activation_map_is_the_positive_cam_scaled_to_one() -> None:
    fmap = np.zeros((2, 2, 3), dtype=np.float32)
    fmap[0] = [[1, 2, 0], [0, 4, 1]]
    fmap[1] = [[3, 0, 0], [0, 0, 8]]
    cam = activation_map(fmap, np.array([1.0, -0.5], dtype=np.float32))
    np.testing.assert_allclose(cam, [[0.0, 0.5, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(focus_map(fmap, np.array([1.0, -0.5], dtype=np.float32))[0],
                               [[0, 1, 0], [0, 4, 0]])
    # a class that is nowhere leaves the map as it is
    np.testing.assert_allclose(activation_map(fmap, np.array([-1.0, -1.0], dtype=np.float32)), np.ones((2, 3)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_focus_needs_a_model_with_an_imagenet_head(tmp_path: Path) -> None:
    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float().mean(dim=(1, 2))

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(path))
    with pytest.raises(ModelError, match=r"^--focus needs a model with an ImageNet classifier head "
                                         r"\(efficientnet-lite0, resnet50\), not torchscript:"):
        class_direction(get_model_spec(f"torchscript:{path}"), "street sign")


def _half_class(left: np.ndarray, right: np.ndarray, query: np.ndarray) -> str:
    """The ImageNet class whose activation on the query lies most on the right half."""
    from sisyphus_db.embed.embedder import load_embedder
    from sisyphus_db.local.features import feature_maps

    embedder = load_embedder("efficientnet-lite0", device="cpu")
    fmap = feature_maps(embedder, [query], size=embedder.spec.input_size)[0]
    weights = torch.load(embedder.spec.weights_path, map_location="cpu", weights_only=True)["_fc.weight"].numpy()
    cams = np.maximum(np.tensordot(weights, fmap, axes=(1, 0)), 0.0)  # (1000, h, w)
    half = cams.shape[2] // 2
    share = cams[:, :, half + 1:].sum(axis=(1, 2)) / np.maximum(cams.sum(axis=(1, 2)), 1e-9)
    share[cams.max(axis=(1, 2)) <= 0] = 0.0
    return imagenet_categories()[int(np.argmax(share))]


def test_focus_moves_the_ranking_toward_the_class(cli, fresh_database_url: str, tmp_path: Path) -> None:
    from sisyphus_db.media.images import load_image

    scene = load_image(generate_scenes(tmp_path / "scenes", 1, size=(224, 224), seed=3)[0]).rgb
    texture = load_rgba(generate_objects(tmp_path / "objects", 1, side=224, seed=11)[0])
    texture = np.where(texture[..., 3:] > 0, texture[..., :3], 128).astype(np.uint8)
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(scene).save(frames / "left.png")
    Image.fromarray(texture).save(frames / "right.png")
    query = np.concatenate([scene, texture], axis=1)
    Image.fromarray(query).save(tmp_path / "query.png")
    url = fresh_database_url
    assert cli("--database-url", url, "ingest", str(frames)).exit_code == 0
    assert cli("--database-url", url, "index", "build").exit_code == 0

    def first(*args: str) -> tuple[str, dict[str, float]]:
        result = cli("--database-url", url, "search", "--image", str(tmp_path / "query.png"), "--json", *args)
        assert result.exit_code == 0, result.stderr
        hits = json.loads(result.stdout)["results"]
        return Path(hits[0]["path"]).name, {Path(h["path"]).name: h["distance"] for h in hits}

    plain_first, plain = first()
    # Focus on the class that the classifier sees in the half that loses without focus.
    losing = "right.png" if plain_first == "left.png" else "left.png"
    halves = (scene, texture) if losing == "right.png" else (texture, scene)
    flipped = query if losing == "right.png" else np.concatenate([texture, scene], axis=1)
    name = _half_class(*halves, flipped)
    focused_first, focused = first("--focus", name)
    assert focused_first == losing, (name, plain, focused)
    assert focused[losing] - focused[plain_first] < plain[losing] - plain[plain_first]
    stored = cli("--database-url", url, "search", "--image", str(tmp_path / "query.png"), "--focus", name,
                 "--method", "global", "--json")
    assert json.loads(stored.stdout)["results"][0]["path"].endswith(losing)


def test_unknown_class_fails_with_one_line(cli, fresh_database_url: str, tmp_path: Path) -> None:
    image = tmp_path / "q.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(image)
    assert cli("--database-url", fresh_database_url, "ingest", str(image)).exit_code == 0
    result = cli("--database-url", fresh_database_url, "search", "--image", str(image), "--focus", "trafic light")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1, "", "Error: unknown class 'trafic light' (did you mean traffic light?)\n")
    two = cli("--database-url", fresh_database_url, "search", "--frame", "1", "--focus", "traffic light")
    assert (two.exit_code, two.stderr) == (1, "Error: --method, --box, --focus and --expand take an --image query\n")
