"""The multi-scale region grid (R-MAC style) over a feature map, and its boxes in pixels.

Scale l (1..L) tiles the map with l x l square-ish regions whose side is 2/(l+1) of the
map's side, spread evenly from edge to edge: scale 1 is the whole map, scale 2 four
regions overlapping by about a half, scale 3 nine regions, and so on (Tolias et al.,
"Particular object retrieval with integral max-pooling of CNN activations", with the
region count per axis fixed so that every scale covers the whole map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sisyphus_db.errors import InputError

DEFAULT_SCALES = 4  # 1 + 4 + 9 + 16 = 30 regions; the 4th scale (2/5 of the side) helps objects of 10-20 %
MAX_SCALES = 6


@dataclass(frozen=True)
class Region:
    """A region in feature-map cells: rows [r0, r1) and columns [c0, c1), at a scale."""

    scale: int
    r0: int
    c0: int
    r1: int
    c1: int


def _starts(length: int, side: int, count: int) -> list[int]:
    if count == 1:
        return [(length - side) // 2]
    return sorted({round(i * (length - side) / (count - 1)) for i in range(count)})


def region_grid(map_h: int, map_w: int, scales: int = DEFAULT_SCALES) -> list[Region]:
    """Regions of scales 1..`scales` over a map_h x map_w feature map (duplicates dropped)."""
    if map_h < 1 or map_w < 1:
        raise InputError(f"a feature map needs at least one cell, got {map_h} x {map_w}")
    if not 1 <= scales <= MAX_SCALES:
        raise InputError(f"scales must be between 1 and {MAX_SCALES}, got {scales}")
    regions: list[Region] = []
    seen: set[tuple[int, int, int, int]] = set()
    for scale in range(1, scales + 1):
        side_h = max(1, min(map_h, math.ceil(2 * map_h / (scale + 1))))
        side_w = max(1, min(map_w, math.ceil(2 * map_w / (scale + 1))))
        for r0 in _starts(map_h, side_h, scale):
            for c0 in _starts(map_w, side_w, scale):
                key = (r0, c0, r0 + side_h, c0 + side_w)
                if key not in seen:
                    seen.add(key)
                    regions.append(Region(scale, *key))
    return regions


def cells_to_pixels(region: Region, map_h: int, map_w: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The region's box (x0, y0, x1, y1) in the pixels of a width x height frame.

    The model sees the frame stretched to a square, so cell edges map back proportionally
    on each axis; the box is clipped to the frame and never empty.
    """
    x0 = math.floor(region.c0 * width / map_w)
    x1 = math.ceil(region.c1 * width / map_w)
    y0 = math.floor(region.r0 * height / map_h)
    y1 = math.ceil(region.r1 * height / map_h)
    x0, y0 = max(0, min(x0, width - 1)), max(0, min(y0, height - 1))
    return x0, y0, max(x0 + 1, min(x1, width)), max(y0 + 1, min(y1, height))


def pixels_to_cells(box: tuple[int, int, int, int], map_h: int, map_w: int, width: int,
                    height: int) -> tuple[int, int, int, int]:
    """The cells (r0, c0, r1, c1) a pixel box touches, at least one cell."""
    x0, y0, x1, y1 = box
    c0 = min(map_w - 1, max(0, math.floor(x0 * map_w / width)))
    r0 = min(map_h - 1, max(0, math.floor(y0 * map_h / height)))
    c1 = max(c0 + 1, min(map_w, math.ceil(x1 * map_w / width)))
    r1 = max(r0 + 1, min(map_h, math.ceil(y1 * map_h / height)))
    return r0, c0, r1, c1


def parse_box(text: str) -> tuple[int, int, int, int]:
    """`x0,y0,x1,y1` in pixels."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise InputError(f"--box must be x0,y0,x1,y1 in whole pixels, got {text!r}") from None
    if len(values) != 4:
        raise InputError(f"--box must be x0,y0,x1,y1 in whole pixels, got {text!r}")
    return values[0], values[1], values[2], values[3]


def check_box(box: tuple[int, int, int, int], width: int, height: int) -> None:
    """Refuse a box of zero area or one that leaves the width x height image."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"--box {x0},{y0},{x1},{y1} has zero area: x1 must exceed x0 and y1 must exceed y0")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise InputError(f"--box {x0},{y0},{x1},{y1} is outside the {width}x{height} query image")
