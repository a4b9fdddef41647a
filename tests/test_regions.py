"""Region vectors: the grid, `regions build`, the region index (update/verify) and `search --method regions`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from sisyphus_db.config import Settings
from sisyphus_db.db.database import open_database
from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.instance_data import (
    generate_objects,
    generate_scenes,
    load_rgba,
    paste,
)
from sisyphus_db.local.grid import (
    cells_to_pixels,
    check_box,
    parse_box,
    pixels_to_cells,
    region_grid,
)

OBJECT_SCALE = 0.25


def test_region_grid_covers_the_map_at_every_scale_with_overlap() -> None:
    regions = region_grid(14, 14, scales=4)
    assert [sum(r.scale == s for r in regions) for s in (1, 2, 3, 4)] == [1, 4, 9, 16]
    for scale in (1, 2, 3, 4):
        covered = np.zeros((14, 14), dtype=bool)
        for r in (r for r in regions if r.scale == scale):
            covered[r.r0:r.r1, r.c0:r.c1] = True
            assert r.r1 - r.r0 == r.c1 - r.c0 == int(np.ceil(2 * 14 / (scale + 1)))
        assert covered.all(), scale  # every scale covers the whole map
    # neighbours at scale 2 and 3 overlap by 40-60 % of their side
    two = sorted({r.c0 for r in regions if r.scale == 2})
    side = int(np.ceil(2 * 14 / 3))
    assert 0.4 <= (two[0] + side - two[1]) / side <= 0.6
    # a non-square map and a tiny map
    assert {(r.r1 - r.r0, r.c1 - r.c0) for r in region_grid(6, 10, 2) if r.scale == 2} == {(4, 7)}
    assert len(region_grid(1, 1, 3)) == 1  # duplicates of the single cell are dropped
    with pytest.raises(InputError, match=r"^scales must be between 1 and 6, got 0$"):
        region_grid(7, 7, 0)


def test_boxes_map_back_to_pixels_and_cover_the_frame() -> None:
    regions = region_grid(14, 14, 3)
    boxes = [cells_to_pixels(r, 14, 14, 640, 360) for r in regions]
    assert boxes[0] == (0, 0, 640, 360)
    mask = np.zeros((360, 640), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360
        mask[y0:y1, x0:x1] = True
    assert mask.all()
    assert pixels_to_cells((320, 180, 330, 190), 14, 14, 640, 360) == (7, 7, 8, 8)


def test_bad_boxes_are_refused_with_one_line() -> None:
    assert parse_box("1, 2,30,40") == (1, 2, 30, 40)
    with pytest.raises(InputError, match=r"^--box must be x0,y0,x1,y1 in whole pixels, got '1,2,3'$"):
        parse_box("1,2,3")
    with pytest.raises(InputError, match=r"^--box 10,10,10,20 has zero area"):
        check_box((10, 10, 10, 20), 100, 100)
    with pytest.raises(InputError, match=r"^--box 50,50,120,90 is outside the 100x80 query image$"):
        check_box((50, 50, 120, 90), 100, 80)


@dataclass
class World:
    url: str
    home: Path
    objects: list[Path]
    boxes: list[tuple[int, int, int, int]]

    @property
    def query(self) -> Path:
        return self.objects[0]

    @property
    def target(self) -> Path:
        return self.frame(0)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.boxes[0]

    def frame(self, i: int) -> Path:
        return self.objects[0].parent.parent / "frames" / f"scene_{i}.jpg"


@pytest.fixture(scope="module")
def world(pg_server, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Six scenes, each with a different small object (25 % of the width), and the six scenes untouched."""
    from conftest import create_database_from_template

    from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest
    from sisyphus_db.local.regions import build_regions
    from sisyphus_db.media.images import load_image
    from sisyphus_db.search.indexing import build_faiss_index, resolve_model

    root = tmp_path_factory.mktemp("regions")
    objects = generate_objects(root / "objects", 6, side=96, seed=5)
    scenes = [load_image(p).rgb for p in generate_scenes(root / "scenes", 6, size=(320, 180), seed=7)]
    frames = root / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    boxes = []
    for i, scene in enumerate(scenes):
        pasted = paste(scene, load_rgba(objects[i]), OBJECT_SCALE, rng)
        Image.fromarray(pasted.image).save(frames / f"scene_{i}.jpg", quality=92)
        Image.fromarray(scene).save(frames / f"plain_{i}.jpg", quality=92)
        boxes.append(pasted.box)
    url = create_database_from_template(pg_server)
    home = root / "home"
    db = open_database(Settings(home=home, database_url=url))
    try:
        run_ingest(db, [frames], IngestOptions(workers=1))
        model = resolve_model(db, None)
        build_regions(db, model)
        build_faiss_index(db, model)
        build_faiss_index(db, model, kind="regions")
    finally:
        db.dispose()
    yield World(url, home, objects, boxes)


