"""Discovery (relevance feedback) and the simulated reviewer on a small planted vector corpus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import CliRunner, create_database_from_template
from label_data import PlantedCorpus, make_planted_corpus

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.db.embedded import EmbeddedServer
from sisyphus_db.errors import InputError
from sisyphus_db.label import feedback
from sisyphus_db.label.discover import DEFAULT_METHOD, DISCOVER_METHODS, discover
from sisyphus_db.label.labels import LabelError, add_labels, label_frame_ids
from sisyphus_db.label.reviewer import random_order, review_targets, simulate_review, single_query
from sisyphus_db.search.indexing import build_faiss_index, load_faiss_index
from sisyphus_db.store.indexes import find_index

TREE_CLASSES = ("blobs", "checker", "gradient")


def _counts(db: Database) -> tuple[int, int, int]:
    with db.transaction() as conn:
        row = conn.execute(sa.text("SELECT (SELECT count(*) FROM labels), (SELECT count(*) FROM search_runs), "
                                   "(SELECT count(*) FROM search_results)")).one()
    return int(row[0]), int(row[1]), int(row[2])


# ---- arithmetic, no database ------------------------------------------------------------------


def test_review_targets_and_random_order_expectation() -> None:
    assert review_targets(19) == {"50%": 10, "80%": 16, "100%": 19}
    assert review_targets(1) == {"50%": 1, "80%": 1, "100%": 1}
    assert review_targets(10) == {"50%": 5, "80%": 8, "100%": 10}
    # t (N + 1) / (R + 1): 9 relevant among 99 candidates.
    assert random_order(99, 9) == {"50%": 50.0, "80%": 80.0, "100%": 90.0}
    ranking = [5, 1, 6, 2, 7, 3, 8, 4]
    assert single_query(ranking, {1, 2, 3, 4}) == {"50%": 4, "80%": 8, "100%": 8}
    assert single_query(ranking[:5], {1, 2, 3, 4}) == {"50%": 4, "80%": None, "100%": None}
    with pytest.raises(InputError, match="no frame to find"):
        review_targets(0)


def test_feedback_building_blocks() -> None:
    rng = np.random.default_rng(0)
    a = feedback.unit(rng.standard_normal(16).astype(np.float32))
    b = feedback.unit(rng.standard_normal(16).astype(np.float32))
    query = feedback.rocchio(np.stack([a, a]), np.stack([b]))
    assert abs(float(np.linalg.norm(query)) - 1) < 1e-5
    assert float(query @ a) > 0.8 and float(query @ b) < float(a @ b)  # pushed away from the negative
    assert np.allclose(feedback.rocchio(np.stack([a]), np.stack([a])), a, atol=1e-6)  # cancelled: positives win
    assert feedback.reciprocal_rank_fusion([[1, 2, 3], [2, 4]])[0][0] == 2
    assert [i for i, _ in feedback.reciprocal_rank_fusion([[3, 1], [1, 3]])] == [1, 3]  # a tie goes by id
    looks = np.stack([a, a, b, a])
    assert sorted(feedback.spread_queries(looks, 2)) == [2, 3]  # the newest, then the other look
    x = np.vstack([a + 0.1 * rng.standard_normal((20, 16)), b + 0.1 * rng.standard_normal((20, 16))]).astype(np.float32)
    y = np.array([1] * 20 + [0] * 20, dtype=np.float32)
    p = feedback.predict_logistic(feedback.train_logistic(x, y), np.stack([a, b]))
    assert p[0] > 0.5 > p[1]


# ---- discover in the library --------------------------------------------------------------------


@pytest.fixture
def planted(database: Database) -> PlantedCorpus:
    return make_planted_corpus(database)


def test_discover_never_proposes_a_labelled_frame_and_refills_to_k(database: Database,
                                                                   planted: PlantedCorpus) -> None:
    positives, decoys = planted.positives[:6], planted.decoys[:6]
    add_labels(database, "cones", positives)
    add_labels(database, "cones", decoys, positive=False)
    labelled = set(positives) | set(decoys)
    for method in DISCOVER_METHODS:
        before = _counts(database)
        outcome = discover(database, planted.model, "cones", k=25, method=method)
        proposed = [hit.frame_id for hit in outcome.hits]
        assert len(proposed) == 25 and len(set(proposed)) == 25, method
        assert not labelled & set(proposed), method
        assert [hit.rank for hit in outcome.hits] == list(range(1, 26))
        assert outcome.backend == "exact" and outcome.method == method
        assert _counts(database) == (before[0], before[1] + 1, before[2] + 25)
        with database.transaction() as conn:
            run = conn.execute(sa.text("SELECT query, k, name FROM search_runs WHERE id = :r"),
                               {"r": outcome.run_id}).one()
            stored = conn.execute(sa.text("SELECT frame_id FROM search_results WHERE run_id = :r ORDER BY rank"),
                                  {"r": outcome.run_id}).scalars().all()
        assert run[0] == {"kind": "discover", "label": "cones", "method": method} and run[1] == 25
        assert stored == proposed
        document = outcome.to_json()
        assert list(document) == ["label", "run_id", "method", "results"]
        assert {"rank", "frame_id", "distance", "path", "source_uri", "pts_seconds"} <= set(document["results"][0])
    # Asking for more than there is left gives everything unlabelled, nothing labelled.
    total = len(planted.ids)
    everything = discover(database, planted.model, "cones", k=total, method="rocchio", save=False)
    assert len(everything.hits) == total - len(labelled) and everything.run_id is None


@pytest.mark.parametrize("method", DISCOVER_METHODS)
def test_negatives_steer_the_proposals_away_from_the_decoys(database: Database, planted: PlantedCorpus,
                                                            method: str) -> None:
    add_labels(database, "cones", planted.positives[:10])
    before = discover(database, planted.model, "cones", k=20, method=method, save=False)
    add_labels(database, "cones", planted.decoys[:5], positive=False)
    after = discover(database, planted.model, "cones", k=20, method=method, save=False)
    decoys = set(planted.decoys[5:])
    found_before = len(decoys & {hit.frame_id for hit in before.hits})
    found_after = len(decoys & {hit.frame_id for hit in after.hits})
    assert found_after < found_before, (method, found_before, found_after)


def test_per_source_and_where_are_respected(database: Database, planted: PlantedCorpus) -> None:
    add_labels(database, "cones", planted.positives[:3])
    capped = discover(database, planted.model, "cones", k=12, per_source=2, method=DEFAULT_METHOD, save=False)
    sources = [hit.source_id for hit in capped.hits]
    assert len(sources) == 12 and max(sources.count(s) for s in set(sources)) <= 2
    only = planted.source_ids[1]
    filtered = discover(database, planted.model, "cones", k=5, where=f"frames.source_id = {only}", method="multi",
                        save=False)
    assert len(filtered.hits) == 5 and {hit.source_id for hit in filtered.hits} == {only}


@pytest.mark.parametrize("method", DISCOVER_METHODS)
def test_each_method_finds_the_planted_class_far_faster_than_random(database: Database, planted: PlantedCorpus,
                                                                    method: str) -> None:
    before = _counts(database)
    start = planted.positives[0]
    result = simulate_review(database, planted.model, planted.positives, start, candidates=len(planted.ids) - 1,
                             method=method, k=10, max_rounds=30)
    assert result.relevant == len(planted.positives) - 1 == 19
    assert result.reached["50%"] is not None and result.reached["80%"] is not None
    # Random order needs ~218 and ~349 frames; the loop needs a few rounds of 10.
    assert result.reached["50%"] <= 30 and result.reached["80%"] <= 60, (method, result.reached)
    assert result.found_per_round[0] >= 3
    assert result.random["80%"] > 5 * result.reached["80%"]
    # The simulation leaves no label and no run behind.
    assert _counts(database) == before


def test_reviewer_found_counts_and_reached_are_consistent(database: Database, planted: PlantedCorpus) -> None:
    result = simulate_review(database, planted.model, planted.positives, planted.positives[0],
                             candidates=len(planted.ids) - 1, method="rocchio", k=7, max_rounds=2)
    assert result.rounds == 2 and result.reviewed == 14 and sum(result.found_per_round) == result.found
    for key, target in review_targets(19).items():
        assert (result.reached[key] is not None) == (result.found >= target)
    with pytest.raises(InputError, match="not one of the class"):
        simulate_review(database, planted.model, planted.positives, planted.decoys[0], candidates=100)


def test_discover_goes_through_the_faiss_index_when_there_is_one(database: Database, planted: PlantedCorpus) -> None:
    build_faiss_index(database, planted.model, factory="Flat")
    add_labels(database, "cones", planted.positives[:2])
    outcome = discover(database, planted.model, "cones", k=8, method="classifier", save=False)
    assert outcome.backend == "faiss" and len(outcome.hits) == 8
    assert outcome.params["weak_negatives"] > 0  # no negatives yet: random frames stand in
    assert all(0.0 <= (score or 0.0) <= 1.0 for score in outcome.scores)
    # The server hands over its index already in memory: the same proposal comes back.
    record = find_index(database, planted.model.id, "faiss")
    assert record is not None
    again = discover(database, planted.model, "cones", k=8, method="classifier", save=False,
                     loaded=(record, load_faiss_index(record)))
    assert again.backend == "faiss" and [h.frame_id for h in again.hits] == [h.frame_id for h in outcome.hits]


def test_discover_refuses_bad_input_and_changes_nothing(database: Database, planted: PlantedCorpus) -> None:
    add_labels(database, "only-negatives", planted.decoys[:2], positive=False)
    add_labels(database, "cones", planted.positives[:2])
    before = _counts(database)
    cases = [
        (dict(name="nope"), LabelError, "no label named 'nope' (labels: cones, only-negatives)"),
        (dict(name="only-negatives"), LabelError, "label 'only-negatives' has no positive frames to start from"),
        (dict(name="cones", k=0), InputError, "--k must be between 1 and 10000, got 0"),
        (dict(name="cones", k=-3), InputError, "--k must be between 1 and 10000, got -3"),
        (dict(name="cones", method="magic"), InputError, "unknown method 'magic'"),
        (dict(name="cones", per_source=0), InputError, "--per-source must be at least 1, got 0"),
    ]
    for kwargs, error, message in cases:
        name = kwargs.pop("name")
        with pytest.raises(error) as caught:
            discover(database, planted.model, name, **kwargs)  # type: ignore[arg-type]
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert _counts(database) == before
    assert label_frame_ids(database, "cones") == (sorted(planted.positives[:2]), [])


# ---- through the CLI ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_world(pg_server: EmbeddedServer, template_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PlantedCorpus]]:
    url = create_database_from_template(pg_server)
    db = open_database(Settings(home=tmp_path_factory.mktemp("discover-home"), database_url=url))
    corpus = make_planted_corpus(db, seed=3)
    add_labels(db, "cones", corpus.positives[:2])
    add_labels(db, "cones", corpus.decoys[:1], positive=False)
    db.dispose()
    yield url, corpus


def test_cli_discover_json_and_errors(cli: CliRunner, cli_world: tuple[str, PlantedCorpus]) -> None:
    url, corpus = cli_world
    result = cli("--database-url", url, "discover", "cones", "--k", "5", "--method", "rocchio", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["label"] == "cones" and document["method"] == "rocchio" and document["run_id"] > 0
    assert len(document["results"]) == 5
    assert not {r["frame_id"] for r in document["results"]} & set(corpus.positives[:2] + corpus.decoys[:1])
    # The proposal is a stored run: label it straight from there.
    added = cli("--database-url", url, "label", "add", "cones", "--search", str(document["run_id"]), "--top", "2",
                "--json")
    assert added.exit_code == 0, added.stderr
    assert json.loads(added.stdout)["frame_ids"] == [r["frame_id"] for r in document["results"][:2]]
    table = cli("--database-url", url, "discover", "cones", "--k", "3")
    assert table.exit_code == 0 and "label add cones --search" in table.stdout
    for args, message in [
        (("discover", "nope"), "Error: no label named 'nope' (labels: cones)\n"),
        (("discover", "cones", "--k", "-1"), "Error: --k must be between 1 and 10000, got -1\n"),
        (("discover", "cones", "--k", "0"), "Error: --k must be between 1 and 10000, got 0\n"),
        (("discover", "cones", "--method", "x"), "Error: unknown method 'x': expected one of rocchio, multi, "
                                                 "classifier, expand\n"),
    ]:
        failed = cli("--database-url", url, *args)
        assert failed.exit_code == 1 and failed.stderr == message and failed.stdout == "", args


# ---- eval discover on a tiny labelled tree (real model, real ingest) ---------------------------


def _tree(root: Path, per_class: int = 4) -> Path:
    from PIL import Image

    from sisyphus_db.media.synthetic import Segment, segment_frame

    rng = np.random.default_rng(0)
    for kind in TREE_CLASSES:
        (root / kind).mkdir(parents=True)
        for number in range(per_class):
            colour = tuple(int(c) for c in rng.integers(30, 230, 3))
            picture = segment_frame(Segment(kind, 1.0, color=colour, seed=100 + number), 0, (128, 96))
            Image.fromarray(picture).save(root / kind / f"{number}.png")
    return root


@pytest.mark.slow
def test_eval_discover_on_a_tiny_tree(cli: CliRunner, fresh_database_url: str, tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    result = cli("eval", "discover", str(root), "--k", "2", "--rounds", "5", "--methods", "rocchio,classifier",
                 "--workers", "1", "--json", env={"SISYPHUS_DATABASE_URL": fresh_database_url})
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["classes"] == {name: 4 for name in TREE_CLASSES} and document["images"] == 12
    assert [(r["class"], r["method"]) for r in document["results"]] == [
        (name, method) for name in TREE_CLASSES for method in ("rocchio", "classifier")]
    for entry in document["results"]:
        assert entry["relevant"] == 3 and entry["candidates"] == 11
        assert entry["random"] == {"50%": 6.0, "80%": 9.0, "100%": 9.0}  # t * 12 / 4
        assert entry["reached"]["100%"] is not None and entry["reached"]["100%"] <= 6  # measured: 3
        assert entry["single"]["100%"] is not None
    engine = sa.create_engine(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT backend, subset, metric, value FROM eval_metrics m JOIN eval_runs r ON r.id = m.run_id "
            "WHERE r.kind = 'discover' AND m.run_id = :r"), {"r": document["run_id"]}).all()
        leftover = conn.execute(sa.text("SELECT count(*) FROM labels")).scalar_one()
    engine.dispose()
    assert leftover == 0  # the simulation removes its labels
    stored = {(b, s, m): v for b, s, m, v in rows}
    first = document["results"][0]
    assert stored[("rocchio", "efficientnet-lite0/class=blobs", "reviewed@80%")] == first["reached"]["80%"]
    assert ("classifier", "efficientnet-lite0/mean", "random@50%") in stored
    refused = cli("eval", "discover", str(root), "--label", "cats", "--workers", "1",
                  env={"SISYPHUS_DATABASE_URL": fresh_database_url})
    assert refused.exit_code == 1 and refused.stderr.startswith("Error: ") and "no class folder named 'cats'" in \
        refused.stderr
    bad_k = cli("eval", "discover", str(root), "--k", "-2", env={"SISYPHUS_DATABASE_URL": fresh_database_url})
    assert bad_k.exit_code == 1 and bad_k.stderr == "Error: --k must be between 1 and 10000, got -2\n"
