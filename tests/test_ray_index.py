"""Sharded index builds and the k-NN graph on a real local Ray instance; scheduling on two simulated nodes."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.distributed.cluster import DistributedError
from sisyphus_db.distributed.index_job import FAIL_SHARD_ENV, run_ray_index_build, shard_ranges
from sisyphus_db.distributed.knn_job import run_ray_knn_graph
from sisyphus_db.search.index_verify import verify_faiss_index
from sisyphus_db.search.indexing import build_faiss_index, load_faiss_index
from sisyphus_db.store.indexes import find_index
from sisyphus_db.search.knn_graph import build_knn_graph
from vector_data import add_frames, make_corpus

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

N, D, FACTORY = 3_000, 32, "IVF16,Flat"


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    temp_dir = tempfile.mkdtemp(prefix="sisyphus-ray-")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    yield
    ray.shutdown()


@pytest.fixture
def db(fresh_database_url: str, tmp_path: Path) -> Iterator[Database]:
    database = open_database(Settings(home=tmp_path / "home", database_url=fresh_database_url))
    yield database
    database.dispose()


def _neighbours(index: object, queries: np.ndarray, k: int = 10, nprobe: int = 4) -> np.ndarray:
    from sisyphus_db.ann.search import search

    return search(index, queries, k, nprobe=nprobe)[1]


def _edges(url: str) -> dict[int, list[tuple[int, float]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT frame_id, neighbor_id, distance FROM knn_edges ORDER BY frame_id, rank").fetchall()
    out: dict[int, list[tuple[int, float]]] = {}
    for frame, neighbour, distance in rows:
        out.setdefault(frame, []).append((neighbour, distance))
    return out


def test_shard_ranges_cover_the_ids_once() -> None:
    ids = np.array([5, 9, 10, 40, 41, 42, 100], dtype=np.int64)
    ranges = shard_ranges(ids, 3)
    assert ranges == [(4, 10), (10, 41), (41, 100)]
    assert sum(((ids > a) & (ids <= b)).sum() for a, b in ranges) == ids.size
    assert len(shard_ranges(ids[:2], 5)) == 2


def test_a_sharded_build_matches_a_single_build_and_verifies(ray_session: None, db: Database,
                                                             fresh_database_url: str) -> None:
    corpus = make_corpus(db, n=N, d=D, n_sources=10, n_queries=50)
    single = build_faiss_index(db, corpus.model, factory=FACTORY, target_recall=0.9)
    single_found = _neighbours(load_faiss_index(single.record), corpus.queries)

    sharded = run_ray_index_build(db, corpus.model, shards=3, factory=FACTORY, target_recall=0.9,
                                  worker_url=fresh_database_url)
    record = sharded.build.record
    assert sharded.shards == 3 and record.state == "ready" and record.ntotal == N
    assert record.watermark == int(corpus.ids.max()) and record.params["refine"]
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM ann_indexes").fetchone() == (1,)  # one merged index, replaced
    ray_found = _neighbours(load_faiss_index(record), corpus.queries)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(single_found, ray_found, strict=True)])
    assert overlap >= 0.95  # trained on the same sample: in practice the same lists, the same neighbours
    report = verify_faiss_index(db, corpus.model, full=True)
    assert report.ok, report.problems


def test_knn_graph_on_ray_equals_the_local_graph(ray_session: None, db: Database, fresh_database_url: str) -> None:
    corpus = make_corpus(db, n=N, d=D, n_sources=10, n_queries=50)
    build_faiss_index(db, corpus.model, factory=FACTORY, target_recall=0.9)
    add_frames(db, corpus, corpus.queries[:20])  # frames newer than the index: searched one by one
    build_knn_graph(db, corpus.model, k=5)
    local = _edges(fresh_database_url)
    report = run_ray_knn_graph(db, corpus.model, k=5, worker_url=fresh_database_url, tasks=3)
    distributed = _edges(fresh_database_url)
    assert report.frames == N + 20 and report.edges == sum(len(v) for v in local.values())
    assert distributed.keys() == local.keys()
    for frame, edges in local.items():
        got = distributed[frame]
        assert [n for n, _ in got] == [n for n, _ in edges] or (  # equal, or equal up to tied distances
            sorted(round(d, 5) for _, d in got) == sorted(round(d, 5) for _, d in edges))
        assert np.allclose([d for _, d in got], [d for _, d in edges], atol=1e-5)


def test_a_failed_shard_leaves_the_registered_index_as_it_was(ray_session: None, db: Database,
                                                              fresh_database_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = make_corpus(db, n=1_000, d=D, n_sources=5, n_queries=5)
    before = build_faiss_index(db, corpus.model, factory="Flat").record
    monkeypatch.setenv(FAIL_SHARD_ENV, str(int(np.median(corpus.ids))))
    with pytest.raises(DistributedError, match="a shard task failed, nothing was registered: .*injected failure"):
        run_ray_index_build(db, corpus.model, shards=3, factory="Flat", worker_url=fresh_database_url)
    after = find_index(db, corpus.model.id, "faiss")
    assert after is not None and (after.id, after.sha256, after.state) == (before.id, before.sha256, "ready")
    assert verify_faiss_index(db, corpus.model).ok


def test_an_unreachable_address_fails_fast_and_changes_nothing(db: Database, fresh_database_url: str) -> None:
    corpus = make_corpus(db, n=500, d=D, n_sources=5, n_queries=5)
    before = build_faiss_index(db, corpus.model, factory="Flat").record
    # A loopback port nobody listens on, kept bound (not listening) for the whole test: released
    # early, another process (the session's Ray cluster starts many) could take it, and the
    # probe would then find something listening there.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        started = time.perf_counter()
        with pytest.raises(DistributedError, match=f"^cannot reach the Ray cluster at 127.0.0.1:{port}"):
            run_ray_index_build(db, corpus.model, address=f"127.0.0.1:{port}", worker_url=fresh_database_url)
        with pytest.raises(DistributedError, match=f"^cannot reach the Ray cluster at 127.0.0.1:{port}"):
            run_ray_knn_graph(db, corpus.model, address=f"127.0.0.1:{port}", worker_url=fresh_database_url)
        assert time.perf_counter() - started < 15
    after = find_index(db, corpus.model.id, "faiss")
    assert after is not None and (after.id, after.sha256) == (before.id, before.sha256)
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM knn_edges").fetchone() == (0,)


def test_cli_index_build_and_knn_graph_on_ray(ray_session: None, cli, db: Database,  # type: ignore[no-untyped-def]
                                              fresh_database_url: str) -> None:
    import json

    make_corpus(db, n=1_000, d=D, n_sources=5, n_queries=5)
    built = cli("--database-url", fresh_database_url, "index", "build", "--ray", "--shards", "2", "--factory",
                "IVF8,Flat", "--json")
    assert built.exit_code == 0, built.stderr
    document = json.loads(built.stdout)
    assert document["ray"]["shards"] == 2 and document["ntotal"] == 1_000 and document["state"] == "ready"
    assert cli("--database-url", fresh_database_url, "index", "verify").exit_code == 0
    graph = cli("--database-url", fresh_database_url, "knn-graph", "--ray", "--k", "3", "--json")
    assert graph.exit_code == 0, graph.stderr
    assert json.loads(graph.stdout)["edges"] == 3_000


def test_cli_flags(cli) -> None:  # type: ignore[no-untyped-def]
    help_text = cli("index", "build", "--help").stdout
    assert "--ray" in help_text and "--shards" in help_text
    assert "--ray" in cli("knn-graph", "--help").stdout
    result = cli("index", "build", "--shards", "2")
    assert result.exit_code != 0 and "--shards needs --ray" in result.stderr


def test_shards_and_embedding_actors_are_scheduled_over_two_nodes(tmp_path: Path, fresh_database_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs last: its own two-node Ray cluster (1 CPU each, one with a logical GPU) replaces the module's."""
    from ray.cluster_utils import Cluster

    from sisyphus_db.distributed.ingest_job import embed_actor_options

    ray.shutdown()
    # The simulated cluster keeps its files (and its address file) in a temp dir of its own.
    ray_tmp = Path(tempfile.mkdtemp(prefix="sray-"))
    (ray_tmp / "ray").mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        db = open_database(Settings(home=tmp_path / "home", database_url=fresh_database_url))
        try:
            corpus = make_corpus(db, n=1_000, d=D, n_sources=5, n_queries=5)
            report = run_ray_index_build(db, corpus.model, shards=2, factory="Flat", worker_url=fresh_database_url)
        finally:
            db.dispose()
        assert len(report.node_ids) == 2 and len(set(report.node_ids)) == 2  # one shard on each node
        assert report.build.record.ntotal == 1_000

        options = embed_actor_options(ray.cluster_resources().get("GPU", 0))
        assert options == {"concurrency": 1, "num_gpus": 1}
        assert embed_actor_options(0) == {"concurrency": 1, "num_gpus": 0}

        @ray.remote
        class Probe:  # stands in for the embedding actor: same resources, no CUDA touched
            def where(self) -> tuple[list[object], str]:
                return ray.get_gpu_ids(), ray.get_runtime_context().get_node_id()

        probe = Probe.options(num_gpus=options["num_gpus"]).remote()
        gpu_ids, node_id = ray.get(probe.where.remote(), timeout=60)
        assert len(gpu_ids) == 1 and node_id == gpu_node.node_id  # the node that advertises the GPU
    finally:
        ray.shutdown()
        cluster.shutdown()
