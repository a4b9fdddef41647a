"""load_image(), encode_jpeg() and frame paths: good images, every broken kind, EXIF."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sisyphus_db.errors import InputError, MediaError
from sisyphus_db.media import synthetic
from sisyphus_db.media.images import encode_jpeg, frame_jpeg_path, load_image, parse_exif_datetime


def test_loads_png_exactly_with_file_sha256(tmp_path: Path) -> None:
    path = synthetic.write_test_image(tmp_path / "a.png", seed=1, size=(40, 30))
    loaded = load_image(path)
    assert loaded.rgb.shape == (30, 40, 3)
    assert loaded.rgb.dtype == np.uint8
    assert (loaded.width, loaded.height) == (40, 30)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert np.array_equal(loaded.rgb, np.asarray(Image.open(path).convert("RGB")))
    assert loaded.captured_at is None


def test_seeds_give_distinct_images(tmp_path: Path) -> None:
    a = load_image(synthetic.write_test_image(tmp_path / "a.png", seed=1)).rgb.astype(int)
    b = load_image(synthetic.write_test_image(tmp_path / "b.png", seed=2)).rgb.astype(int)
    again = load_image(synthetic.write_test_image(tmp_path / "c.png", seed=1)).rgb.astype(int)
    assert np.abs(a - b).mean() > 20
    assert np.array_equal(a, again)


def test_empty_file(tmp_path: Path) -> None:
    path = synthetic.write_empty_file(tmp_path / "empty.jpg")
    with pytest.raises(MediaError) as caught:
        load_image(path)
    assert str(caught.value) == f"{path}: empty file (0 bytes)"
    assert isinstance(caught.value, InputError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="^.*gone.jpg: no such file$"):
        load_image(tmp_path / "gone.jpg")


def test_text_named_jpg(tmp_path: Path) -> None:
    path = synthetic.write_text_as_image(tmp_path / "notes.jpg")
    with pytest.raises(MediaError) as caught:
        load_image(path)
    assert str(caught.value) == f"{path}: not an image (unrecognised format)"


@pytest.mark.parametrize("keep_fraction", [0.1, 0.6, 0.98])
def test_truncated_jpeg_fails_instead_of_padding(tmp_path: Path, keep_fraction: float) -> None:
    path = synthetic.write_truncated_jpeg(tmp_path / "cut.jpg", keep_fraction=keep_fraction)
    with pytest.raises(MediaError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: truncated or corrupt image")
    assert "\n" not in message


def test_decompression_bomb_over_our_limit_is_refused_from_the_header(tmp_path: Path) -> None:
    # 12000^2 = 144 M pixels: above our 100 M default, below Pillow's own hard limit.
    path = synthetic.write_decompression_bomb_png(tmp_path / "bomb.png", side=12_000)
    assert path.stat().st_size < 200_000
    with pytest.raises(MediaError) as caught:
        load_image(path)
    assert str(caught.value) == (f"{path}: image too large (12000x12000 = 144000000 pixels, limit 100000000)")


def test_decompression_bomb_over_pillows_limit(tmp_path: Path) -> None:
    path = synthetic.write_decompression_bomb_png(tmp_path / "bomb.png")  # 20000^2
    with pytest.raises(MediaError) as caught:
        load_image(path, max_pixels=10**12)
    assert str(caught.value) == f"{path}: image too large (decompression bomb guard)"


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = synthetic.write_test_image(tmp_path / "a.png", seed=3, size=(50, 40))
    assert load_image(path, max_pixels=2000).width == 50
    with pytest.raises(MediaError, match=r"image too large \(50x40 = 2000 pixels, limit 1999\)$"):
        load_image(path, max_pixels=1999)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    path = synthetic.write_test_image(tmp_path / "a.png", seed=1)
    path.chmod(0)
    try:
        with pytest.raises(MediaError) as caught:
            load_image(path)
    finally:
        path.chmod(0o644)
    assert str(caught.value) == f"{path}: permission denied"


def test_permission_error_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = synthetic.write_test_image(tmp_path / "a.png", seed=1)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(MediaError) as caught:
        load_image(path)
    assert str(caught.value) == f"{path}: permission denied"


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "1"])
def test_other_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    path = synthetic.write_test_image(
        tmp_path / f"m.{fmt.lower()}", seed=4, size=(32, 24), fmt=fmt, mode=mode
    )
    reference = load_image(synthetic.write_test_image(tmp_path / "ref.png", seed=4, size=(32, 24))).rgb
    loaded = load_image(path)
    assert loaded.rgb.shape == (24, 32, 3) and loaded.rgb.dtype == np.uint8

    # Same picture after the round trip through the other mode (loosely: modes lose colour).
    # Compare 4x4 block means of luma, so the dithering of mode "1" averages out.
    def blocks(rgb: np.ndarray) -> np.ndarray:
        luma = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
        return luma.reshape(6, 4, 8, 4).mean(axis=(1, 3))

    tolerance = 30 if mode == "1" else 3
    assert np.abs(blocks(loaded.rgb) - blocks(reference)).mean() < tolerance
    if mode == "I;16":
        # Scaled down from 16 bits, not clipped to white.
        assert loaded.rgb.min() < 200


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    rgba[0, 0] = (255, 0, 0, 255)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    rgb = load_image(path).rgb
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[3, 3]) == (255, 255, 255)


def test_exif_capture_time_is_read(tmp_path: Path) -> None:
    when = datetime(2021, 6, 5, 14, 30, 15)
    path = synthetic.write_test_image(tmp_path / "cam.jpg", seed=5, captured_at=when)
    assert load_image(path).captured_at == when


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = synthetic.write_test_image(tmp_path / "rot.jpg", seed=6, size=(60, 20), orientation=6)
    loaded = load_image(path)
    # Orientation 6 means "rotate 90° clockwise to display": the upright image is portrait.
    assert (loaded.width, loaded.height) == (20, 60)
    assert loaded.rgb.shape == (60, 20, 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020:01:02 03:04:05", datetime(2020, 1, 2, 3, 4, 5)),
        (b"2020:01:02 03:04:05\x00", datetime(2020, 1, 2, 3, 4, 5)),
        ("0000:00:00 00:00:00", None),
        ("    :  :     :  :  ", None),
        (None, None),
    ],
)
def test_parse_exif_datetime(value: object, expected: datetime | None) -> None:
    assert parse_exif_datetime(value) == expected


def test_encode_jpeg_is_atomic_and_returns_sha(tmp_path: Path) -> None:
    rgb = load_image(synthetic.write_test_image(tmp_path / "a.png", seed=7, size=(64, 48))).rgb
    target = tmp_path / "frames" / "3" / "0000000012.jpg"
    digest = encode_jpeg(rgb, target, quality=85)
    assert digest == hashlib.sha256(target.read_bytes()).hexdigest()
    assert [p.name for p in target.parent.iterdir()] == ["0000000012.jpg"]  # no temp file left
    back = load_image(target)
    assert back.rgb.shape == rgb.shape
    assert np.abs(back.rgb.astype(int) - rgb.astype(int)).mean() < 6
    assert back.sha256 == digest


def test_encode_jpeg_rejects_wrong_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected an H x W x 3 uint8 array, got float64 \(4, 4, 3\)"):
        encode_jpeg(np.zeros((4, 4, 3)), tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()


def test_frame_jpeg_path_format(tmp_path: Path) -> None:
    assert frame_jpeg_path(tmp_path, 42, 7) == tmp_path / "42" / "0000000007.jpg"
    assert frame_jpeg_path(Path("/data/frames"), 1, 1234567890) == Path("/data/frames/1/1234567890.jpg")
