"""`sisyphus export NAME --format imagefolder|csv|parquet|coco` and `sisyphus export video`: the files
written, the train/val split by source, the --force rule, and bad input refused with one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.errors import SisyphusError
from sisyphus_db.label.export_dataset import COLUMNS, export_dataset
from sisyphus_db.label.export_select import ExportFrame, split_by_source
from sisyphus_db.label.export_video import CAPTION_HEIGHT, TILE, clip_frames, write_clip
from sisyphus_db.label.labels import add_labels
from tests.labelling_data import World, make_world

N_SOURCES, PER_SOURCE = 5, 4


def _setup(db: Database, image_dir: Path) -> World:
    """20 frames with JPEGs in 5 sources; per source frames 0-1 positive, 2 negative, 3 unlabelled.
    Propagated scores: 0.9 on source 0's unlabelled frame, 0.2 on source 1's."""
    sources = [s for s in range(N_SOURCES) for _ in range(PER_SOURCE)]
    world = make_world(db, np.random.default_rng(0).standard_normal((len(sources), 8)), sources, name="exp-8",
                       image_dir=image_dir)
    ids = world.ids.reshape(N_SOURCES, PER_SOURCE)
    add_labels(db, "cone", [int(i) for i in ids[:, :2].ravel()])
    add_labels(db, "cone", [int(i) for i in ids[:, 2]], positive=False)
    add_labels(db, "empty", [int(ids[0, 3])], positive=False)
    with db.transaction() as conn:
        conn.execute(sa.text("INSERT INTO label_scores (label, model_id, frame_id, score) VALUES "
                             "('cone', :m, :a, 0.9), ('cone', :m, :b, 0.2), ('cone', :m, :c, 1.0)"),
                     {"m": world.model.id, "a": int(ids[0, 3]), "b": int(ids[1, 3]), "c": int(ids[0, 0])})
    return world


@pytest.fixture
def world(database: Database, tmp_path: Path) -> World:
    return _setup(database, tmp_path / "frames")


def _assert_split_by_source(world: World, split_of: dict[int, str]) -> None:
    source = {int(f): int(s) for f, s in zip(world.ids, world.source_of, strict=True)}
    splits: dict[int, set[str]] = {}
    for frame_id, split in split_of.items():
        splits.setdefault(source[frame_id], set()).add(split)
    assert all(len(found) == 1 for found in splits.values()), splits
    assert {"train", "val"} == set().union(*splits.values())


def test_imagefolder_with_negatives(database: Database, world: World, tmp_path: Path) -> None:
    out = tmp_path / "set"
    report = export_dataset(database, "cone", "imagefolder", out, include_negatives=True, seed=1)
    assert (report.frames, report.positives, report.negatives) == (15, 10, 5)
    files = sorted(p.relative_to(out) for p in out.rglob("*.jpg"))
    assert len(files) == 15 and report.linked + report.copied == 15
    split_of = {int(p.stem): p.parts[0] for p in files}
    classes = {int(p.stem): p.parts[1] for p in files}
    ids = world.ids.reshape(N_SOURCES, PER_SOURCE)
    assert all(classes[int(i)] == "cone" for i in ids[:, :2].ravel())
    assert all(classes[int(i)] == "not-cone" for i in ids[:, 2])
    _assert_split_by_source(world, split_of)
    assert report.train == sum(1 for s in split_of.values() if s == "train") and report.val == 15 - report.train
    some = files[0]
    assert (out / some).read_bytes() == Path(world.paths[list(world.ids).index(int(some.stem))]).read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["label"] == "cone" and manifest["frames"] == 15 and manifest["seed"] == 1
    assert not set(manifest["sources"]["train"]) & set(manifest["sources"]["val"])


def test_csv_positives_only_and_the_same_split_for_the_same_seed(database: Database, world: World,
                                                                  tmp_path: Path) -> None:
    report = export_dataset(database, "cone", "csv", tmp_path / "a", seed=7)
    with (tmp_path / "a" / "frames.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS and len(rows) == report.frames == 10
    assert {r["label"] for r in rows} == {"cone"} and {r["positive"] for r in rows} == {"True"}
    assert {r["origin"] for r in rows} == {"manual"} and all(Path(r["path"]).is_file() for r in rows)
    _assert_split_by_source(world, {int(r["frame_id"]): r["split"] for r in rows})
    export_dataset(database, "cone", "csv", tmp_path / "b", seed=7)
    assert (tmp_path / "a" / "frames.csv").read_text() == (tmp_path / "b" / "frames.csv").read_text()


def test_parquet_with_min_score_adds_scored_unlabelled_frames(database: Database, world: World,
                                                              tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    report = export_dataset(database, "cone", "parquet", tmp_path / "p", min_score=0.5)
    table = pq.read_table(tmp_path / "p" / "frames.parquet")
    assert table.column_names == list(COLUMNS) and table.num_rows == report.frames == 11
    rows = table.to_pylist()
    scored = [r for r in rows if r["origin"] == "score"]
    ids = world.ids.reshape(N_SOURCES, PER_SOURCE)
    assert [r["frame_id"] for r in scored] == [int(ids[0, 3])] and scored[0]["score"] == pytest.approx(0.9)
    assert scored[0]["run_id"] is None and scored[0]["positive"] is True
    # A labelled frame shows its propagated score too.
    assert next(r for r in rows if r["frame_id"] == int(ids[0, 0]))["score"] == pytest.approx(1.0)
    _assert_split_by_source(world, {r["frame_id"]: r["split"] for r in rows})


def test_coco_image_level_categories(database: Database, world: World, tmp_path: Path) -> None:
    out = tmp_path / "coco"
    report = export_dataset(database, "cone", "coco", out, include_negatives=True)
    train, val = (json.loads((out / f"{s}.json").read_text()) for s in ("train", "val"))
    assert [c["name"] for c in train["categories"]] == ["cone", "not-cone"]
    assert len(train["images"]) + len(val["images"]) == 15 == report.frames
    assert len(train["images"]) == report.train and report.val > 0
    for document in (train, val):
        assert len(document["annotations"]) == len(document["images"])
        assert all("bbox" not in a for a in document["annotations"])
        assert all((out / image["file_name"]).is_file() for image in document["images"])
    negatives = {a["image_id"] for d in (train, val) for a in d["annotations"] if a["category_id"] == 2}
    assert negatives == {int(i) for i in world.ids.reshape(N_SOURCES, PER_SOURCE)[:, 2]}
    train_sources = {i["source_id"] for i in train["images"]}
    assert not train_sources & {i["source_id"] for i in val["images"]}
    assert len(list((out / "images").iterdir())) == 15


def test_output_folder_not_empty_needs_force(database: Database, world: World, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SisyphusError, match="output folder .* exists and is not empty: choose another --out or "
                                            "add --force"):
        export_dataset(database, "cone", "imagefolder", out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    export_dataset(database, "cone", "imagefolder", out, include_negatives=True, force=True, seed=1)
    # A second forced export with another seed replaces the first: no frame in both splits, the stray file kept.
    report = export_dataset(database, "cone", "imagefolder", out, force=True, seed=2)
    files = list(out.rglob("*.jpg"))
    assert len(files) == report.frames == 10 and len({p.stem for p in files}) == 10
    assert (out / "notes.txt").read_text() == "mine"


def test_split_by_source_keeps_sources_whole_and_near_the_fraction() -> None:
    def frame(i: int, source: int) -> ExportFrame:
        return ExportFrame(i, source, f"s{source}", f"/{i}.jpg", 0.0, 8, 8, True, "manual", None, None, "me")

    sizes = {1: 30, 2: 25, 3: 20, 4: 15, 5: 10}
    frames = [frame(len(sizes) * 100 + i, s) for s, n in sizes.items() for i in range(n)]
    frames = [frame(i, f.source_id) for i, f in enumerate(frames)]
    for seed in range(6):
        split = split_by_source(frames, 0.2, seed)
        val = [f for f in split if f.split == "val"]
        by_source = {}
        for f in split:
            by_source.setdefault(f.source_id, set()).add(f.split)
        assert all(len(s) == 1 for s in by_source.values())
        assert 10 <= len(val) <= 30
        assert split == split_by_source(frames, 0.2, seed)
    assert {f.split for f in split_by_source(frames, 0.0, 0)} == {"train"}
    single = [frame(i, 1) for i in range(5)]
    assert {f.split for f in split_by_source(single, 0.5, 0)} == {"train"}
    two = [frame(0, 1), frame(1, 2)]
    assert sorted(f.split for f in split_by_source(two, 0.1, 0)) == ["train", "val"]


@pytest.mark.parametrize(("label", "kwargs", "message"), [
    ("ghost", {}, "no label named 'ghost' (labels: cone, empty)"),
    ("empty", {}, "label 'empty' has no positive frames to export"),
    ("cone", {"fmt": "yolo"}, "unknown export format 'yolo': expected one of imagefolder, csv, parquet, coco"),
    ("cone", {"min_score": 1.5}, "--min-score is a propagated score in [-1, 1], got 1.5"),
    ("cone", {"val_fraction": 1.0}, "--val-fraction must be in [0, 1), got 1.0"),
    ("empty", {"include_negatives": True, "min_score": 0.5},
     "label 'empty' has no propagated scores for --min-score: run `sisyphus propagate empty` first"),
])
def test_export_refuses_bad_input_and_writes_nothing(database: Database, world: World, tmp_path: Path,
                                                     label: str, kwargs: dict, message: str) -> None:
    out = tmp_path / "nothing"
    arguments = {"fmt": "csv", **kwargs}
    with pytest.raises(SisyphusError) as caught:
        export_dataset(database, label, arguments.pop("fmt"), out, **arguments)
    assert str(caught.value) == message
    assert not out.exists()


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_video_of_a_label_and_of_a_search_run(database: Database, world: World, tmp_path: Path) -> None:
    frames = clip_frames(database, label="cone")
    assert len(frames) == 10 and frames[0].source_uri.endswith("clip-0.mp4")
    report = write_clip(frames, tmp_path / "cone.mp4", fps=4, contact_sheet=tmp_path / "sheet.jpg")
    assert _decoded_frames(tmp_path / "cone.mp4") == 10 and report.codec in ("libx264", "mpeg4")
    assert (report.width, report.height) == (96, 64)
    with Image.open(tmp_path / "sheet.jpg") as sheet:
        assert sheet.size == (4 * TILE[0], 3 * (TILE[1] + CAPTION_HEIGHT)) == tuple(report.contact_sheet_size)
    with pytest.raises(SisyphusError, match="exists: choose another path or add --force"):
        write_clip(frames, tmp_path / "cone.mp4")
    with database.transaction() as conn:
        run = conn.execute(sa.text("INSERT INTO search_runs (backend, k) VALUES ('exact', 3) RETURNING id")).scalar()
        conn.execute(sa.text("INSERT INTO search_results (run_id, rank, frame_id, distance) VALUES "
                             "(:r, 1, :a, 0.1), (:r, 2, :b, 0.2), (:r, 3, :c, 0.3)"),
                     {"r": run, "a": int(world.ids[7]), "b": int(world.ids[2]), "c": int(world.ids[11])})
    ranked = clip_frames(database, run_id=run)
    assert [f.frame_id for f in ranked] == [int(world.ids[i]) for i in (7, 2, 11)] and ranked[0].note == "rank 1"
    write_clip(ranked, tmp_path / "run.mp4", fps=1)
    assert _decoded_frames(tmp_path / "run.mp4") == 3
    for kwargs, message in (({"run_id": 10**9}, f"search run {10**9} does not exist"),
                            ({"label": "empty"}, "label 'empty' has no positive frames to put in a video"),
                            ({"label": "ghost"}, "no label named 'ghost'")):
        with pytest.raises(SisyphusError, match=message):
            clip_frames(database, **kwargs)


@pytest.fixture
def cli_world(fresh_database_url: str, tmp_path: Path) -> tuple[str, World]:
    db = open_database(Settings(home=tmp_path / "setup", database_url=fresh_database_url))
    world = _setup(db, tmp_path / "frames")
    db.dispose()
    return fresh_database_url, world


def test_cli_export_forms_and_errors(cli, cli_world: tuple[str, World], tmp_path: Path) -> None:
    url, _ = cli_world
    base = ("--database-url", url)
    short = cli(*base, "export", "cone", "--format", "csv", "--out", str(tmp_path / "a"), "--json")
    assert short.exit_code == 0, short.stderr
    assert json.loads(short.stdout)["frames"] == 10
    long = cli(*base, "export", "dataset", "cone", "--format", "csv", "--out", str(tmp_path / "b"))
    assert long.exit_code == 0 and "exported 10 frames" in long.stdout
    assert (tmp_path / "a" / "frames.csv").read_text() == (tmp_path / "b" / "frames.csv").read_text()
    busy = cli(*base, "export", "cone", "--format", "csv", "--out", str(tmp_path / "a"))
    assert busy.exit_code == 1
    assert busy.stderr == (f"Error: output folder {tmp_path / 'a'} exists and is not empty: choose another --out "
                           "or add --force\n")
    assert cli(*base, "export", "cone", "--format", "csv", "--out", str(tmp_path / "a"), "--force").exit_code == 0
    unknown = cli(*base, "export", "ghost", "--format", "csv", "--out", str(tmp_path / "c"))
    assert unknown.exit_code == 1 and unknown.stderr.count("\n") == 1 and "no label named 'ghost'" in unknown.stderr
    video = cli(*base, "export", "video", "cone", "--out", str(tmp_path / "v.mp4"), "--contact-sheet",
                str(tmp_path / "v.jpg"), "--columns", "5", "--json")
    assert video.exit_code == 0, video.stderr
    document = json.loads(video.stdout)
    assert document["frames"] == 10 and document["contact_sheet_size"] == [5 * TILE[0], 2 * (TILE[1] + CAPTION_HEIGHT)]
    assert _decoded_frames(tmp_path / "v.mp4") == 10
    neither = cli(*base, "export", "video", "--out", str(tmp_path / "w.mp4"))
    assert neither.exit_code == 1 and neither.stderr == "Error: give a label NAME or --search RUN_ID (one of them)\n"
    for args in (("export", "--help"), ("export", "dataset", "--help"), ("export", "video", "--help")):
        assert cli(*args).exit_code == 0


def test_contact_sheet_of_many_frames_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sisyphus_db.label import export_video
    from sisyphus_db.label.export_video import ClipFrame
    from tests.labelling_data import write_image

    monkeypatch.setattr(export_video, "MAX_SHEET_FRAMES", 6)
    frames = []
    for i in range(9):
        write_image(tmp_path / f"{i}.jpg", i)
        frames.append(ClipFrame(i + 1, str(tmp_path / f"{i}.jpg"), "/v/a.mp4", float(i), "manual"))
    report = write_clip(frames, tmp_path / "a.mp4", contact_sheet=tmp_path / "a.jpg", columns=3)
    assert report.contact_sheet_size == [3 * TILE[0], 2 * (TILE[1] + CAPTION_HEIGHT)]
    assert report.warnings == ["the contact sheet shows 6 evenly spaced frames of 9"]
    assert _decoded_frames(tmp_path / "a.mp4") == 9
