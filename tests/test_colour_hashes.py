"""Perceptual hashes (pHash, wavelet hash) as bit(64), `search --method phash`, `dedup --method phash`;
dominant-colour palettes."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CliRunner
from PIL import Image

from sisyphus_db.media.synthetic import write_test_image
from sisyphus_db.temporal.hash_dedup import hamming_pairs
from sisyphus_db.temporal.hashing import hamming, phash_bits, whash_bits

_SCRATCH = Path(tempfile.mkdtemp(prefix="sisyphus-blobs-"))


def _blob(seed: int, size: tuple[int, int] = (192, 144)) -> np.ndarray:
    """A generated photo-like picture (smooth blobs), distinct per seed."""
    path = write_test_image(_SCRATCH / f"{seed}-{size[0]}.png", seed, size=size)
    return np.asarray(Image.open(path).convert("RGB"))


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_hashes_of_an_image_and_its_copies_are_close_and_others_far() -> None:
    original = _blob(1)
    copies = {
        "jpeg q30": _jpeg(original, 30),
        "half size": np.asarray(Image.fromarray(original).resize((96, 72), Image.BILINEAR)),
        "brighter": np.clip(original.astype(np.int16) + 12, 0, 255).astype(np.uint8),
    }
    for hash_bits in (phash_bits, whash_bits):
        reference = hash_bits(original)
        assert reference.shape == (64,) and reference.dtype == bool
        for name, copy in copies.items():
            assert hamming(reference, hash_bits(copy)) <= 8, (hash_bits.__name__, name)
        others = [hamming(reference, hash_bits(_blob(seed))) for seed in range(2, 8)]
        assert min(others) >= 14, (hash_bits.__name__, others)


def test_hamming_pairs_match_brute_force_and_include_the_radius() -> None:
    rng = np.random.default_rng(0)
    bits = rng.random((300, 64)) < 0.5
    bits[1] = bits[0]
    bits[2] = bits[0]
    bits[2, :3] = ~bits[2, :3]  # exactly 3 bits from frame 0
    ids = np.arange(300, dtype=np.int64) * 10
    a, b = hamming_pairs(ids, bits, 3)
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    expected = {(int(ids[i]), int(ids[j])) for i in range(300) for j in range(i + 1, 300)
                if np.count_nonzero(bits[i] != bits[j]) <= 3}
    assert found == expected and (0, 20) in found and (0, 10) in found


@pytest.mark.slow
def test_hashes_build_search_and_dedup_by_phash(cli: CliRunner, fresh_database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    original = _blob(21, size=(256, 192))
    Image.fromarray(original).save(folder / "original.png")
    shutil.copy(folder / "original.png", folder / "byte-copy.png")  # an exact duplicate (same sha256)
    Image.fromarray(_jpeg(original, 35)).save(folder / "jpeg-copy.png")
    Image.fromarray(original).resize((128, 96), Image.BILINEAR).save(folder / "small-copy.png")
    for seed in range(30, 36):
        Image.fromarray(_blob(seed, size=(256, 192))).save(folder / f"other-{seed}.png")
    url = fresh_database_url
    assert cli("--database-url", url, "ingest", str(folder), "--json").exit_code == 0
    missing = cli("--database-url", url, "search", "--method", "phash", "--image", str(folder / "original.png"))
    assert missing.exit_code == 1 and missing.stderr == "Error: no frame has a hash yet: run `sisyphus hashes build`\n"
    built = cli("--database-url", url, "hashes", "build", "--json")
    assert built.exit_code == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["hashed"] == 10 and report["total"] == 10
    assert report["exact_duplicate_groups"] == 1 and report["exact_duplicate_frames"] == 2
    again = json.loads(cli("--database-url", url, "hashes", "build", "--json").stdout)
    assert again["hashed"] == 0
    found = cli("--database-url", url, "search", "--method", "phash", "--image", str(folder / "original.png"),
                "--k", "5", "--json")
    assert found.exit_code == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    top4 = {Path(r["path"]).name for r in results[:4]}
    assert top4 == {"original.png", "byte-copy.png", "jpeg-copy.png", "small-copy.png"}
    assert results[0]["distance"] == 0 and results[3]["distance"] <= 8 and results[4]["distance"] >= 14
    by_frame = cli("--database-url", url, "search", "--method", "phash", "--frame", str(results[2]["frame_id"]),
                   "--k", "4", "--json", "--no-save")
    assert {r["frame_id"] for r in json.loads(by_frame.stdout)["results"]} == {r["frame_id"] for r in results[:4]}
    dedup = cli("--database-url", url, "dedup", "--method", "phash", "--max-distance", "8", "--json")
    assert dedup.exit_code == 0, dedup.stderr
    grouped = json.loads(dedup.stdout)
    assert grouped["method"] == "phash" and grouped["groups"] == 1 and grouped["frames_in_groups"] == 4
    assert grouped["exact_duplicates"] == {"exact_duplicate_groups": 1, "exact_duplicate_frames": 2}
    wrong = cli("--database-url", url, "dedup", "--max-distance", "8")
    assert wrong.exit_code == 1
    assert wrong.stderr == "Error: --max-distance applies to --method phash (embedding uses --threshold)\n"
    too_far = cli("--database-url", url, "dedup", "--method", "phash", "--max-distance", "65")
    assert too_far.exit_code == 1 and "--max-distance is a number of differing bits in 0..64, got 65" in too_far.stderr
    gone = cli("--database-url", url, "search", "--method", "phash", "--frame", "999999")
    assert gone.exit_code == 1 and gone.stderr == "Error: frame 999999 does not exist\n"


# ---- colour palettes -----------------------------------------------------------------------------


def _lab_of(rgb: np.ndarray) -> np.ndarray:
    from sisyphus_db.embed.colour import rgb_to_lab

    return rgb_to_lab(rgb.astype(np.float64) / 255.0)


def test_palette_of_a_solid_frame_is_one_colour() -> None:
    from sisyphus_db.embed.colour import DIM, dominant_colours, palette_vector

    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[..., 0] = 220
    colours, shares = dominant_colours(_lab_of(red))
    assert colours.shape == (1, 3) and shares.tolist() == [1.0]
    np.testing.assert_allclose(colours[0], _lab_of(red)[0, 0], atol=0.5)
    vector = palette_vector(colours, shares)
    assert vector.shape == (DIM,) and np.count_nonzero(vector[4:]) == 0 and vector[3] == 1.0


def test_palette_of_a_two_colour_frame_is_sorted_by_share() -> None:
    from sisyphus_db.embed.colour import dominant_colours

    frame = np.zeros((32, 32, 3), dtype=np.uint8)
    frame[:, :24] = (30, 60, 200)   # blue: 75 %
    frame[:, 24:] = (240, 240, 240)  # white: 25 %
    colours, shares = dominant_colours(_lab_of(frame))
    np.testing.assert_allclose(shares, [0.75, 0.25])
    np.testing.assert_allclose(colours[0], _lab_of(frame)[0, 0], atol=0.5)
    np.testing.assert_allclose(colours[1], _lab_of(frame)[0, 31], atol=0.5)


def test_colour_model_ranks_similar_colours_first() -> None:
    from sisyphus_db.embed import load_embedder

    embedder = load_embedder("colour", device="cpu")
    assert embedder.spec.dim == 20 and embedder.spec.pooling == "none"

    def frame(top: tuple[int, int, int], bottom: tuple[int, int, int], split: int) -> np.ndarray:
        image = np.zeros((120, 160, 3), dtype=np.uint8)
        image[:split], image[split:] = top, bottom
        return image

    night = frame((10, 10, 30), (40, 40, 40), 80)
    night_copy = frame((12, 12, 36), (45, 42, 40), 70)
    snow = frame((235, 240, 250), (200, 205, 215), 60)
    dusk = frame((250, 140, 60), (90, 40, 80), 60)
    vectors = embedder.embed_images([night, night_copy, snow, dusk])
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.97
    assert similarity[0, 1] > similarity[0, 2] + 0.1 and similarity[0, 1] > similarity[0, 3] + 0.1


@pytest.mark.slow
def test_colour_build_and_search_by_colour(cli: CliRunner, fresh_database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    looks = {"night": (15, 15, 35), "snow": (235, 238, 245), "dusk": (240, 130, 60)}
    for name, colour in looks.items():
        for variant in range(3):
            image = np.zeros((96, 128, 3), dtype=np.uint8)
            image[:] = np.clip(np.array(colour) + 6 * variant, 0, 255)
            image[60:, :] = np.clip(np.array(colour) * 0.6, 0, 255)  # a darker road
            Image.fromarray(image).save(folder / f"{name}-{variant}.png")
    url = fresh_database_url
    assert cli("--database-url", url, "ingest", str(folder), "--json").exit_code == 0
    built = cli("--database-url", url, "colour", "build", "--json")
    assert built.exit_code == 0, built.stderr
    assert json.loads(built.stdout)["added"] == 9
    assert json.loads(cli("--database-url", url, "colour", "build", "--json").stdout)["added"] == 0
    found = cli("--database-url", url, "search", "--model", "colour", "--image", str(folder / "snow-0.png"),
                "--backend", "exact", "--k", "3", "--json", "--no-save")
    assert found.exit_code == 0, found.stderr
    names = sorted(Path(r["path"]).name for r in json.loads(found.stdout)["results"])
    assert names == ["snow-0.png", "snow-1.png", "snow-2.png"]
    wrong = cli("--database-url", url, "ingest", str(folder), "--model", "colour@max")
    assert wrong.exit_code == 1 and "the colour model has no pooling" in wrong.stderr


def test_batched_kmeans_palettes_match_the_faiss_ones() -> None:
    """The device path (one batched Lloyd's k-means for many frames) gives the CPU path's palettes;
    it runs here on the CPU with the same torch code the GPU runs."""
    import torch

    from sisyphus_db.embed.colour import batched_kmeans, dominant_colours, merge_clusters, palette_vector

    solid = np.zeros((32, 32, 3), dtype=np.uint8)
    solid[..., 1] = 180
    two = np.zeros((32, 32, 3), dtype=np.uint8)
    two[:, :24] = (30, 60, 200)
    two[:, 24:] = (240, 240, 240)
    three = np.zeros((32, 32, 3), dtype=np.uint8)
    three[:16] = (250, 200, 20)
    three[16:28] = (20, 20, 20)
    three[28:] = (200, 30, 30)
    frames = [solid, two, three]
    lab = torch.from_numpy(np.stack([_lab_of(frame).reshape(-1, 3) for frame in frames]))
    centroids, counts = batched_kmeans(lab)
    assert centroids.shape == (3, 5, 3) and counts.sum(dim=1).tolist() == [1024, 1024, 1024]
    for frame, c, n in zip(frames, centroids, counts, strict=True):
        batched = merge_clusters(c.numpy(), n.numpy().astype(np.float64))
        reference = dominant_colours(_lab_of(frame))
        np.testing.assert_allclose(batched[1], reference[1], atol=1e-6)
        np.testing.assert_allclose(batched[0], reference[0], atol=0.5)
        np.testing.assert_allclose(palette_vector(*batched), palette_vector(*reference), atol=1e-2)


@pytest.mark.gpu
def test_colour_palettes_on_the_gpu_match_the_cpu() -> None:
    import torch

    from sisyphus_db.embed.colour import ColourPalette

    images = torch.rand(4, 3, 64, 64)
    images[:2] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    module = ColourPalette()
    on_gpu = module(images.cuda()).cpu()
    on_cpu = module(images)
    cosine = torch.nn.functional.cosine_similarity(on_gpu, on_cpu)
    assert float(cosine.min()) > 0.95
