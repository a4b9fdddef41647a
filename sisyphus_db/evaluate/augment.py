"""The Active Indexing image transformations, for copy-detection evaluation.

Each transformation takes a PIL RGB image and a `random.Random` and returns a new RGB
image. Most are fixed (the paper evaluates each at one strength); the generator only
feeds the ones with a random part (text content and position, the random
combination), so the same seed always gives the same picture. Only Pillow is used, no
torchvision, and no font file is needed.
"""

from __future__ import annotations

import io
import logging
import string
from collections.abc import Callable
from random import Random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from sisyphus_db.errors import InputError

logger = logging.getLogger(__name__)

Augmentation = Callable[[Image.Image, Random], Image.Image]

__all__ = ["AUGMENTATIONS", "Augmentation", "apply", "apply_all", "random_combination"]


def rotate_25(image: Image.Image, rng: Random) -> Image.Image:
    """Rotate 25 degrees counter-clockwise about the centre; same size, black corners."""
    return image.rotate(25, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))


def rotate_90(image: Image.Image, rng: Random) -> Image.Image:
    """Rotate 90 degrees counter-clockwise; width and height swap, no pixel is lost."""
    return image.transpose(Image.Transpose.ROTATE_90)


def center_crop_half(image: Image.Image, rng: Random) -> Image.Image:
    """Keep the central half of each side (a quarter of the area)."""
    width, height = image.size
    new_w, new_h = max(1, round(width * 0.5)), max(1, round(height * 0.5))
    left, top = (width - new_w) // 2, (height - new_h) // 2
    return image.crop((left, top, left + new_w, top + new_h))


def resize_half(image: Image.Image, rng: Random) -> Image.Image:
    """Scale each side by 0.5."""
    width, height = image.size
    size = (max(1, round(width * 0.5)), max(1, round(height * 0.5)))
    return image.resize(size, Image.Resampling.BILINEAR)


def blur(image: Image.Image, rng: Random) -> Image.Image:
    """Gaussian blur with a radius of 1% of the longer side (at least 1 px).

    Scaling with the image keeps the strength comparable across resolutions.
    """
    radius = max(1.0, 0.01 * max(image.size))
    return image.filter(ImageFilter.GaussianBlur(radius))


def jpeg_50(image: Image.Image, rng: Random) -> Image.Image:
    """Re-encode as JPEG at quality 50."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=50)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def hue(image: Image.Image, rng: Random) -> Image.Image:
    """Shift the hue by a quarter turn (torchvision's adjust_hue(0.25) strength)."""
    hsv = np.asarray(image.convert("HSV")).copy()
    # PIL stores hue on 0..255, so a quarter turn is 64 and wraps around.
    hsv[..., 0] = (hsv[..., 0].astype(np.uint16) + 64).astype(np.uint8)
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


def _enhance(
    factor: float, enhancer: type[ImageEnhance.Contrast] | type[ImageEnhance.Brightness]
) -> Augmentation:
    def transform(image: Image.Image, rng: Random) -> Image.Image:
        return enhancer(image).enhance(factor)

    transform.__doc__ = f"{enhancer.__name__} times {factor}."
    return transform


contrast_half = _enhance(0.5, ImageEnhance.Contrast)
contrast_double = _enhance(2.0, ImageEnhance.Contrast)
brightness_half = _enhance(0.5, ImageEnhance.Brightness)
brightness_double = _enhance(2.0, ImageEnhance.Brightness)


def hflip(image: Image.Image, rng: Random) -> Image.Image:
    """Mirror left to right."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


_TEXT_ALPHABET = string.ascii_letters + string.digits


def overlay_text(image: Image.Image, rng: Random) -> Image.Image:
    """Draw a random word in a random colour at a random spot in the lower part.

    The font is Pillow's built-in default at a size of a tenth of the image height,
    so no font file is needed and the text scales with the picture.
    """
    out = image.copy()
    width, height = out.size
    text = "".join(rng.choice(_TEXT_ALPHABET) for _ in range(rng.randint(5, 9)))
    size = max(8, height // 10)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(out)
    left, top, right, bottom = (int(v) for v in draw.textbbox((0, 0), text, font=font))
    x_room = max(0, width - (right - left))
    x = rng.randint(0, x_room) - left
    # The lower half, as in the paper's captions/watermarks, and never off the bottom.
    y_low, y_high = height // 2, max(height // 2, height - (bottom - top))
    y = rng.randint(y_low, y_high) - top
    colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
    draw.text((x, y), text, font=font, fill=colour)
    return out


#: The single transformations, in the order of the Active Indexing table.
_SINGLE: dict[str, Augmentation] = {
    "rotate_25": rotate_25,
    "rotate_90": rotate_90,
    "center_crop_0.5": center_crop_half,
    "resize_0.5": resize_half,
    "blur": blur,
    "jpeg_50": jpeg_50,
    "hue": hue,
    "contrast_0.5": contrast_half,
    "contrast_2": contrast_double,
    "brightness_0.5": brightness_half,
    "brightness_2": brightness_double,
    "hflip": hflip,
    "overlay_text": overlay_text,
}


def combination_names(rng: Random) -> list[str]:
    """Draw the 2 or 3 distinct single transformations `random_combination` chains."""
    return rng.sample(sorted(_SINGLE), rng.randint(2, 3))


def random_combination(image: Image.Image, rng: Random) -> Image.Image:
    """Chain 2 or 3 distinct single transformations drawn from `rng`."""
    names = combination_names(rng)
    logger.debug("random combination: %s", " -> ".join(names))
    for name in names:
        image = _SINGLE[name](image, rng)
    return image


AUGMENTATIONS: dict[str, Augmentation] = {**_SINGLE, "random_combination": random_combination}


def apply(name: str, image: Image.Image, seed: int = 0) -> Image.Image:
    """Apply the transformation `name` with a generator seeded by `seed`.

    The input is converted to RGB first (the transformations assume three channels)
    and is never modified in place.
    """
    try:
        transform = AUGMENTATIONS[name]
    except KeyError:
        raise InputError(
            f"unknown augmentation {name!r}; choose from: {', '.join(AUGMENTATIONS)}"
        ) from None
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return transform(rgb, Random(seed))


def apply_all(image: Image.Image, seed: int = 0) -> dict[str, Image.Image]:
    """Every transformation of `image`, keyed by name; each gets its own seeded generator."""
    return {name: apply(name, image, seed) for name in AUGMENTATIONS}