def _search(cli, world: World, *args: str) -> dict:
    result = cli("--database-url", world.url, "search", "--image", str(world.query), "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _overlap(a: list[int], b: tuple[int, int, int, int]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_small_objects_are_found_by_their_regions_and_not_by_the_global_vector(cli, world: World) -> None:
    by_regions, by_global = [], []
    for i, query in enumerate(world.objects):
        target = str(world.frame(i).resolve())
        regions = cli("--database-url", world.url, "search", "--image", str(query), "--method", "regions",
                      "--k", "3", "--json", "--no-save")
        pooled = cli("--database-url", world.url, "search", "--image", str(query), "--k", "3", "--json", "--no-save")
        assert regions.exit_code == pooled.exit_code == 0, regions.stderr + pooled.stderr
        found = json.loads(regions.stdout)
        first = found["results"][0]
        assert found["params"]["method"] == "regions" and len(first["box"]) == 4
        assert "box" not in json.loads(pooled.stdout)["results"][0]
        if first["path"] == target:
            by_regions.append(i)
            assert _overlap(first["box"], world.boxes[i])  # the matched region holds the object
        if json.loads(pooled.stdout)["results"][0]["path"] == target:
            by_global.append(i)
    # Measured: regions put the right frame first for 4-5 of the 6 objects, the pooled vector for 1.
    assert len(by_regions) >= 4 and len(by_global) <= 2, (by_regions, by_global)
    assert set(by_regions) - set(by_global)


def test_region_search_is_stored_filtered_and_capped_like_pooled_search(cli, world: World) -> None:
    found = _search(cli, world, "--method", "regions", "--k", "4", "--where", "position('plain_' in frames.path) > 0",
                    "--save", "regions-run")
    assert len(found["results"]) == 4 and all("plain_" in hit["path"] for hit in found["results"])
    capped = _search(cli, world, "--method", "regions", "--k", "5", "--per-source", "2", "--no-save")
    assert len(capped["results"]) == 2 and capped["run_id"] is None  # one folder source
    csv = cli("--database-url", world.url, "search", "--image", str(world.query), "--method", "regions", "--csv",
              "--k", "2", "--no-save")
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].endswith(",box")
    db = open_database(Settings(home=world.home, database_url=world.url))
    try:
        with db.transaction() as conn:
            row = conn.execute(sa.text("SELECT name, params->>'method', query, params->'boxes' FROM search_runs "
                                       "WHERE id = :r"), {"r": found["run_id"]}).one()
            stored = conn.execute(sa.text("SELECT count(*) FROM search_results WHERE run_id = :r"),
                                  {"r": found["run_id"]}).scalar_one()
    finally:
        db.dispose()
    assert row[0] == "regions-run" and row[1] == "regions" and row[2]["kind"] == "image" and stored == 4
    assert sorted(row[3]) == sorted(str(hit["frame_id"]) for hit in found["results"])


