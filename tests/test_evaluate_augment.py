"""Each Active Indexing transformation changes the image the way its name says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sisyphus_db.errors import InputError
from sisyphus_db.evaluate.augment import AUGMENTATIONS, apply, apply_all, combination_names

EXPECTED_NAMES = [
    "rotate_25",
    "rotate_90",
    "center_crop_0.5",
    "resize_0.5",
    "blur",
    "jpeg_50",
    "hue",
    "contrast_0.5",
    "contrast_2",
    "brightness_0.5",
    "brightness_2",
    "hflip",
    "overlay_text",
    "random_combination",
]


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A 200x120 smooth gradient with a few shapes, so every transform has work to do."""
    ys, xs = np.mgrid[0:120, 0:200]
    pixels = np.stack([xs * 255 / 199, ys * 255 / 119, 128 + 0 * xs], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 70, 60), fill=(240, 30, 30))
    draw.ellipse((120, 50, 180, 110), fill=(20, 20, 200))
    return image


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int32)


def test_registry_has_the_paper_list() -> None:
    assert list(AUGMENTATIONS) == EXPECTED_NAMES


def test_sizes_after_geometric_transforms(picture: Image.Image) -> None:
    assert apply("rotate_90", picture).size == (120, 200)
    assert apply("center_crop_0.5", picture).size == (100, 60)
    assert apply("resize_0.5", picture).size == (100, 60)
    assert apply("rotate_25", picture).size == (200, 120)


def test_rotate_90_and_crop_keep_pixels(picture: Image.Image) -> None:
    pixels = _array(picture)
    assert np.array_equal(_array(apply("rotate_90", picture)), np.rot90(pixels))
    assert np.array_equal(_array(apply("center_crop_0.5", picture)), pixels[30:90, 50:150])


def test_rotate_25_fills_corners_black(picture: Image.Image) -> None:
    rotated = _array(apply("rotate_25", picture))
    assert rotated[0, 0].tolist() == [0, 0, 0]
    assert rotated[-1, -1].tolist() == [0, 0, 0]


def test_hflip_mirrors_pixels(picture: Image.Image) -> None:
    assert np.array_equal(_array(apply("hflip", picture)), _array(picture)[:, ::-1])


def test_brightness_and_contrast(picture: Image.Image) -> None:
    mean = _array(picture).mean()
    assert _array(apply("brightness_0.5", picture)).mean() == pytest.approx(mean / 2, rel=0.02)
    assert _array(apply("brightness_2", picture)).mean() > 1.5 * mean
    std = _array(picture).std()
    assert _array(apply("contrast_0.5", picture)).std() < 0.6 * std
    assert _array(apply("contrast_2", picture)).std() > 1.3 * std


def test_blur_smooths_edges(picture: Image.Image) -> None:
    def edge_energy(image: Image.Image) -> float:
        return float((np.diff(_array(image), axis=1) ** 2).mean())

    assert edge_energy(apply("blur", picture)) < 0.5 * edge_energy(picture)


def test_jpeg_differs_but_stays_close(picture: Image.Image) -> None:
    compressed = _array(apply("jpeg_50", picture))
    difference = np.abs(compressed - _array(picture))
    assert difference.max() > 0
    assert difference.mean() < 6


def test_hue_turns_red_to_yellow_green() -> None:
    red = Image.new("RGB", (8, 8), (200, 30, 30))
    r, g, b = _array(apply("hue", red))[0, 0]
    assert g > r > b  # a quarter turn from red lands between yellow and green


def test_overlay_text_changes_only_a_region_of_the_lower_half(picture: Image.Image) -> None:
    changed = np.any(_array(apply("overlay_text", picture, 3)) != _array(picture), axis=-1)
    rows, _cols = np.nonzero(changed)
    assert changed.sum() > 20
    assert rows.min() >= 60  # the text goes in the lower half
    assert changed.mean() < 0.2  # and covers only a small part of the picture


def test_overlay_text_depends_on_the_seed(picture: Image.Image) -> None:
    first = _array(apply("overlay_text", picture, 1))
    assert np.array_equal(first, _array(apply("overlay_text", picture, 1)))
    assert not np.array_equal(first, _array(apply("overlay_text", picture, 2)))


def test_every_transform_is_deterministic_and_leaves_the_input_alone(picture: Image.Image) -> None:
    before = _array(picture).copy()
    first = apply_all(picture, seed=7)
    second = apply_all(picture, seed=7)
    assert list(first) == EXPECTED_NAMES
    for name in EXPECTED_NAMES:
        assert first[name].mode == "RGB", name
        assert np.array_equal(_array(first[name]), _array(second[name])), name
    assert np.array_equal(_array(picture), before)


def test_random_combination_chains_two_or_three(picture: Image.Image) -> None:
    from random import Random

    for seed in range(20):
        names = combination_names(Random(seed))
        assert 2 <= len(names) <= 3
        assert len(set(names)) == len(names)
        assert "random_combination" not in names
    combined = apply("random_combination", picture, 5)
    assert combined.tobytes() != picture.tobytes()


def test_non_rgb_input_is_converted(picture: Image.Image) -> None:
    assert apply("hflip", picture.convert("L")).mode == "RGB"


def test_unknown_name_is_an_input_error(picture: Image.Image) -> None:
    with pytest.raises(
        InputError, match=r"^unknown augmentation 'sepia'; choose from: rotate_25, "
    ):
        apply("sepia", picture)
