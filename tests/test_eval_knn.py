"""`sisyphus eval knn`: leave-one-out k-NN class accuracy on a generated labelled tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.knn_eval import labelled_images
from sisyphus_db.evaluate.retrieval import drop_self
from sisyphus_db.media.synthetic import Segment, segment_frame

CLASSES = ("blobs", "checker", "gradient")


def _tree(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for number in range(per_class):
            colour = tuple(int(c) for c in rng.integers(30, 230, 3))
            picture = segment_frame(Segment(kind, 1.0, color=colour, seed=100 + number), 0, (160, 120))
            Image.fromarray(picture).save(root / kind / f"{number}.png")
    return root


def test_labels_come_from_the_top_folder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree", per_class=2)
    (root / "checker" / "nested").mkdir()
    Image.new("RGB", (32, 32)).save(root / "checker" / "nested" / "x.png")
    Image.new("RGB", (32, 32)).save(root / "loose.png")  # no class: left out
    pairs = labelled_images(root)
    assert len(pairs) == 7
    assert {label for _, label in pairs} == set(CLASSES)
    assert dict((path.name, label) for path, label in pairs)["x.png"] == "checker"
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(InputError, match="expected at least 2 class folders with images, found 1"):
        labelled_images(tmp_path / "one")


def test_drop_self_removes_the_query_or_the_last_column() -> None:
    found = np.array([[5, 3, 4], [1, 2, 3]])
    distances = np.zeros((2, 3), dtype=np.float32)
    kept, _ = drop_self(found, distances, np.array([5, 9]), 2)
    assert kept.tolist() == [[3, 4], [1, 2]]


@pytest.mark.slow
def test_knn_accuracy_is_high_on_distinct_classes(cli, fresh_database_url: str, tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    result = cli("eval", "knn", str(root), "--k", "3", "--backends", "exact,faiss,pgvector", "--workers", "1",
                 "--json", env={"SISYPHUS_DATABASE_URL": fresh_database_url})
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["classes"] == {name: 6 for name in CLASSES}
    assert [r["backend"] for r in document["results"]] == ["exact", "faiss", "pgvector"]
    for entry in document["results"]:
        assert entry["model"] == "efficientnet-lite0"
        assert entry["accuracy"] >= 0.9  # measured 1.0: the three looks are far apart
        assert set(entry["per_class"]) == set(CLASSES)
    engine = sa.create_engine(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT backend, subset, value FROM eval_metrics m JOIN eval_runs r ON r.id = m.run_id "
            "WHERE r.kind = 'knn' AND m.metric = 'accuracy' AND m.run_id = :r"), {"r": document["run_id"]}).all()
    engine.dispose()
    overall = {backend: value for backend, subset, value in rows if subset == "efficientnet-lite0/overall"}
    assert overall == {entry["backend"]: entry["accuracy"] for entry in document["results"]}
    assert len(rows) == 3 * (1 + len(CLASSES))


def test_knn_needs_more_images_than_k(cli, fresh_database_url: str, tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree", per_class=1)
    result = cli("eval", "knn", str(root), "--k", "5", "--workers", "1",
                 env={"SISYPHUS_DATABASE_URL": fresh_database_url})
    assert result.exit_code == 1
    assert result.stderr.endswith("3 images were ingested; k-NN with k=5 needs more\n")
