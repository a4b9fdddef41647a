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
from PIL import Image

from conftest import CliRunner
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
