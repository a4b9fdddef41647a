"""`sisyphus propagate`, `dedup` and `cluster`: known answers on small planted data, the rows written,
and bad input refused with one line and nothing stored changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database, open_database
from sisyphus_db.errors import SisyphusError
from sisyphus_db.label.cluster import check_k, cluster_frames, default_k
from sisyphus_db.label.components import duplicate_groups
from sisyphus_db.label.dedup import METHODS, find_duplicates
from sisyphus_db.label.labels import add_labels
from sisyphus_db.label.propagate import propagate_label
from sisyphus_db.label.spreading import label_spreading
from tests.labelling_data import World, count_rows, exact_knn_edges, make_world, store_edges, unit


def closed_form(n: int, rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, pos: list[int], neg: list[int],
                alpha: float) -> np.ndarray:
    """Zhou et al. in dense numpy, written independently of the library: (1 - a)(I - a S)^-1 Y."""
    sigma = np.median(dist[dist > 0])
    w = np.zeros((n, n))
    for r, c, d in zip(rows, cols, dist, strict=True):
        if r != c:
            value = np.exp(-(d / sigma) ** 2)
            w[r, c] = max(w[r, c], value)
            w[c, r] = max(w[c, r], value)
    degree = w.sum(axis=1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0)
    s = inv[:, None] * w * inv[None, :]
    y = np.zeros(n)
    y[pos], y[neg] = 1, -1
    return (1 - alpha) * np.linalg.solve(np.eye(n) - alpha * s, y)


def test_both_solvers_reach_the_closed_form_on_a_random_graph() -> None:
    rng = np.random.default_rng(3)
    n, k = 60, 4
    rows = np.repeat(np.arange(n), k)
    cols = rng.integers(0, n, n * k)
    dist = rng.uniform(0.05, 0.6, n * k)
    expected = closed_form(n, rows, cols, dist, [0, 7], [30], 0.9)
    for solver in ("cg", "iterate"):
        result = label_spreading(n, rows, cols, dist, np.array([0, 7]), np.array([30]), 0.9, solver=solver,
                                 tol=1e-10)
        assert result.converged and result.iterations > 1
        np.testing.assert_allclose(result.scores, expected, rtol=1e-6, atol=1e-9)


# Two chains of five frames joined by one long edge: 0-1-2-3-4 ~~ 5-6-7-8-9.
CHAIN = [(i, i + 1, 0.1) for i in range(4)] + [(i, i + 1, 0.1) for i in range(5, 9)] + [(4, 5, 0.8)]


@pytest.fixture
def chains(database: Database) -> World:
    world = make_world(database, np.random.default_rng(0).standard_normal((10, 8)), [0] * 5 + [1] * 5,
                       name="chain-8")
    src = [world.ids[a] for a, b, _ in CHAIN] + [world.ids[b] for a, b, _ in CHAIN]
    dst = [world.ids[b] for a, b, _ in CHAIN] + [world.ids[a] for a, b, _ in CHAIN]
    dist = [d for *_, d in CHAIN] * 2
    store_edges(database, world.model, src, dst, dist)
    add_labels(database, "cone", [int(world.ids[0])], positive=True)
    add_labels(database, "cone", [int(world.ids[9])], positive=False)
    return world


def _scores(db: Database, label: str = "cone") -> dict[int, tuple[float, dict]]:
    with db.transaction() as conn:
        rows = conn.execute(sa.text("SELECT frame_id, score, params FROM label_scores WHERE label = :n"),
                            {"n": label}).all()
    return {int(r[0]): (float(r[1]), r[2]) for r in rows}


def test_propagation_on_two_chains_matches_the_closed_form_and_the_seeds_side_wins(database: Database,
                                                                                    chains: World) -> None:
    report = propagate_label(database, "cone", chains.model, k=2, alpha=0.9)
    stored = _scores(database)
    assert len(stored) == 10 and report.frames == 10 and report.edges == 18
    assert report.positives == 1 and report.negatives == 1 and not report.warnings
    rows = np.array([a for a, b, _ in CHAIN] + [b for a, b, _ in CHAIN])
    cols = np.array([b for a, b, _ in CHAIN] + [a for a, b, _ in CHAIN])
    dist = np.array([d for *_, d in CHAIN] * 2)
    expected = closed_form(10, rows, cols, dist, [0], [9], 0.9)
    scale = next(iter(stored.values()))[1]["scale"]
    got = np.array([stored[int(frame_id)][0] * scale for frame_id in chains.ids])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert (got[:5] > 0).all() and (got[5:] < 0).all()
    assert max(abs(s) for s, _ in stored.values()) == pytest.approx(1.0)
    params = next(iter(stored.values()))[1]
    assert params["k"] == 2 and params["alpha"] == 0.9 and params["solver"] == "cg"
    # The best unlabelled frame is the positive seed's neighbour.
    assert report.top_unlabelled[0].frame_id == chains.ids[1]
    assert [f.frame_id for f in report.top_unlabelled] == [int(i) for i in chains.ids[1:5]]


def test_propagating_again_replaces_the_scores(database: Database, chains: World) -> None:
    propagate_label(database, "cone", chains.model, k=2, alpha=0.9)
    propagate_label(database, "cone", chains.model, k=1, alpha=0.5, solver="iterate")
    stored = _scores(database)
    assert len(stored) == 10
    assert {params["alpha"] for _, params in stored.values()} == {0.5}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "nope"}, "no label named 'nope'"),
    ({"name": "only-negatives"}, "has no manual positive frames"),
    ({"k": 0}, "--k must be a positive integer, got 0"),
    ({"k": -3}, "--k must be a positive integer, got -3"),
    ({"alpha": 0.0}, "--alpha must be strictly between 0 and 1, got 0.0"),
    ({"alpha": 1.0}, "--alpha must be strictly between 0 and 1, got 1.0"),
    ({"alpha": 1.5}, "--alpha must be strictly between 0 and 1, got 1.5"),
    ({"k": 5}, "has only 2 neighbours per frame, 5 were asked for: rebuild it with "
               "`sisyphus knn-graph --k 5 --model chain-8`"),
])
def test_propagate_refuses_bad_input_and_changes_nothing(database: Database, chains: World, kwargs: dict,
                                                         message: str) -> None:
    add_labels(database, "only-negatives", [int(chains.ids[3])], positive=False)
    propagate_label(database, "cone", chains.model, k=2, alpha=0.9)
    before = _scores(database)
    arguments = {"name": "cone", "k": 2, "alpha": 0.9, **kwargs}
    with pytest.raises(SisyphusError) as caught:
        propagate_label(database, arguments.pop("name"), chains.model, **arguments)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert _scores(database) == before
    assert count_rows(database, "label_scores") == 10


def test_propagate_without_a_graph_names_the_command(database: Database) -> None:
    world = make_world(database, np.eye(4, 8), [0, 0, 1, 1], name="no-graph")
    add_labels(database, "cone", [int(world.ids[0])])
    with pytest.raises(SisyphusError, match=r"there is no k-NN graph for model 'no-graph': build it with "
                                            r"`sisyphus knn-graph --k 10 --model no-graph`"):
        propagate_label(database, "cone", world.model)
    assert count_rows(database, "label_scores") == 0


def test_components_pick_the_best_connected_frame_as_representative() -> None:
    # 10 - 20 - 30 chain (20 has two partners), 40 - 50 pair (tie: lowest id), 60 alone has no pair.
    groups = duplicate_groups(np.array([10, 20, 30, 50, 60]), np.array([20, 30, 20, 40, 60]))
    assert groups.frame_id.tolist() == [10, 20, 30, 40, 50]
    assert groups.group_id.tolist() == [20, 20, 20, 40, 40]
    assert groups.is_representative.tolist() == [False, True, False, True, False]
    assert groups.groups == 2


def _planted_duplicates(database: Database) -> World:
    """12 frames far apart, except a cross-video pair (0 in source 0, 1 in source 1) and a star within
    source 2 whose centre is frame 4 (the highest id of the three): 2 ~ 4 ~ 3, while 2 and 3 are further."""
    rng = np.random.default_rng(5)
    base = unit(rng.standard_normal((12, 32)))
    out = base.copy()
    out[1] = unit(base[0] + 0.1 * unit(rng.standard_normal(32)))             # ~0.005 from frame 0
    direction = unit(rng.standard_normal(32) - (rng.standard_normal(32) @ base[4]) * base[4])
    direction = unit(direction - (direction @ base[4]) * base[4])
    out[2] = unit(base[4] + 0.2 * direction)                                   # ~0.02 from frame 4
    out[3] = unit(base[4] - 0.2 * direction)                                   # ~0.02 from 4, ~0.08 from 2
    world = make_world(database, out, [0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4], name="dup-32")
    store_edges(database, world.model, *exact_knn_edges(world, 3))
    return world


def test_dedup_groups_planted_duplicates_across_and_within_videos(database: Database) -> None:
    world = _planted_duplicates(database)
    ids = [int(i) for i in world.ids]
    report = find_duplicates(database, world.model, threshold=0.05)
    assert (report.groups, report.frames_in_groups, report.cross_video_groups, report.within_video_groups,
            report.droppable_frames) == (2, 5, 1, 1, 3)
    with database.transaction() as conn:
        rows = {int(r[0]): r[1:] for r in conn.execute(sa.text(
            "SELECT frame_id, group_id, is_representative, distance, threshold FROM duplicate_groups "
            "WHERE model_id = :m"), {"m": world.model.id}).all()}
    assert set(rows) == {ids[0], ids[1], ids[2], ids[3], ids[4]}
    assert rows[ids[0]][:2] == (ids[0], True) and rows[ids[1]][:2] == (ids[0], False)
    assert all(rows[ids[i]][0] == ids[4] for i in (2, 3, 4)) and rows[ids[4]][1] is True
    assert rows[ids[4]][2] == 0.0 and rows[ids[0]][2] == 0.0
    expected = 1.0 - float(world.vectors[2] @ world.vectors[4])
    assert rows[ids[2]][2] == pytest.approx(expected, abs=2e-3) and 0.01 < rows[ids[2]][2] < 0.05
    assert all(r[3] == pytest.approx(0.05) for r in rows.values())
    assert report.largest[0].group_id == ids[4] and report.largest[0].size == 3
    # A stricter threshold keeps only the tight cross-video pair, replacing the rows.
    report = find_duplicates(database, world.model, threshold=0.01)
    assert (report.groups, report.frames_in_groups, report.cross_video_groups) == (1, 2, 1)
    assert count_rows(database, "duplicate_groups") == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": 0.0}, "--threshold is a cosine distance in (0, 2], got 0.0"),
    ({"threshold": -1.0}, "--threshold is a cosine distance in (0, 2], got -1.0"),
    ({"method": "pixels"}, "unknown dedup method 'pixels': expected one of embedding, phash"),
])
def test_dedup_refuses_bad_input_and_changes_nothing(database: Database, kwargs: dict, message: str) -> None:
    world = _planted_duplicates(database)
    find_duplicates(database, world.model, threshold=0.05)
    with pytest.raises(SisyphusError) as caught:
        find_duplicates(database, world.model, **kwargs)
    assert message in str(caught.value)
    assert count_rows(database, "duplicate_groups") == 5
    assert sorted(METHODS) == ["embedding", "phash"]


def _clustered(database: Database) -> tuple[World, list[int]]:
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((3, 16)))
    sizes = [40, 30, 10]
    truth = [c for c, size in enumerate(sizes) for _ in range(size)]
    vectors = unit(centres[truth] + 0.05 * rng.standard_normal((80, 16)))
    world = make_world(database, vectors, [i % 4 for i in range(80)], name="clu-16")
    return world, truth


def test_cluster_finds_planted_clusters_and_lists_the_smallest_first(database: Database) -> None:
    world, truth = _clustered(database)
    report = cluster_frames(database, world.model, k=3, niter=20, device="cpu", nredo=5)
    assert [c.size for c in report.clusters] == [10, 30, 40]
    assert report.frames == 80 and report.k == 3 and report.device == "cpu"
    with database.transaction() as conn:
        rows = dict((int(f), (int(c), float(d))) for f, c, d in conn.execute(sa.text(
            "SELECT frame_id, cluster, distance FROM clusters WHERE model_id = :m"), {"m": world.model.id}).all())
    assert len(rows) == 80
    found = [rows[int(frame_id)][0] for frame_id in world.ids]
    for planted in range(3):
        assert len({found[i] for i, t in enumerate(truth) if t == planted}) == 1
    assert all(0.0 <= d < 0.1 for _, d in rows.values())
    assert all(c.isolation > 0.3 and c.sources == 4 for c in report.clusters)
    # Default k is about sqrt(n) with at least 5 frames per cluster.
    assert default_k(80) == 9 and default_k(1_000_000) == 1000 and default_k(12) == 2
    assert cluster_frames(database, world.model, niter=5, device="cpu").k == 9
    assert count_rows(database, "clusters") == 80


@pytest.mark.parametrize(("k", "message"), [
    (0, "--k must be at least 2, got 0"),
    (-4, "--k must be at least 2, got -4"),
    (81, "--k 81 is more than the 80 frames of model 'clu-16'"),
    (20, "--k 20 leaves fewer than 5 frames per cluster (80 frames): use --k 16 or less"),
])
def test_cluster_refuses_bad_k_and_changes_nothing(database: Database, k: int, message: str) -> None:
    world, _ = _clustered(database)
    cluster_frames(database, world.model, k=3, niter=5, device="cpu")
    with pytest.raises(SisyphusError) as caught:
        cluster_frames(database, world.model, k=k, device="cpu")
    assert str(caught.value) == message
    assert count_rows(database, "clusters") == 80
    with pytest.raises(SisyphusError, match="needs at least 10"):
        check_k(9, None, "tiny")


@pytest.fixture
def cli_world(fresh_database_url: str, tmp_path: Path) -> tuple[str, World]:
    """A committed database with 60 frames in 3 clusters x 3 sources, and a positive and a negative label."""
    db = open_database(Settings(home=tmp_path / "setup", database_url=fresh_database_url))
    rng = np.random.default_rng(2)
    centres = unit(rng.standard_normal((3, 16)))
    truth = [i % 3 for i in range(60)]
    vectors = unit(centres[truth] + 0.08 * rng.standard_normal((60, 16)))
    world = make_world(db, vectors, [i % 3 for i in range(60)], name="cli-16")
    add_labels(db, "cone", [int(world.ids[0]), int(world.ids[3])])
    add_labels(db, "cone", [int(world.ids[1])], positive=False)
    db.dispose()
    return fresh_database_url, world


def test_cli_chain_index_graph_propagate_dedup_cluster(cli, cli_world: tuple[str, World]) -> None:
    url, world = cli_world
    base = ("--database-url", url)
    missing = cli(*base, "propagate", "cone", "--json")
    assert missing.exit_code == 1 and missing.stdout == ""
    assert missing.stderr == ("Error: there is no k-NN graph for model 'cli-16': build it with "
                              "`sisyphus knn-graph --k 10 --model cli-16` (after `sisyphus index build`)\n")
    assert cli(*base, "dedup").exit_code == 1
    assert cli(*base, "index", "build", "--json").exit_code == 0
    graph = cli(*base, "knn-graph", "--k", "5", "--json")
    assert graph.exit_code == 0, graph.stderr
    too_many = cli(*base, "propagate", "cone", "--k", "8")
    assert too_many.exit_code == 1 and "`sisyphus knn-graph --k 8 --model cli-16`" in too_many.stderr

    result = cli(*base, "propagate", "cone", "--k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["frames"] == 60 and document["positives"] == 2 and document["negatives"] == 1
    truth = {int(frame_id): i % 3 for i, frame_id in enumerate(world.ids)}
    top = [hit["frame_id"] for hit in document["top_unlabelled"]]
    assert len(top) == 10 and all(truth[frame_id] == 0 for frame_id in top)  # the positives' cluster

    for bad, message in ((("--alpha", "1.5"), "--alpha must be strictly between 0 and 1, got 1.5"),
                         (("--k", "-1"), "--k must be a positive integer, got -1"),
                         (("--k", "0"), "--k must be a positive integer, got 0")):
        refused = cli(*base, "propagate", "cone", *bad)
        assert refused.exit_code == 1 and refused.stderr == f"Error: {message}\n"
    assert cli(*base, "propagate", "ghost").stderr.startswith("Error: no label named 'ghost' (labels: cone)")

    dedup = cli(*base, "dedup", "--threshold", "0.5", "--json")
    assert dedup.exit_code == 0, dedup.stderr
    groups = json.loads(dedup.stdout)
    assert groups["groups"] >= 1 and groups["frames_in_groups"] - groups["groups"] == groups["droppable_frames"]
    assert cli(*base, "dedup", "--method", "phash").exit_code == 1

    clusters = cli(*base, "cluster", "--k", "3", "--device", "cpu", "--redo", "5", "--json")
    assert clusters.exit_code == 0, clusters.stderr
    sizes = [c["size"] for c in json.loads(clusters.stdout)["clusters"]]
    assert sorted(sizes) == [20, 20, 20]
    refused = cli(*base, "cluster", "--k", "0")
    assert refused.exit_code == 1 and refused.stderr == "Error: --k must be at least 2, got 0\n"
    human = cli(*base, "cluster", "--k", "3", "--device", "cpu")
    assert human.exit_code == 0 and "rare scenes" in human.stdout


def test_cluster_on_cuda_without_a_gpu_fails_clearly_and_changes_nothing(database: Database) -> None:
    from sisyphus_db.ann.device import faiss_num_gpus

    if faiss_num_gpus() > 0:
        pytest.skip("this faiss has a GPU")
    world, _ = _clustered(database)
    with pytest.raises(SisyphusError, match="--device cuda was asked for but this faiss has no GPU support"):
        cluster_frames(database, world.model, k=3, device="cuda")
    assert count_rows(database, "clusters") == 0


@pytest.mark.gpu
def test_cluster_on_the_gpu_finds_the_planted_clusters(database: Database) -> None:
    world, _ = _clustered(database)
    report = cluster_frames(database, world.model, k=3, niter=20, device="cuda", nredo=5)
    assert report.device == "cuda" and [c.size for c in report.clusters] == [10, 30, 40]