def test_box_queries_and_bad_input(cli, world: World) -> None:
    # The boxed object out of the target frame finds that frame first.
    box = ",".join(map(str, world.box))
    boxed = cli("--database-url", world.url, "search", "--image", str(world.target), "--box", box,
                "--method", "regions", "--json", "--no-save", "--k", "1")
    assert boxed.exit_code == 0, boxed.stderr
    assert json.loads(boxed.stdout)["results"][0]["path"] == str(world.target.resolve())
    cases = [
        (("--box", "10,10,10,40"), "Error: --box 10,10,10,40 has zero area: x1 must exceed x0 and y1 must exceed y0"),
        (("--box", "0,0,500,50"), "Error: --box 0,0,500,50 is outside the 96x96 query image"),
        (("--method", "nearest"), "Error: unknown --method 'nearest': expected one of global, regions, bow"),
        (("--method", "regions", "--backend", "exact"),
         "Error: --method regions searches its own index: --backend exact does not apply"),
        (("--method", "bow"), "Error: there is no visual vocabulary for efficientnet-lite0: run `sisyphus bow build`"),
        (("--method", "regions", "--expand", "2"), "Error: --expand applies to --method bow only"),
    ]
    for args, message in cases:
        result = cli("--database-url", world.url, "search", "--image", str(world.query), *args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", message + "\n"), args
    two = cli("--database-url", world.url, "search", "--image", str(world.query), "--image", str(world.query),
              "--method", "regions")
    assert (two.exit_code, two.stderr) == (1, "Error: --method regions needs exactly one --image query\n")


def test_a_method_whose_index_is_not_built_names_the_command(cli, fresh_database_url: str, world: World) -> None:
    ingest = cli("--database-url", fresh_database_url, "ingest", str(world.target), "--json")
    assert ingest.exit_code == 0, ingest.stderr
    result = cli("--database-url", fresh_database_url, "search", "--image", str(world.query), "--method", "regions")
    message = ("Error: there are no region vectors for efficientnet-lite0: run `sisyphus regions build` and then "
               "`sisyphus index build --kind regions`\n")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", message)
    built = cli("--database-url", fresh_database_url, "regions", "build", "--json")
    assert built.exit_code == 0 and json.loads(built.stdout)["regions"] == 30
    again = cli("--database-url", fresh_database_url, "regions", "build", "--json")
    assert json.loads(again.stdout)["regions"] == 0  # idempotent: nothing left to do
    result = cli("--database-url", fresh_database_url, "search", "--image", str(world.query), "--method", "regions")
    assert (result.exit_code, result.stderr) == (
        1, "Error: there is no region index for efficientnet-lite0: run `sisyphus index build --kind regions`\n")
    verify = cli("--database-url", fresh_database_url, "index", "verify", "--kind", "regions")
    assert verify.stderr == ("Error: there is no faiss index of regions for efficientnet-lite0: "
                             "run `sisyphus index build --kind regions`\n")


def test_region_index_update_and_verify(cli, fresh_database_url: str, world: World) -> None:
    url = fresh_database_url
    frames = sorted(world.target.parent.glob("*.jpg"))
    assert cli("--database-url", url, "ingest", str(frames[0])).exit_code == 0
    assert cli("--database-url", url, "regions", "build").exit_code == 0
    built = cli("--database-url", url, "index", "build", "--kind", "regions", "--json")
    assert built.exit_code == 0, built.stderr
    record = json.loads(built.stdout)
    assert (record["kind"], record["ntotal"]) == ("regions", 30)
    assert re.fullmatch(r".+-regions\.[0-9a-f]{10}\.faiss", Path(record["path"]).name)  # a generation of its own
    assert cli("--database-url", url, "index", "verify", "--kind", "regions").exit_code == 0
    # new frames: their regions wait above the watermark until `index update --kind regions`
    assert cli("--database-url", url, "ingest", str(frames[1]), str(frames[2])).exit_code == 0
    assert cli("--database-url", url, "regions", "build").exit_code == 0
    pending = cli("--database-url", url, "index", "verify", "--kind", "regions", "--json")
    assert json.loads(pending.stdout)["pending"] == 60
    updated = cli("--database-url", url, "index", "update", "--kind", "regions", "--json")
    assert (json.loads(updated.stdout)["added"], json.loads(updated.stdout)["ntotal"]) == (60, 90)
    # a deleted frame takes its regions with it; verify notices, update removes them
    db = open_database(Settings(home=world.home, database_url=url))
    try:
        with db.transaction() as conn:
            conn.execute(sa.text("DELETE FROM frames WHERE id = (SELECT min(id) FROM frames)"))
    finally:
        db.dispose()
    stale = cli("--database-url", url, "index", "verify", "--kind", "regions")
    assert stale.exit_code == 1 and "30 ids in the index are no longer in the table" in stale.stderr
    assert "`sisyphus index update --kind regions`" in stale.stderr
    updated = cli("--database-url", url, "index", "update", "--kind", "regions", "--json")
    assert (json.loads(updated.stdout)["removed"], json.loads(updated.stdout)["ntotal"]) == (30, 60)
    assert cli("--database-url", url, "index", "verify", "--kind", "regions").exit_code == 0
    status = json.loads(cli("--database-url", url, "index", "status", "--json").stdout)
    assert [(s["kind"], s["ntotal"]) for s in status] == [("regions", 60)]


@pytest.mark.slow
def test_eval_instance_reports_each_method_and_scale(cli, fresh_database_url: str, tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    generate_objects(objects, 2, side=64, seed=2)
    scenes = tmp_path / "scenes"
    generate_scenes(scenes, 2, size=(256, 144), seed=4)
    args = ("--database-url", fresh_database_url, "eval", "instance", "--objects", str(objects), "--scenes",
            str(scenes), "--per-object", "1", "--scales", "0.3", "--methods", "global,regions", "--json")
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 4 and report["queries"] == 2  # 2 pasted + 2 untouched scenes
    for method in ("global", "regions"):
        figures = report["methods"][method]
        assert 0.0 <= figures["map"] <= 1.0 and 0.0 <= figures["r@10"] <= 1.0
        assert set(figures["per_scale"]) == {"0.3"}
    assert report["methods"]["global"]["iou"] is None and 0.0 <= report["methods"]["regions"]["iou"] <= 1.0
    assert report["methods"]["regions"]["r@10"] == 1.0  # 4 frames: everything is in the first 10
    db = open_database(Settings(home=tmp_path / "home", database_url=fresh_database_url))
    try:
        with db.transaction() as conn:
            rows = conn.execute(sa.text("SELECT r.kind, m.backend, m.subset, m.metric FROM eval_metrics m "
                                        "JOIN eval_runs r ON r.id = m.run_id")).all()
            leftovers = conn.execute(sa.text("SELECT count(*) FROM frames")).scalar_one()
    finally:
        db.dispose()
    assert ("instance", "regions", "scale=0.3", "iou") in {tuple(r) for r in rows} and leftovers == 0
    bad = cli(*args[:-1], "--scales", "0,0.2")
    message = "Error: --scales must be fractions of the scene width in (0, 1], got (0.0, 0.2)\n"
    assert (bad.exit_code, bad.stderr) == (1, message)
