"""`sisyphus import-embeddings`: Parquet files in, frames and vectors out, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from conftest import CliRunner

from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError, ModelError
from sisyphus_db.ingest.imports import imported_weights_marker, import_embeddings
from sisyphus_db.search.engine import SearchRequest, search
from sisyphus_db.search.indexing import build_faiss_index
from sisyphus_db.search.queries import query_from_frame, query_from_images
from sisyphus_db.store.registry import find_model
from sisyphus_db.store.vectors import model_vectors

DIM = 8


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32) * 3.0


def write_file(path: Path, vectors: np.ndarray, *, fixed: bool = False, extra: dict[str, list] | None = None,
               row_group_size: int = 4) -> Path:
    kind = pa.list_(pa.float32(), DIM) if fixed else pa.list_(pa.float32())
    columns = {"path": [f"/elsewhere/{path.stem}/{i:04d}.jpg" for i in range(len(vectors))],
               "embedding": pa.array([v.tolist() for v in vectors], type=kind), **(extra or {})}
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def _count(database: Database, sql: str) -> int:
    with database.transaction() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def test_round_trip_values_ids_and_tags(database: Database, tmp_path: Path) -> None:
    a = _vectors(10, seed=1)
    first = write_file(tmp_path / "a.parquet", a, extra={
        "source": ["clip-a"] * 6 + ["clip-b"] * 4, "frame_index": list(range(100, 110)),
        "pts_seconds": [i * 0.5 for i in range(10)],
        "tags": [json.dumps({"city": "oslo"})] * 6 + [None] * 3 + [json.dumps({"city": "rome", "n": 3})]})
    b = _vectors(5, seed=2)
    second = write_file(tmp_path / "b.parquet", b, fixed=True, extra={
        "tags": pa.array([[("weather", "rain")]] * 5, type=pa.map_(pa.string(), pa.string()))})
    report = import_embeddings(database, [first, second], model_name="clip-import")
    assert (report.rows, report.frames_added, report.embeddings_added, report.dim) == (15, 15, 15, DIM)
    assert report.sources == 3
    model = find_model(database, "clip-import")
    assert model is not None and model.dim == DIM
    with database.transaction() as conn:
        assert conn.execute(sa.text("SELECT weights_sha256 FROM models WHERE id = :m"),
                            {"m": model.id}).scalar_one() == imported_weights_marker("cosine")
        frames = conn.execute(sa.text(
            "SELECT f.id, f.path, f.frame_index, f.pts_seconds, f.width, f.height, f.sha256, f.metadata, s.uri, s.tags "
            "FROM frames f JOIN sources s ON s.id = f.source_id JOIN embeddings e ON e.frame_id = f.id "
            "AND e.model_id = :m ORDER BY f.path"), {"m": model.id}).all()
    by_path = {row.path: row for row in frames}
    row = by_path["/elsewhere/a/0007.jpg"]
    assert (row.frame_index, row.pts_seconds, row.uri, row.width, row.height) == (107, 3.5, "clip-b", 1, 1)
    assert row.metadata == {"imported": True, "placeholder": ["width", "height", "sha256"]}
    assert by_path["/elsewhere/a/0009.jpg"].metadata["tags"] == {"city": "rome", "n": "3"}
    assert by_path["/elsewhere/a/0001.jpg"].tags == {"city": "oslo"}  # row tags merged into the source's
    assert by_path["/elsewhere/b/0003.jpg"].tags == {"weather": "rain"}
    assert by_path["/elsewhere/b/0003.jpg"].uri == str(second.resolve())  # no source column: the file
    assert by_path["/elsewhere/b/0003.jpg"].frame_index == 3  # no frame_index: position in the source
    import hashlib

    assert row.sha256 == hashlib.sha256(b"/elsewhere/a/0007.jpg").hexdigest()
    ids, stored = model_vectors(database, model.id, DIM)
    id_of = {r.path: r.id for r in frames}
    expected = np.vstack([a, b])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    names = [f"/elsewhere/a/{i:04d}.jpg" for i in range(10)] + [f"/elsewhere/b/{i:04d}.jpg" for i in range(5)]
    order = {int(i): k for k, i in enumerate(ids)}
    got = np.vstack([stored[order[id_of[name]]] for name in names])
    np.testing.assert_allclose(got, expected, atol=2e-3)  # halfvec precision
    # Searchable by frame (and by vector); --image refuses clearly.
    build_faiss_index(database, model, factory="Flat")
    hits = search(database, model, query_from_frame(database, id_of[names[3]], model),
                  SearchRequest(k=3, save=False)).hits
    assert hits[0].frame_id == id_of[names[3]]
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 10, 10)).save(tmp_path / "red.jpg")
    with pytest.raises(ModelError, match=r"^model clip-import cannot embed images: its vectors were imported"):
        query_from_images([tmp_path / "red.jpg"], model)


def test_a_rerun_is_idempotent(database: Database, tmp_path: Path) -> None:
    file = write_file(tmp_path / "a.parquet", _vectors(9), extra={"tags": ['{"k": "v"}'] * 9})
    first = import_embeddings(database, [file], model_name="again")
    again = import_embeddings(database, [file], model_name="again")
    assert (first.frames_added, first.embeddings_added) == (9, 9)
    assert (again.rows, again.frames_added, again.embeddings_added) == (9, 0, 0)
    assert _count(database, "SELECT count(*) FROM frames WHERE path LIKE '/elsewhere/a/%'") == 9


BAD = {
    "wrong-dim": (lambda p: write_file(p, _vectors(6), extra=None) and _rewrite_dim(p, row=3),
                  r"bad\.parquet: row 3: embedding has 5 values, expected 8$"),
    "missing-column": (lambda p: pq.write_table(pa.table({"path": ["/x.jpg"], "vec": [[1.0] * DIM]}), p),
                       r"bad\.parquet: missing required column embedding \(has: path, vec\)$"),
    "nan": (lambda p: write_file(p, np.where(np.arange(6 * DIM).reshape(6, DIM) == 20, np.nan, _vectors(6))),
            r"bad\.parquet: row 2: embedding has a non-finite value \(NaN or infinity\)$"),
    "zero": (lambda p: write_file(p, np.vstack([_vectors(4), np.zeros((1, DIM), np.float32)])),
             r"bad\.parquet: row 4: embedding is all zeros \(no direction\)$"),
    "bad-tags": (lambda p: write_file(p, _vectors(3), extra={"tags": ["{}", "not json", "{}"]}),
                 r"bad\.parquet: row 1: tags is not a JSON object$"),
    "null-path": (lambda p: pq.write_table(pa.table({"path": ["/a.jpg", None], "embedding": [[1.0] * DIM] * 2}), p),
                  r"bad\.parquet: row 1: path is null$"),
}


def _rewrite_dim(path: Path, row: int) -> bool:
    table = pq.read_table(path)
    rows = table.column("embedding").to_pylist()
    rows[row] = rows[row][:5]
    pq.write_table(table.set_column(1, "embedding", pa.array(rows, type=pa.list_(pa.float32()))), path,
                   row_group_size=2)
    return True


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_file_is_refused_with_one_line_and_nothing_stored(database: Database, tmp_path: Path,
                                                                  case: str) -> None:
    make, message = BAD[case]
    good = write_file(tmp_path / "good.parquet", _vectors(5))
    bad = tmp_path / "bad.parquet"
    make(bad)
    frames_before = _count(database, "SELECT count(*) FROM frames")
    with pytest.raises(InputError) as caught:
        import_embeddings(database, [good, bad], model_name=f"bad-{case}")
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and lines[1] == "nothing was imported (1 of 2 files refused)"
    assert lines[0].startswith(str(bad.resolve()))
    import re

    assert re.search(message, lines[0]), lines[0]
    assert find_model(database, f"bad-{case}") is None
    assert _count(database, "SELECT count(*) FROM frames") == frames_before


def test_a_second_file_of_another_dimension_is_refused(database: Database, tmp_path: Path) -> None:
    first = write_file(tmp_path / "a.parquet", _vectors(3))
    pq.write_table(pa.table({"path": ["/z.jpg"], "embedding": [[1.0, 2.0]]}), tmp_path / "two.parquet")
    with pytest.raises(InputError, match=r"two\.parquet: row 0: embedding has 2 values, expected 8"):
        import_embeddings(database, [first, tmp_path / "two.parquet"], model_name="dims")
    assert find_model(database, "dims") is None


def test_metric_and_names_are_checked(database: Database, tmp_path: Path) -> None:
    file = write_file(tmp_path / "a.parquet", _vectors(3))
    for metric in ("l2", "ip"):
        with pytest.raises(InputError, match=rf"^--metric {metric} is not supported: every sisyphus search"):
            import_embeddings(database, [file], model_name="m", metric=metric)
    with pytest.raises(ModelError, match=r"^--model resnet50 is a built-in embedding model"):
        import_embeddings(database, [file], model_name="resnet50")


@pytest.mark.slow
def test_cli_imports_and_refuses(cli: CliRunner, fresh_database_url: str, tmp_path: Path) -> None:
    env = {"SISYPHUS_DATABASE_URL": fresh_database_url}
    file = write_file(tmp_path / "a.parquet", _vectors(7))
    result = cli("import-embeddings", str(file), "--model", "cli-import", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["rows"], document["frames_added"], document["dim"], document["metric"]) == (7, 7, DIM, "cosine")
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"path": ["/x.jpg"]}), bad)
    result = cli("import-embeddings", str(bad), "--model", "cli-import", env=env)
    assert result.exit_code != 0 and result.stdout == ""
    assert "missing required column embedding" in result.stderr
    result = cli("import-embeddings", str(file), "--model", "cli-import", "--metric", "l2", env=env)
    assert result.exit_code != 0 and "--metric l2 is not supported" in result.stderr
    assert cli("import-embeddings", "--help").exit_code == 0
