"""Search: filtered recall at known selectivities, pgvector and per-source, stored runs,
output formats, every bad input as one line on stderr, and the k-NN graph."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import CliRunner, create_database_from_template
from vector_data import SELECTIVITY_FILTERS, Corpus, make_corpus, recall_at

import sisyphus_db.search.faiss_plans as faiss_plans
from sisyphus_db.ann.build import build_index
from sisyphus_db.ann.params import apply_search_params, set_parameter
from sisyphus_db.ann.search import exact_search
from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.db.embedded import EmbeddedServer
from sisyphus_db.errors import AnnIndexError, FilterError
from sisyphus_db.search.engine import SearchRequest, search
from sisyphus_db.search.filters import FrameFilter
from sisyphus_db.search.indexing import build_faiss_index
from sisyphus_db.search.pgvector_index import build_pgvector_index
from sisyphus_db.search.knn_graph import build_knn_graph
from sisyphus_db.search.queries import Query

FILTERED_QUERIES = 25


def _query(vector: np.ndarray) -> Query:
    return Query(vector.astype(np.float32), {"kind": "vector", "path": "test"})


def _hits(db: Database, corpus: Corpus, vector: np.ndarray, **request: object) -> list[int]:
    outcome = search(db, corpus.model, _query(vector), SearchRequest(save=False, **request))  # type: ignore[arg-type]
    return [hit.frame_id for hit in outcome.hits]


@pytest.fixture
def corpus(database: Database) -> Corpus:
    return make_corpus(database, n=6_000, d=64, n_sources=100)


# ---- filtered recall -----------------------------------------------------------------------


@pytest.mark.parametrize("exact_below", [faiss_plans.EXACT_MAX, 30], ids=["default-plan", "ann-plan"])
def test_filtered_faiss_search_keeps_recall_at_1_10_and_50_percent(
    database: Database, corpus: Corpus, monkeypatch: pytest.MonkeyPatch, exact_below: int
) -> None:
    # A broad filter (50 %) is checked on the ANN candidates alone. 6,000 frames are few
    # enough that the default plan searches the selective ones exactly; with the threshold
    # at 30 they go through the faiss IDSelector (1 %, 10 %), the plan large corpora use.
    monkeypatch.setattr(faiss_plans, "EXACT_MAX", exact_below)
    build_faiss_index(database, corpus.model, factory="IVF64,Flat")
    expected = {0.01: "id-selector", 0.10: "id-selector"} if exact_below == 30 else {}
    expected[0.50] = "filter-candidates"
    for selectivity, where in SELECTIVITY_FILTERS.items():
        recalls = []
        for q in corpus.queries[:FILTERED_QUERIES]:
            outcome = search(database, corpus.model, _query(q), SearchRequest(k=10, where=where, save=False))
            truth = _hits(database, corpus, q, k=10, where=where, backend="exact")
            found = [hit.frame_id for hit in outcome.hits]
            assert len(found) == 10  # k matching frames exist, so k come back
            city = where.split("'")[-2]
            assert all(corpus.cities[i] == city for i in found)
            # 10 %: the planner may keep the ANN candidates when enough of them pass (faiss_plans)
            allowed_plans = {expected.get(selectivity, "exact-filtered")} | ({"filter-candidates"}
                                                                             if selectivity == 0.10 else set())
            assert outcome.params["strategy"] in allowed_plans
            if outcome.params["strategy"] != "filter-candidates":  # no id list, no selectivity
                assert outcome.params["selectivity"] == pytest.approx(selectivity, abs=0.005)
            recalls.append(recall_at(found, truth))
        assert np.mean(recalls) >= 0.95, (selectivity, np.mean(recalls))


def test_a_broad_filter_never_lists_every_matching_frame(database: Database, corpus: Corpus,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    build_faiss_index(database, corpus.model, factory="IVF64,Flat")

    def refuse(self: object) -> None:
        raise AssertionError("a broad filter must be checked on the ANN candidates only")

    monkeypatch.setattr(FrameFilter, "all_ids", refuse)
    outcome = search(database, corpus.model, _query(corpus.queries[0]),
                     SearchRequest(k=10, where=SELECTIVITY_FILTERS[0.50], save=False))
    assert outcome.params["strategy"] == "filter-candidates" and len(outcome.hits) == 10


def test_a_filter_with_fewer_matches_than_k_returns_all_of_them(database: Database, corpus: Corpus) -> None:
    build_faiss_index(database, corpus.model, factory="IVF64,Flat")
    five = sorted(int(i) for i in corpus.ids[[3, 500, 1200, 4000, 5999]])
    where = f"frames.id IN ({', '.join(map(str, five))})"
    for backend in ("faiss", "pgvector", "exact"):
        if backend == "pgvector":
            build_pgvector_index(database, corpus.model)
        assert sorted(_hits(database, corpus, corpus.queries[0], k=10, where=where, backend=backend)) == five
    assert _hits(database, corpus, corpus.queries[0], where="frames.id < 0") == []


def test_a_where_with_percent_signs_means_them_literally(database: Database, corpus: Corpus) -> None:
    # `%` also starts a placeholder in statements with bound parameters: a LIKE pattern must still work
    build_faiss_index(database, corpus.model, factory="IVF64,Flat")
    build_pgvector_index(database, corpus.model)
    source = "/videos/clip-0-0007"
    where = f"sources.uri LIKE '%{source[-5:]}%' AND frames.path LIKE '{source}/%'"
    with database.transaction() as conn:
        expected = {row[0] for row in conn.execute(sa.text(
            "SELECT f.id FROM frames f JOIN sources s ON s.id = f.source_id WHERE s.uri = :u"), {"u": source + ".mp4"})}
    assert expected
    for backend in ("faiss", "pgvector", "exact"):
        found = _hits(database, corpus, corpus.queries[0], k=100, where=where, backend=backend)
        assert found and set(found) <= expected, backend
    assert set(FrameFilter(database, where, corpus.model.id).all_ids().tolist()) == expected


def test_pgvector_filtered_search_fills_k_with_matching_frames(database: Database, corpus: Corpus) -> None:
    build_pgvector_index(database, corpus.model)
    where = SELECTIVITY_FILTERS[0.01]
    recalls = []
    for q in corpus.queries[:10]:
        found = _hits(database, corpus, q, k=10, where=where, backend="pgvector")
        assert len(found) == 10 and all(corpus.cities[i] == "oslo" for i in found)
        recalls.append(recall_at(found, _hits(database, corpus, q, k=10, where=where, backend="exact")))
    assert np.mean(recalls) >= 0.9


def test_per_source_caps_results_and_keeps_the_nearest(database: Database, corpus: Corpus) -> None:
    build_faiss_index(database, corpus.model, factory="Flat")
    q = corpus.queries[0]
    outcome = search(database, corpus.model, _query(q), SearchRequest(k=10, per_source=1, save=False))
    sources = [hit.source_id for hit in outcome.hits]
    assert len(sources) == 10 and len(set(sources)) == 10
    # The same as taking the exact ranking and keeping each source's best frame.
    ranking = _hits(database, corpus, q, k=600, backend="exact")
    source_of = {hit.frame_id: hit.source_id for hit in search(
        database, corpus.model, _query(q), SearchRequest(k=600, backend="exact", save=False)).hits}
    best: list[int] = []
    seen: set[int] = set()
    for frame_id in ranking:
        if source_of[frame_id] not in seen:
            seen.add(source_of[frame_id])
            best.append(frame_id)
    assert [hit.frame_id for hit in outcome.hits] == best[:10]
    capped = search(database, corpus.model, _query(q), SearchRequest(k=20, per_source=2, save=False))
    assert max(Counter(hit.source_id for hit in capped.hits).values()) <= 2 and len(capped.hits) == 20


def test_searches_are_stored_unless_not_saved(database: Database, corpus: Corpus) -> None:
    build_faiss_index(database, corpus.model, factory="Flat")
    where = SELECTIVITY_FILTERS[0.10]
    outcome = search(database, corpus.model, _query(corpus.queries[0]),
                     SearchRequest(k=7, where=where, name="paris scooters"))
    assert outcome.run_id is not None
    with database.transaction() as conn:
        run = conn.execute(sa.text("SELECT name, backend, k, filter, model_id, query, params FROM search_runs "
                                   "WHERE id = :r"), {"r": outcome.run_id}).one()
        hits = conn.execute(sa.text("SELECT rank, frame_id, distance, source_uri, run_name, model FROM search_hits "
                                    "WHERE run_id = :r ORDER BY rank"), {"r": outcome.run_id}).all()
        runs_before = conn.execute(sa.text("SELECT count(*) FROM search_runs")).scalar_one()
    assert (run.name, run.backend, run.k, run.filter, run.model_id) == ("paris scooters", "faiss", 7, where,
                                                                        corpus.model.id)
    assert run.query == {"kind": "vector", "path": "test"} and run.params["strategy"] == "exact-filtered"
    assert [(h.rank, h.frame_id) for h in hits] == [(h.rank, h.frame_id) for h in outcome.hits]
    assert [h.distance for h in hits] == pytest.approx([h.distance for h in outcome.hits], abs=1e-6)
    assert all(h.run_name == "paris scooters" and h.model == corpus.model.name for h in hits)
    unsaved = search(database, corpus.model, _query(corpus.queries[1]), SearchRequest(save=False))
    assert unsaved.run_id is None and len(unsaved.hits) == 10
    with database.transaction() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM search_runs")).scalar_one() == runs_before


def test_filters_that_write_or_stack_statements_fail_and_change_nothing(database: Database,
                                                                        corpus: Corpus) -> None:
    build_faiss_index(database, corpus.model, factory="Flat")
    attempts = {
        "1=1; DELETE FROM frames": "--where must be a single boolean expression, not several statements",
        "1=1) ORDER BY 1; DELETE FROM frames; SELECT (1":
            "--where must be a single boolean expression, not several statements",
        "nextval('frames_id_seq') > 0": "--where must not change data: cannot execute nextval() in a read-only "
                                        "transaction",
        "setval('frames_id_seq', 1) > 0": "--where must not change data: cannot execute setval() in a read-only "
                                          "transaction",
        "lo_create(0) > 0": "--where must not change data: cannot execute lo_create() in a read-only transaction",
    }

    def state() -> tuple[int, int, int]:
        with database.transaction() as conn:
            return (conn.execute(sa.text("SELECT count(*) FROM frames")).scalar_one(),
                    conn.execute(sa.text("SELECT last_value FROM frames_id_seq")).scalar_one(),
                    conn.execute(sa.text("SELECT count(*) FROM pg_largeobject_metadata")).scalar_one())

    before = state()
    for where, message in attempts.items():
        for backend in ("faiss", "exact"):
            with pytest.raises(FilterError) as caught:
                search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(where=where, backend=backend))
            assert str(caught.value) == message
    assert state() == before
    with database.transaction() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM search_runs")).scalar_one() == 0
    # The surrounding transaction is still usable for writes.
    assert search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(k=3)).run_id is not None


# ---- nprobe -----------------------------------------------------------------------------------


def test_nprobe_goes_through_parameter_space() -> None:
    vectors = np.random.default_rng(0).standard_normal((2_000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(2_000) * 7 + 100
    ivf = build_index(vectors, ids, factory="IVF16,Flat")
    apply_search_params(ivf, nprobe=5)
    import faiss

    assert faiss.extract_index_ivf(ivf).nprobe == 5
    with pytest.raises(AnnIndexError, match=r"^faiss rejected parameter nprobes=4"):
        set_parameter(ivf, "nprobes", 4)  # the original sisyphus's silent misspelling
    flat = build_index(vectors, ids, factory="Flat")
    with pytest.raises(AnnIndexError, match=r"^nprobe=4 applies only to IVF indexes"):
        apply_search_params(flat, nprobe=4)


def test_nprobe_widens_the_search_and_is_refused_on_flat(database: Database, corpus: Corpus) -> None:
    record = build_faiss_index(database, corpus.model, factory="IVF64,Flat").record
    outcome = search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(nprobe=64, save=False))
    assert outcome.params["nprobe"] == 64 and outcome.params["nprobe"] != record.params["nprobe"]
    assert [h.frame_id for h in outcome.hits] == _hits(database, corpus, corpus.queries[0], backend="exact")
    build_faiss_index(database, corpus.model, factory="Flat")
    with pytest.raises(AnnIndexError, match=r"^nprobe=8 applies only to IVF indexes; this IndexIDMap2 index is "
                                            r"exact: leave nprobe unset$"):
        search(database, corpus.model, _query(corpus.queries[0]), SearchRequest(nprobe=8, save=False))


# ---- k-NN graph -------------------------------------------------------------------------------


def test_knn_graph_stores_the_exact_neighbours_of_every_frame(database: Database) -> None:
    corpus = make_corpus(database, n=1_500, d=32, n_sources=10, model_name="knn-32")
    build_faiss_index(database, corpus.model, factory="Flat")
    report = build_knn_graph(database, corpus.model, k=5)
    assert (report.frames, report.edges, report.k) == (1_500, 7_500, 5)
    with database.transaction() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, rank, neighbor_id, distance FROM knn_edges "
                                    "WHERE model_id = :m ORDER BY frame_id, rank"), {"m": corpus.model.id}).all()
    assert len(rows) == 7_500
    by_frame: dict[int, list[tuple[int, int, float]]] = {}
    for frame_id, rank, neighbour, distance in rows:
        by_frame.setdefault(frame_id, []).append((rank, neighbour, distance))
    assert set(by_frame) == set(corpus.ids.tolist())
    assert all([r for r, _, _ in edges] == [1, 2, 3, 4, 5] for edges in by_frame.values())
    assert all(frame_id not in [n for _, n, _ in edges] for frame_id, edges in by_frame.items())
    # Against brute force over the stored (halfvec) vectors, the frame itself left out.
    from sisyphus_db.store.vectors import model_vectors

    ids, vectors = model_vectors(database, corpus.model.id, corpus.model.dim)
    _, truth = exact_search(vectors, ids, vectors[:200], 6)
    agree = [len(set(t[1:]) & {n for _, n, _ in by_frame[int(i)]}) / 5 for i, t in zip(ids[:200], truth, strict=True)]
    assert np.mean(agree) >= 0.99
    for frame_id, edges in list(by_frame.items())[:50]:
        distances = [d for _, _, d in edges]
        assert distances == sorted(distances)
    again = build_knn_graph(database, corpus.model, k=3)  # replaces, does not append
    with database.transaction() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM knn_edges WHERE model_id = :m"),
                            {"m": corpus.model.id}).scalar_one() == again.edges == 4_500


# ---- through the CLI ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_world(pg_server: EmbeddedServer, template_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Corpus]]:
    """A committed database with 3,000 frames and a Flat faiss index, shared by read-only CLI tests."""
    url = create_database_from_template(pg_server)
    home = tmp_path_factory.mktemp("cli-search-home")
    db = open_database(Settings(home=home, database_url=url))
    corpus = make_corpus(db, n=3_000, d=64, n_sources=30)
    build_faiss_index(db, corpus.model, factory="Flat")
    db.dispose()
    yield url, corpus


def _vector_file(tmp_path: Path, vector: np.ndarray, name: str = "q.npy") -> Path:
    path = tmp_path / name
    np.save(path, vector)
    return path


def test_cli_json_and_csv_output(cli: CliRunner, cli_world: tuple[str, Corpus], tmp_path: Path) -> None:
    url, corpus = cli_world
    query = _vector_file(tmp_path, corpus.queries[0])
    result = cli("--database-url", url, "search", "--vector", str(query), "--k", "5", "--json", "--no-save")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["run_id"] is None and len(document["results"]) == 5
    first = document["results"][0]
    assert {"rank", "frame_id", "distance", "path", "source_uri", "pts_seconds"} <= set(first)
    assert [r["rank"] for r in document["results"]] == [1, 2, 3, 4, 5]
    assert first["source_uri"].endswith(".mp4") and first["frame_id"] in corpus.cities
    distances = [r["distance"] for r in document["results"]]
    assert distances == sorted(distances) and 0 <= distances[0] < 1

    frame = int(corpus.ids[2_000])  # a 'rome' frame, kept by the filter
    result = cli("--database-url", url, "search", "--frame", str(frame), "--k", "3", "--csv",
                 "--where", "sources.tags->>'city' <> 'oslo'")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["rank", "frame_id", "distance", "path", "source_uri", "pts_seconds", "source_id",
                             "frame_index"]
    assert int(rows[0]["frame_id"]) == frame and float(rows[0]["distance"]) < 1e-3  # a frame finds itself
    assert len(rows) == 3

    saved = cli("--database-url", url, "search", "--vector", str(query), "--k", "4", "--json", "--save", "cli run")
    run_id = json.loads(saved.stdout)["run_id"]
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT run_name, count(*) FROM search_hits WHERE run_id = :r "
                                      "GROUP BY run_name"), {"r": run_id}).one()
    engine.dispose()
    assert tuple(stored) == ("cli run", 4)

    status = cli("--database-url", url, "index", "status", "--json")
    [entry] = json.loads(status.stdout)
    assert (entry["factory"], entry["ntotal"], entry["recall_at_10"]) == ("Flat", 3_000, 1.0)
    assert entry["params"]["target_recall"] == 0.95


def test_cli_bad_inputs_fail_with_one_line(cli: CliRunner, cli_world: tuple[str, Corpus], tmp_path: Path) -> None:
    url, corpus = cli_world
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"this is a text file, not a jpeg")
    short = _vector_file(tmp_path, corpus.queries[0][:32], "short.npy")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    query = _vector_file(tmp_path, corpus.queries[0])
    name = corpus.model.name
    cases = {
        ("--image", str(bad_image)): f"{bad_image}: not an image (unrecognised format)",
        ("--frame", "999999999"): f"frame 999999999 does not exist or has no {name} vector",
        ("--vector", str(short)): f"{short}: expected a 64-d vector for {name}, got 32-d",
        ("--vector", str(garbage)): f"{garbage}: not a readable .npy vector file (ValueError)",
        ("--vector", str(tmp_path / "none.npy")): f"{tmp_path / 'none.npy'}: no such vector file",
        ("--vector", str(query), "--where", "frames.id >"):
            '--where does not parse: syntax error at or near ")"',
        ("--vector", str(query), "--where", "frames.nope = 1"):
            "--where names an unknown column or table: column frames.nope does not exist (use frames.*, "
            "sources.*, sources.tags->>'key')",
        ("--vector", str(query), "--where", "1=1; DELETE FROM frames"):
            "--where must be a single boolean expression, not several statements",
        ("--vector", str(query), "--where", "nextval('frames_id_seq') > 0"):
            "--where must not change data: cannot execute nextval() in a read-only transaction",
        ("--vector", str(query), "--backend", "annoy"):
            "unknown backend 'annoy': expected one of faiss, pgvector, exact",
        ("--vector", str(query), "--backend", "pgvector"):
            f"there is no pgvector index for {name}: run `sisyphus index build --backend pgvector`",
        ("--vector", str(query), "--nprobe", "4"):
            "nprobe=4 applies only to IVF indexes; this IndexIDMap2 index is exact: leave nprobe unset",
    }
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT (SELECT count(*) FROM frames), (SELECT last_value FROM frames_id_seq), "
                                      "(SELECT count(*) FROM search_runs)")).one()
    for args, message in cases.items():
        result = cli("--database-url", url, "search", *args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"Error: {message}\n"), args
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT (SELECT count(*) FROM frames), (SELECT last_value FROM frames_id_seq), "
                                     "(SELECT count(*) FROM search_runs)")).one()
    engine.dispose()
    assert tuple(after) == tuple(before)


def test_cli_missing_tampered_and_stale_index(cli: CliRunner, fresh_database_url: str, tmp_path: Path) -> None:
    url = fresh_database_url
    db = open_database(Settings(home=tmp_path / "home", database_url=url))
    corpus = make_corpus(db, n=1_000, d=64, n_sources=10)
    db.dispose()
    query = _vector_file(tmp_path, corpus.queries[0])
    name = corpus.model.name
    missing = cli("--database-url", url, "search", "--vector", str(query))
    assert (missing.exit_code, missing.stderr) == (1, f"Error: there is no faiss index for {name}: "
                                                      "run `sisyphus index build`\n")
    assert cli("--database-url", url, "index", "verify").stderr == (f"Error: there is no faiss index for {name}: "
                                                                    "run `sisyphus index build`\n")
    refused = cli("--database-url", url, "index", "build", "--factory", "IVF64,Flat")
    assert (refused.exit_code, refused.stderr) == (1, "Error: IVF64 needs at least 2496 training vectors "
                                                      "(39 per list), got 1000: use fewer lists or a Flat index\n")
    no_gpu = cli("--database-url", url, "index", "build", "--device", "cuda")
    assert no_gpu.exit_code == 1 and no_gpu.stderr.startswith("Error: --device cuda was asked for but this faiss "
                                                               "has no GPU support")
    built = cli("--database-url", url, "index", "build", "--json")
    assert built.exit_code == 0, built.stderr
    path = Path(json.loads(built.stdout)["path"])
    assert cli("--database-url", url, "index", "verify").stdout.startswith("ok: 1000 vectors match the table")
    assert cli("--database-url", url, "search", "--vector", str(query), "--no-save").exit_code == 0

    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    tampered = cli("--database-url", url, "search", "--vector", str(query), "--no-save")
    assert (tampered.exit_code, tampered.stderr) == (1, f"Error: index file {path} does not match its registry "
                                                        "checksum: rebuild with `sisyphus index build`\n")
    verify = cli("--database-url", url, "index", "verify")
    assert verify.exit_code == 1 and verify.stderr.startswith(f"out of sync: index file {path} has sha256 ")

    path.unlink()
    gone = cli("--database-url", url, "search", "--vector", str(query), "--no-save")
    assert (gone.exit_code, gone.stderr) == (1, f"Error: index file {path} does not exist: "
                                                "rebuild with `sisyphus index build`\n")
    assert cli("--database-url", url, "index", "build").exit_code == 0
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM frames WHERE id IN (SELECT id FROM frames ORDER BY id LIMIT 3)"))
    engine.dispose()
    stale = cli("--database-url", url, "index", "verify")
    assert stale.exit_code == 1 and stale.stderr.startswith("out of sync: 3 ids in the index are no longer in the "
                                                            "table (e.g. ")
    update = cli("--database-url", url, "index", "update")
    assert update.stdout == "added 0 and removed 3 vectors; the index holds 997 (watermark " \
        f"{int(corpus.ids.max())})\n"
    assert cli("--database-url", url, "index", "verify").exit_code == 0
    knn = cli("--database-url", url, "knn-graph", "--k", "4", "--json")
    assert json.loads(knn.stdout)["edges"] == 997 * 4
    dropped = cli("--database-url", url, "index", "drop")
    assert dropped.stdout == f"dropped the faiss index of {name}\n" and not path.exists()
