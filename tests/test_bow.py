"""Bag of local features: tf-idf through the inverted file, spatial re-ranking, `bow build` and `--method bow`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sisyphus_db.errors import InputError
from sisyphus_db.local.bow.invfile import (
    build_inverted_file,
    histogram,
    read_inverted_file,
    write_inverted_file,
)
from sisyphus_db.local.bow.spatial import best_window
from sisyphus_db.local.bow.vocabulary import check_words, default_words


def test_tf_idf_scores_match_a_hand_computed_case(tmp_path: Path) -> None:
    maps = [np.array([0, 0, 1]), np.array([1, 2]), np.array([2, 2, 2, 3])]
    inverted = build_inverted_file(np.array([10, 11, 12]), maps, 4)
    l3, l15 = math.log(3), math.log(1.5)  # df = 1, 2, 2, 1 over N = 3 frames
    np.testing.assert_allclose(inverted.idf, [l3, l15, l15, l3])
    query = histogram(np.array([0, 1]), 4)  # tf = 1, 1, 0, 0
    q_norm = math.sqrt(l3 ** 2 + l15 ** 2)
    expected = [
        (2 * l3 * l3 + l15 * l15) / (math.sqrt((2 * l3) ** 2 + l15 ** 2) * q_norm),
        (l15 * l15) / (math.sqrt(2) * l15 * q_norm),
        0.0,
    ]
    np.testing.assert_allclose(inverted.score(query), expected, rtol=1e-6)
    # the sidecar file round-trips and is checked against its checksum
    sha256 = write_inverted_file(inverted, tmp_path / "inv.npz")
    again = read_inverted_file(tmp_path / "inv.npz", sha256)
    np.testing.assert_allclose(again.score(query), expected, rtol=1e-6)
    with pytest.raises(Exception, match="does not match its registry checksum"):
        read_inverted_file(tmp_path / "inv.npz", "0" * 64)


def test_spatial_reranking_finds_the_window_of_the_query_words() -> None:
    rng = np.random.default_rng(0)
    grid = rng.integers(10, 60, size=(14, 14)).astype(np.int32)
    grid[5:8, 2:6] = np.array([[1, 2, 3, 4]] * 3)  # the object: 3 x 4 cells of words 1-4
    idf = np.ones(60)
    query = histogram(np.array([1, 2, 3, 4] * 3), 60)
    window = best_window(grid, query, idf)
    assert (window.r0, window.c0, window.r1, window.c1) == (5, 2, 8, 6)
    assert window.score == pytest.approx(1.0)
    assert sorted(set(window.words.tolist())) == [1, 2, 3, 4]
    # a frame without the query's words keeps a zero score
    assert best_window(np.full((4, 4), 30, dtype=np.int32), query, idf).score == 0.0


def test_vocabulary_size_adapts_to_the_descriptors() -> None:
    assert default_words(2_352) == 58
    assert default_words(10_000_000) == 25_000
    assert default_words(10) == 1
    with pytest.raises(InputError, match=r"^--words 100 needs at least 3900 local descriptors \(39 per word\), "
                                         r"the sample has 2352: use at most 60 words or more frames$"):
        check_words(100, 2_352)


def test_bow_build_and_search(cli, fresh_database_url: str, tmp_path: Path) -> None:
    from PIL import Image

    from sisyphus_db.evaluate.instance_data import (
        generate_objects,
        generate_scenes,
        load_rgba,
        paste,
    )
    from sisyphus_db.media.images import load_image

    objects = generate_objects(tmp_path / "objects", 4, side=96, seed=5)
    scenes = [load_image(p).rgb for p in generate_scenes(tmp_path / "scenes", 4, size=(320, 180), seed=7)]
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i, scene in enumerate(scenes):
        Image.fromarray(paste(scene, load_rgba(objects[i]), 0.3, rng).image).save(frames / f"scene_{i}.jpg")
        Image.fromarray(scene).save(frames / f"plain_{i}.jpg")
    url = fresh_database_url
    assert cli("--database-url", url, "ingest", str(frames)).exit_code == 0
    too_many = cli("--database-url", url, "bow", "build", "--words", "1000")
    assert too_many.exit_code == 1 and too_many.stderr.startswith("Error: --words 1000 needs at least 39000 local "
                                                                  "descriptors (39 per word), the sample has 1568")
    bad_layer = cli("--database-url", url, "bow", "build", "--layer", "conv3")
    assert bad_layer.stderr == ("Error: unknown --layer 'conv3': the local features come from last "
                                "(the model's last convolutional feature map)\n")
    built = cli("--database-url", url, "bow", "build", "--json")
    assert built.exit_code == 0, built.stderr
    report = json.loads(built.stdout)
    assert (report["trained"], report["words"], report["descriptors"], report["frames_indexed"]) == (True, 39, 1568, 8)
    again = json.loads(cli("--database-url", url, "bow", "build", "--json").stdout)
    assert (again["trained"], again["frames_assigned"], again["frames_indexed"]) == (False, 0, 8)
    status = json.loads(cli("--database-url", url, "index", "status", "--json").stdout)
    assert [(s["backend"], s["kind"], s["ntotal"]) for s in status] == [("invfile", "bow", 8)]

    result = cli("--database-url", url, "search", "--image", str(objects[0]), "--method", "bow", "--expand", "1",
                 "--k", "3", "--json", "--save", "bow-run")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["params"]["method"] == "bow" and found["params"]["expand"] == 1 and found["run_id"]
    for hit in found["results"]:
        x0, y0, x1, y1 = hit["box"]
        assert 0 <= x0 < x1 <= hit["width"] and 0 <= y0 < y1 <= hit["height"]
    nprobe = cli("--database-url", url, "search", "--image", str(objects[0]), "--method", "bow", "--nprobe", "2")
    assert nprobe.stderr == "Error: --nprobe does not apply to --method bow (an inverted file)\n"
