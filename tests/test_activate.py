"""`sisyphus activate` and `eval copydetect --activate`: active indexing on generated pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image, ImageDraw

from sisyphus_db.media.activation_manifest import manifest_path, write_manifest
from sisyphus_db.activate.quality import psnr, ssim
from sisyphus_db.errors import AnnIndexError

MANIFEST_KEYS = {"version", "activated", "original", "original_sha256", "output", "model", "index", "format", "mode",
                 "width", "height", "psnr_target", "psnr", "ssim", "distance_to_target_before",
                 "distance_to_target_after", "iterations", "seconds", "changed"}


def shapes_image(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """Random ellipses and boxes with a little grain: edges give a CNN something to hold on to.

    (The smooth blobs of `write_test_image` sit so near the origin of the feature space that
    a change of one grey level moves their unit feature erratically.)
    """
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x0, y0 = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        w, h = (int(v) for v in rng.integers(8, size[0] // 2, 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 4, (size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_inputs(folder: Path, count: int = 5) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        path = folder / f"s{seed}.png"
        shapes_image(seed).save(path)
        paths.append(path)
    return paths


def test_psnr_and_ssim() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert psnr(image, image) == math.inf and ssim(image, image) == pytest.approx(1.0)
    changed = image.copy()
    changed[0, 0, 0] = changed[0, 0, 0] ^ 4  # one value off by 4: MSE 16 / 6000
    assert psnr(image, changed) == pytest.approx(10 * math.log10(255**2 / (16 / 6000)))
    assert ssim(image, changed) > 0.99
    smooth = np.repeat(np.linspace(40, 200, 50)[None, :, None], 40, axis=0).repeat(3, axis=2).astype(np.uint8)
    noisy = np.clip(smooth + rng.normal(0, 30, smooth.shape), 0, 255).astype(np.uint8)
    assert 0.0 < ssim(smooth, noisy) < 0.3  # noise on a flat picture destroys its structure


def test_differentiable_resize_is_pillows() -> None:
    import torch

    from sisyphus_db.activate.resample import pil_bilinear_resize

    for size in ((96, 72), (400, 300)):  # up- and down-sampling
        image = np.asarray(shapes_image(1, size))
        expected = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BILINEAR)).astype(int)
        tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div(255)[None]
        got = (pil_bilinear_resize(tensor, 224, 224)[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
        assert np.abs(got - expected).max() <= 1 and np.mean(got != expected) < 0.01


def test_quantized_target_is_what_the_index_stores() -> None:
    from sisyphus_db.activate.target import quantized_targets
    from sisyphus_db.ann.build import build_index
    from sisyphus_db.ann.search import search

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(vectors, np.arange(400), factory="IVF4,PQ8x4")
    targets = quantized_targets(index, vectors[:10])
    # The index's own distance to a stored vector is the distance to its reconstruction.
    distances, ids = search(index, vectors[:10], 1, nprobe=4)
    assert (ids[:, 0] == np.arange(10)).all()
    own = np.sum((targets.vectors - vectors[:10]) ** 2, axis=1) / 2
    assert np.allclose(distances[:, 0], own, atol=1e-4)
    assert targets.first is not None and targets.second is not None
    assert (np.sum((vectors[:10] - targets.first) ** 2, 1) <= np.sum((vectors[:10] - targets.second) ** 2, 1)).all()
    with pytest.raises(AnnIndexError, match="stores vectors exactly"):
        quantized_targets(build_index(vectors, np.arange(400), factory="Flat"), vectors[:2])


def test_heatmap_puts_the_change_in_texture() -> None:
    import torch

    from sisyphus_db.activate.heatmap import perceptual_heatmap

    image = torch.full((1, 3, 32, 64), 0.5)
    image[..., 32:] += torch.rand(1, 3, 32, 32) * 0.4 - 0.2  # right half textured, left half flat
    heat = perceptual_heatmap(image)
    assert heat.shape == (1, 1, 32, 64) and float(heat.mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(heat[..., 36:].mean()) > 3 * float(heat[..., :28].mean())


@pytest.mark.slow
def test_activation_pulls_the_feature_to_its_target_within_the_psnr_bound(tmp_path: Path) -> None:
    from sisyphus_db.activate.optimise import ActivationSettings
    from sisyphus_db.activate.runner import Planned, activate_plan
    from sisyphus_db.activate.target import quantized_targets
    from sisyphus_db.ann.build import build_index
    from sisyphus_db.embed.embedder import load_embedder

    paths = write_inputs(tmp_path / "in", 6)
    embedder = load_embedder(device="cpu")
    vectors = embedder.embed_images([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    index = build_index(vectors, np.arange(6), factory="PQ8x2")
    plan = [Planned(path, tmp_path / "out" / path.name) for path in paths[:2]]
    report = activate_plan(plan, embedder, index, {"kind": "test"}, ActivationSettings(psnr=43.0, iterations=3))
    assert not report.errors and len(report.items) == 2
    moved = [item for item in report.items if item["changed"]]
    assert moved, "no image moved toward its target"
    for item in moved:
        assert item["distance_to_target_after"] < item["distance_to_target_before"]
        original = np.asarray(Image.open(item["original"]))
        written = np.asarray(Image.open(item["output"]))
        assert psnr(original, written) >= 43.0 and item["psnr"] == pytest.approx(psnr(original, written), abs=1e-3)
        # The recorded "after" is measured on the file as written, through the ingest's own path.
        after = embedder.embed_images([written])[0]
        target = quantized_targets(index, vectors[paths.index(Path(item["original"]))][None]).vectors[0]
        assert float(np.sum((after - target) ** 2)) == pytest.approx(item["distance_to_target_after"], abs=1e-4)


@pytest.mark.slow
def test_cli_activate_keeps_size_mode_and_format_and_resumes(cli, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_inputs(folder / "rgb", 4)
    shapes_image(10).save(folder / "photo.jpg", quality=92)
    shapes_image(11).convert("L").save(folder / "grey.png")
    rgba = shapes_image(12).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(folder / "alpha.png")
    shapes_image(13).convert("P").save(folder / "palette.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    args = ("activate", str(folder), "--out", str(out), "--index", "PQ4x2", "--iterations", "2", "--device", "cpu",
            "--batch-size", "4", "--json")
    result = cli(*args)
    assert result.exit_code == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["activated"] == 7 and document["skipped"] == 0
    failed = {Path(e["path"]).name: e["error"] for e in document["errors"]}
    assert set(failed) == {"broken.jpg", "palette.png"}
    assert "mode P is not supported" in failed["palette.png"]
    assert len([line for line in result.stderr.splitlines() if "broken.jpg" in line]) == 1
    assert document["index"]["kind"] == "trained_for_purpose" and document["index"]["factory"] == "PQ4x2"
    for name, mode, fmt in [("rgb/s0.png", "RGB", "PNG"), ("photo.jpg", "RGB", "JPEG"), ("grey.png", "L", "PNG"),
                            ("alpha.png", "RGBA", "PNG")]:
        with Image.open(folder / name) as original, Image.open(out / name) as activated:
            assert (activated.size, activated.mode, activated.format) == (original.size, mode, fmt)
            before, after = np.asarray(original), np.asarray(activated)
        manifest = json.loads(manifest_path(out / name).read_text())
        assert MANIFEST_KEYS <= set(manifest)
        assert manifest["original"] == str((folder / name).resolve()) and manifest["model"] == "efficientnet-lite0"
        assert manifest["iterations"] == 2 and manifest["psnr_target"] == 43.0
        if mode == "RGBA":
            assert (after[..., 3] == before[..., 3]).all()  # alpha is never changed
            before, after = before[..., :3], after[..., :3]
        if manifest["changed"]:
            assert psnr(before, after) >= 43.0
        else:
            assert manifest["psnr"] is None and manifest["distance_to_target_after"] == \
                pytest.approx(manifest["distance_to_target_before"], abs=1e-4)

    again = cli(*args)
    assert again.exit_code == 1  # the broken files are still there
    second = json.loads(again.stdout)
    assert (second["activated"], second["skipped"]) == (0, 7)


def test_out_folder_inside_the_input_is_refused(cli, tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 1)
    result = cli("activate", str(tmp_path / "in"), "--out", str(tmp_path / "in" / "activated"), "--index", "PQ4x2")
    assert result.exit_code != 0 and not (tmp_path / "in" / "activated").exists()
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "is inside the input folder" in result.stderr


@pytest.mark.parametrize("value", ["10", "95", "nan"])
def test_psnr_out_of_range_is_refused(cli, tmp_path: Path, value: str) -> None:
    write_inputs(tmp_path / "in", 1)
    result = cli("activate", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--psnr", value, "--index", "PQ4x2")
    assert result.exit_code != 0 and "--psnr must be within 20-80 dB" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_model_without_gradients_is_refused(cli, tmp_path: Path) -> None:
    import torch

    class NoGrad(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.conv(x)

    model = tmp_path / "frozen.pt"
    torch.jit.save(torch.jit.freeze(torch.jit.script(NoGrad().eval())), str(model))
    write_inputs(tmp_path / "in", 4)
    result = cli("activate", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", f"torchscript:{model}",
                 "--index", "PQ4x2", "--device", "cpu")
    assert result.exit_code != 0, result.stdout
    assert "gives no gradients to its input" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "out").rglob("*.png")) if (tmp_path / "out").exists() else True


def test_cuda_without_a_gpu_fails_clearly(cli, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    write_inputs(tmp_path / "in", 1)
    result = cli("activate", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cuda",
                 "--index", "PQ4x2")
    assert result.exit_code != 0 and "torch sees no CUDA GPU" in result.stderr


@pytest.mark.gpu
def test_activation_on_the_gpu(cli, tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 4)
    result = cli("activate", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cuda",
                 "--index", "PQ4x2", "--iterations", "2", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["device"].startswith("cuda") and document["activated"] == 4


def test_ingest_records_the_activation_in_frame_metadata(database, tmp_path: Path) -> None:
    from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest

    folder = tmp_path / "activated"
    paths = write_inputs(folder, 2)
    write_manifest(paths[0], {"version": 1, "activated": True, "original": "/photos/s0.png", "psnr": 43.2,
                              "ssim": 0.99, "model": "efficientnet-lite0", "index": {"kind": "registered",
                                                                                      "factory": "IVF4,PQ16x4"}})
    summary = run_ingest(database, [folder], IngestOptions(device="cpu", workers=1))
    assert summary.frames == 2 and summary.errors == 0  # the manifest is not mistaken for an input
    with database.transaction() as conn:
        rows = dict(conn.execute(sa.text("SELECT path, metadata FROM frames WHERE path = ANY(:p)"),
                                 {"p": [str(p) for p in paths]}).all())
    activation = rows[str(paths[0])]["activation"]
    assert activation["activated"] is True and activation["original"] == "/photos/s0.png"
    assert activation["psnr"] == 43.2 and activation["index"] == {"kind": "registered", "factory": "IVF4,PQ16x4"}
    assert "activation" not in (rows[str(paths[1])] or {})


@pytest.mark.slow
def test_eval_copydetect_activate_reports_passive_and_active(cli, fresh_database_url: str, tmp_path: Path) -> None:
    write_inputs(tmp_path / "refs", 6)
    env = {"SISYPHUS_DATABASE_URL": fresh_database_url}
    result = cli("eval", "copydetect", str(tmp_path / "refs"), "--activate", "--factories", "PQ4x2", "--no-rerank",
                 "--iterations", "2", "--distractors", "2", "--combinations", "1", "--workers", "1",
                 "--device", "cpu", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    passive, active = document["passive"], document["active"]
    assert set(passive) == set(active) >= {"run_id", "kind", "model", "references", "queries", "distractors",
                                            "results"}
    assert passive["references"] == active["references"] == 6 and passive["queries"] == active["queries"]
    assert [(r["backend"], r["factory"]) for r in passive["results"]] == \
        [(r["backend"], r["factory"]) for r in active["results"]] == [("exact", None), ("faiss", "PQ4x2")]
    for block in (passive, active):
        for result_ in block["results"]:
            assert set(result_["per_transformation"]) == set(passive["results"][0]["per_transformation"])
            assert result_["params"].get("rerank", False) is False or result_["backend"] == "exact"
    summary = document["activation"]["PQ4x2"]
    assert summary["images"] == 6 and (summary["mean_psnr"] is None or summary["mean_psnr"] >= 43.0)
    engine = sa.create_engine(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        backends = set(conn.execute(sa.text("SELECT DISTINCT backend FROM eval_metrics WHERE run_id = :r"),
                                    {"r": active["run_id"]}).scalars())
        params = conn.execute(sa.text("SELECT params FROM eval_runs WHERE id = :r"), {"r": active["run_id"]}).scalar_one()
        activated = conn.execute(sa.text("SELECT count(*) FROM frames WHERE metadata ? 'activation'")).scalar_one()
    engine.dispose()
    assert backends == {"exact+active", "faiss+active"}
    assert params["activate"] == "active" and params["passive_run_id"] == passive["run_id"]
    assert activated == 6  # the activated references were ingested with their provenance


def test_no_rerank_ranks_by_the_index_own_distances() -> None:
    from sisyphus_db.ann.search import search
    from sisyphus_db.evaluate.retrieval import FaissSearcher

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1000, 1300, dtype=np.int64)
    codes_only = FaissSearcher(ids, vectors, "IVF4,PQ8x4", rerank=False)
    reranked = FaissSearcher(ids, vectors, "IVF4,PQ8x4", rerank=True)
    found, distances = codes_only.search(vectors[:20], 5)
    expected_d, expected = search(codes_only.index, vectors[:20], 5, nprobe=codes_only.nprobe)
    assert (found == expected).all() and np.allclose(distances, expected_d)
    exact_found, exact_d = reranked.search(vectors[:20], 5)
    assert (exact_found[:, 0] == ids[:20]).all() and np.allclose(exact_d[:, 0], 0.0, atol=1e-5)
    assert not np.allclose(distances[:, 0], 0.0, atol=1e-3)  # 4-bit codes: the stored vector is not exact
    # A searcher `like` another keeps its trained quantizer and settings, with other vectors stored.
    moved = FaissSearcher(ids + 5000, vectors, "IVF4,PQ8x4", rerank=False, like=codes_only)
    again, _ = moved.search(vectors[:20], 5)
    assert (again == found + 5000).all() and moved.nprobe == codes_only.nprobe


def test_registered_index_must_exist(cli, fresh_database_url: str, tmp_path: Path) -> None:
    write_inputs(tmp_path / "in", 1)
    result = cli("activate", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu",
                 env={"SISYPHUS_DATABASE_URL": fresh_database_url})
    assert result.exit_code != 0 and len(result.stderr.strip().splitlines()) == 1
    assert "run `sisyphus ingest` first" in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_activate_toward_the_registered_sidecar(cli, fresh_database_url: str, tmp_path: Path) -> None:
    env = {"SISYPHUS_DATABASE_URL": fresh_database_url}
    write_inputs(tmp_path / "in", 5)
    assert cli("ingest", str(tmp_path / "in"), "--device", "cpu", "--workers", "1", env=env).exit_code == 0
    built = cli("index", "build", "--factory", "PQ4x2", "--device", "cpu", env=env)
    assert built.exit_code == 0, built.stderr
    result = cli("activate", str(tmp_path / "in" / "s0.png"), "--out", str(tmp_path / "out"), "--iterations", "2",
                 "--device", "cpu", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads(manifest_path(tmp_path / "out" / "s0.png").read_text())
    assert manifest["index"]["kind"] == "registered" and manifest["index"]["factory"] == "PQ4x2"
    assert json.loads(result.stdout)["activated"] == 1
