"""`sisyphus eval copydetect`: the Active Indexing protocol on generated reference images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.augment import AUGMENTATIONS
from sisyphus_db.evaluate.copydetect import score
from sisyphus_db.evaluate.retrieval import BackendSpec, parse_backends, split_factories
from sisyphus_db.media.synthetic import write_test_image

METRICS = ("r@1", "r@10", "r@100", "mrr", "uap")


def test_backends_and_factories_parse() -> None:
    assert parse_backends("exact,faiss", split_factories(["auto;IVF4,PQ8", "Flat"])) == [
        BackendSpec("exact"), BackendSpec("faiss", "auto"), BackendSpec("faiss", "IVF4,PQ8"),
        BackendSpec("faiss", "Flat")]
    with pytest.raises(InputError, match="unknown backend 'annoy'"):
        parse_backends("exact,annoy")


def test_score_counts_ranks_and_lets_distractors_cost_precision() -> None:
    found = np.array([[7, 8, -1], [8, 7, -1], [9, 7, 8]])
    distances = np.array([[0.1, 0.5, np.inf], [0.2, 0.3, np.inf], [0.05, 0.6, 0.7]], dtype=np.float32)
    figures = score(found, distances, ["blur", "blur", "distractor"], [7, 7, None])
    blur = figures["per_transformation"]["blur"]
    assert blur["r@1"] == 0.5 and blur["r@10"] == 1.0 and blur["mrr"] == 0.75
    # Predictions by score: distractor 9 (wrong), q0->7 (right), q1->8, q1->7 (right), ...
    assert blur["uap"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert "distractor" not in figures["per_transformation"]


@pytest.mark.slow
def test_copydetect_on_generated_references(cli, fresh_database_url: str, tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    for seed in range(6):
        write_test_image(refs / f"ref{seed}.jpg", seed=seed, size=(256, 192))
    env = {"SISYPHUS_DATABASE_URL": fresh_database_url}
    result = cli("eval", "copydetect", str(refs), "--backends", "exact,faiss,pgvector", "--distractors", "6",
                 "--combinations", "1", "--workers", "1", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["references"] == 6
    assert document["queries"] == 6 * len(AUGMENTATIONS)
    assert document["distractors"] == 6
    assert [r["backend"] for r in document["results"]] == ["exact", "faiss", "pgvector"]
    assert document["results"][1]["factory"] == "Flat" and document["results"][1]["requested"] == "auto"
    for result_ in document["results"]:
        assert set(result_["per_transformation"]) == set(AUGMENTATIONS)
        for values in [result_["overall"], *result_["per_transformation"].values()]:
            assert set(METRICS) <= set(values)
            assert 0.0 <= values["r@1"] <= values["r@10"] <= values["r@100"] <= 1.0
            assert values["r@1"] <= values["mrr"] <= 1.0
            assert 0.0 <= values["uap"] <= 1.0
        # A mild transformation leaves the nearest reference the right one.
        assert result_["per_transformation"]["jpeg_50"]["r@1"] == 1.0
        assert result_["per_transformation"]["resize_0.5"]["r@1"] == 1.0
        assert result_["overall"]["r@10"] == 1.0  # only 6 references: every one is in the top 10
    exact, flat = document["results"][0], document["results"][1]
    assert flat["overall"] == exact["overall"]  # a Flat index re-ranked exactly is exact search

    # Every figure is in SQL too.
    engine = sa.create_engine(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        kind = conn.execute(sa.text("SELECT kind FROM eval_runs WHERE id = :r"), {"r": document["run_id"]}).scalar_one()
        stored = conn.execute(sa.text(
            "SELECT value FROM eval_metrics WHERE run_id = :r AND backend = 'exact' AND subset = 'jpeg_50' "
            "AND metric = 'r@1'"), {"r": document["run_id"]}).scalar_one()
        count = conn.execute(sa.text("SELECT count(*) FROM eval_metrics WHERE run_id = :r"),
                             {"r": document["run_id"]}).scalar_one()
        frames = conn.execute(sa.text("SELECT count(*) FROM frames")).scalar_one()
    engine.dispose()
    assert kind == "copydetect" and stored == 1.0
    assert count == 3 * (len(AUGMENTATIONS) + 1) * len(METRICS)
    assert frames == 6  # the queries were embedded in memory, never ingested


def test_copydetect_without_images_is_one_line(cli, fresh_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = cli("eval", "copydetect", str(tmp_path / "empty"), env={"SISYPHUS_DATABASE_URL": fresh_database_url})
    assert result.exit_code == 1
    assert result.stderr == ("Error: no reference images found in the given paths "
                             "(videos are not used as references)\n")


def test_faiss_searcher_with_ivf_pq_reranks_to_exact_order() -> None:
    from sisyphus_db.ann.synthetic import clustered_vectors
    from sisyphus_db.evaluate.retrieval import ExactSearcher, FaissSearcher

    # Held-out queries from the same clusters, as transformed copies sit near their originals.
    everything = clustered_vectors(2050, 32, seed=1)
    vectors, queries = everything[:2000], everything[2000:]
    ids = np.arange(10, 2010, dtype=np.int64)
    ivf = FaissSearcher(ids, vectors, "IVF8,PQ8x4")
    exact = ExactSearcher(ids, vectors)
    assert ivf.factory == "IVF8,PQ8x4" and ivf.params["rerank_k"] >= 10
    found, distances = ivf.search(queries, 10)
    truth, _ = exact.search(queries, 10)
    assert found.shape == (50, 10)
    assert np.all(np.diff(distances, axis=1) >= 0)  # re-ranked: nearest first
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.9
