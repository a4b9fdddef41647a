"""`sisyphus label add|list|show|remove` through the CLI runner, on a small committed vector corpus."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from conftest import CliRunner
from label_data import PlantedCorpus, make_planted_corpus

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.label.labels import current_user


@pytest.fixture
def world(fresh_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Database,
                                                                                                PlantedCorpus]]:
    db = open_database(Settings(home=tmp_path_factory.mktemp("label-home"), database_url=fresh_database_url))
    corpus = make_planted_corpus(db, n_background=60, per_look=4, n_decoys=4, n_sources=3)
    yield fresh_database_url, db, corpus
    db.dispose()


def _rows(db: Database) -> list[tuple]:
    with db.transaction() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT frame_id, label, positive, origin, run_id, rule, score, created_by FROM labels "
            "ORDER BY label, frame_id")).all()]


def test_add_list_show_remove(cli: CliRunner, world: tuple[str, Database, PlantedCorpus]) -> None:
    url, db, corpus = world
    a, b, c, d, e = corpus.ids[:5]
    added = cli("--database-url", url, "label", "add", "cones", "--frames", f"{a},{b}", "--frames", str(c), "--json")
    assert added.exit_code == 0, added.stderr
    assert json.loads(added.stdout) == {"label": "cones", "added": 3, "updated": 0, "frame_ids": [a, b, c],
                                        "skipped": 0, "positive": True}
    negative = cli("--database-url", url, "label", "add", "cones", "--frames", f"{d} {e}", "--negative")
    assert negative.exit_code == 0 and negative.stdout == "cones: 2 frames labelled negative, 0 updated (by id)\n"
    assert cli("--database-url", url, "label", "add", "other", "--frames", str(a)).exit_code == 0

    listed = json.loads(cli("--database-url", url, "label", "list", "--json").stdout)["labels"]
    assert [(s["label"], s["positives"], s["negatives"], s["manual"], s["propagated"]) for s in listed] == [
        ("cones", 3, 2, 5, 0), ("other", 1, 0, 1, 0)]
    table = cli("--database-url", url, "label", "list")
    assert table.exit_code == 0 and "cones" in table.stdout and "other" in table.stdout

    shown = cli("--database-url", url, "label", "show", "cones", "--json")
    assert shown.exit_code == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert sorted(f["frame_id"] for f in document["positive_frames"]) == sorted([a, b, c])
    assert sorted(f["frame_id"] for f in document["negative_frames"]) == sorted([d, e])
    first = document["positive_frames"][0]
    assert first["origin"] == "manual" and first["created_by"] == current_user() and first["run_id"] is None
    assert first["source_uri"].startswith("/planted/") and first["created_at"] and first["updated_at"]
    assert sum(s["positives"] for s in document["by_source"]) == 3
    assert "cones: 3 positive, 2 negative" in cli("--database-url", url, "label", "show", "cones").stdout

    removed = cli("--database-url", url, "label", "remove", "cones", "--frames", f"{a},{d}")
    assert removed.exit_code == 0 and removed.stdout == "cones: removed from 2 frames\n"
    assert {r[0] for r in _rows(db) if r[1] == "cones"} == {b, c, e}
    everything = cli("--database-url", url, "label", "remove", "cones", "--json")
    assert json.loads(everything.stdout) == {"label": "cones", "removed": 3}
    assert [r[1] for r in _rows(db)] == ["other"]


def test_relabelling_updates_the_row_instead_of_adding_one(cli: CliRunner,
                                                           world: tuple[str, Database, PlantedCorpus]) -> None:
    url, db, corpus = world
    a, b = corpus.ids[:2]
    assert cli("--database-url", url, "label", "add", "cones", "--frames", f"{a},{b}").exit_code == 0
    again = cli("--database-url", url, "label", "add", "cones", "--frames", f"{b},{a},{b}", "--negative", "--json")
    assert json.loads(again.stdout)["added"] == 0 and json.loads(again.stdout)["updated"] == 2
    rows = _rows(db)
    assert len(rows) == 2 and all(row[2] is False for row in rows)


def test_label_a_search_run_with_top(cli: CliRunner, world: tuple[str, Database, PlantedCorpus]) -> None:
    url, db, corpus = world
    found = cli("--database-url", url, "search", "--frame", str(corpus.positives[0]), "--backend", "exact",
                "--k", "6", "--json")
    assert found.exit_code == 0, found.stderr
    run = json.loads(found.stdout)
    added = cli("--database-url", url, "label", "add", "cones", "--search", str(run["run_id"]), "--top", "4",
                "--json")
    assert added.exit_code == 0, added.stderr
    assert json.loads(added.stdout)["frame_ids"] == [r["frame_id"] for r in run["results"][:4]]
    rows = _rows(db)
    assert len(rows) == 4 and {row[4] for row in rows} == {run["run_id"]} and {row[3] for row in rows} == {"manual"}
    whole = cli("--database-url", url, "label", "add", "cones", "--search", str(run["run_id"]), "--json")
    assert json.loads(whole.stdout)["added"] == 2 and json.loads(whole.stdout)["updated"] == 4


def test_from_scores_makes_propagated_labels_and_keeps_manual_ones(cli: CliRunner,
                                                                   world: tuple[str, Database, PlantedCorpus]) -> None:
    url, db, corpus = world
    a, b, c, d = corpus.ids[:4]
    assert cli("--database-url", url, "label", "add", "cones", "--frames", str(a)).exit_code == 0
    assert cli("--database-url", url, "label", "add", "cones", "--frames", str(b), "--negative").exit_code == 0
    with db.transaction() as conn:
        conn.execute(sa.text(
            "INSERT INTO label_scores (label, model_id, frame_id, score, params) VALUES "
            "('cones', :m, :a, 0.99, '{\"k\": 10, \"alpha\": 0.99}'), ('cones', :m, :b, 0.9, '{}'), "
            "('cones', :m, :c, 0.7, '{}'), ('cones', :m, :d, 0.2, '{}')"),
            {"m": corpus.model.id, "a": a, "b": b, "c": c, "d": d})
    made = cli("--database-url", url, "label", "add", "cones", "--from-scores", "--min-score", "0.5", "--json")
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout) == {"label": "cones", "added": 1, "updated": 0, "frame_ids": [c], "skipped": 2,
                                       "positive": True}
    rows = {row[0]: row for row in _rows(db)}
    assert rows[a][2:4] == (True, "manual") and rows[b][2:4] == (False, "manual")  # manual labels kept
    assert rows[c][2:4] == (True, "propagated") and abs(rows[c][6] - 0.7) < 1e-6
    assert rows[c][5].startswith("label_scores >= 0.5 (planted-32") and d not in rows
    again = cli("--database-url", url, "label", "add", "cones", "--from-scores", "--min-score", "0.1",
                "--model", "planted-32")
    assert again.exit_code == 0 and again.stdout == ("cones: 1 frames labelled positive, 1 updated "
                                                     "(from propagated scores >= 0.1), 2 manual labels kept\n")
    assert len(_rows(db)) == 4
    listed = json.loads(cli("--database-url", url, "label", "list", "--json").stdout)["labels"][0]
    assert (listed["manual"], listed["propagated"]) == (2, 2)
    none = cli("--database-url", url, "label", "add", "signs", "--from-scores", "--min-score", "0.5")
    assert none.exit_code == 1
    assert none.stderr == "Error: label 'signs' has no propagated scores: run `sisyphus propagate signs` first\n"


def test_bad_input_is_one_line_and_changes_nothing(cli: CliRunner, world: tuple[str, Database, PlantedCorpus]) -> None:
    url, db, corpus = world
    a = corpus.ids[0]
    assert cli("--database-url", url, "label", "add", "cones", "--frames", str(a)).exit_code == 0
    before = _rows(db)
    cases = [
        (("label", "add", "cones", "--frames", f"{a},999999999"), "unknown frame: 999999999"),
        (("label", "add", "cones", "--frames", "12x"), "'12x' is not a frame id"),
        (("label", "add", "cones", "--frames", "-4"), "frame ids are positive integers, got -4"),
        (("label", "add", "cones", "--search", "424242"), "search run 424242 does not exist"),
        (("label", "add", "cones", "--search", "1", "--top", "-2"), "--top must be at least 1, got -2"),
        (("label", "add", "cones"), "give exactly one of --frames ID, --search RUN_ID and --from-scores"),
        (("label", "add", "cones", "--frames", str(a), "--search", "1"),
         "give exactly one of --frames ID, --search RUN_ID and --from-scores"),
        (("label", "add", "cones", "--frames", str(a), "--top", "3"), "--top applies to --search only"),
        (("label", "add", "cones", "--from-scores"), "--from-scores needs --min-score S"),
        (("label", "add", "a/b", "--frames", str(a)), "label name 'a/b' must not contain control characters or "
                                                      "slashes"),
        (("label", "add", " ", "--frames", str(a)), "a label name must not be empty"),
        (("label", "show", "nope"), "no label named 'nope' (labels: cones)"),
        (("label", "remove", "nope"), "no label named 'nope' (labels: cones)"),
        (("label", "remove", "cones", "--frames", str(corpus.ids[1])), f"label 'cones' is not on frame "
                                                                       f"{corpus.ids[1]}"),
    ]
    for args, message in cases:
        result = cli("--database-url", url, *args)
        assert result.exit_code == 1, (args, result.stdout, result.stderr)
        assert result.stderr == f"Error: {message}\n", args
        assert result.stdout == ""
    assert _rows(db) == before


def test_empty_database_and_help(cli: CliRunner, fresh_database_url: str) -> None:
    empty = cli("--database-url", fresh_database_url, "label", "list")
    assert empty.exit_code == 0 and empty.stdout.startswith("no labels yet")
    assert json.loads(cli("--database-url", fresh_database_url, "label", "list", "--json").stdout) == {"labels": []}
    show = cli("--database-url", fresh_database_url, "label", "show", "x")
    assert show.stderr == "Error: no label named 'x' (there are no labels yet: `sisyphus label add`)\n"
    for command in ("add", "list", "show", "remove"):
        assert cli("label", command, "--help").exit_code == 0
