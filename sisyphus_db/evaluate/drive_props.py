"""Camera projection and painters for the objects of the synthetic drive.

`drive_scene` decides what is where; this module only knows how a tree, a car, a
cone, a barrier or a sign looks from the driver's seat. Every painter takes road
coordinates (X metres right of the centre line, Z metres ahead) and draws with the
camera's projection, so objects shrink toward the horizon and follow the road's bend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

RGB = tuple[int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class Camera:
    """A pinhole camera `height` metres above a road that bends by 0.5 * bend * Z^2.

    The parabola is what a constant-curvature road looks like close up, and it keeps
    projection a one-liner.
    """

    width: int
    focal: float
    horizon: float
    height: float = 1.4

    def project(self, x: float, z: float, y: float, bend: float) -> Point:
        """Screen position of road point (x, y above the road, z ahead)."""
        screen_x = self.width / 2 + self.focal * (x + 0.5 * bend * z * z) / z
        screen_y = self.horizon + self.focal * (self.height - y) / z
        return screen_x, screen_y


@dataclass(frozen=True)
class Vehicle:
    """A vehicle seen from behind, moving along a lane on a piecewise-linear Z(t)."""

    lane_x: float
    times: tuple[float, ...]
    zs: tuple[float, ...]
    colour: RGB
    width: float
    height: float

    @property
    def is_truck(self) -> bool:
        return self.height > 3

    def z_at(self, t: float) -> float | None:
        """Distance ahead at time t, or None outside the vehicle's time on the road."""
        if t < self.times[0] or t > self.times[-1]:
            return None
        return float(np.interp(t, self.times, self.zs))


@dataclass(frozen=True)
class Tree:
    s: float  # distance along the route, metres
    x: float
    height: float
    crown: RGB


def shade(colour: RGB, factor: float) -> RGB:
    """`colour` darkened (factor < 1) or lightened (factor > 1), clipped to 255."""
    r, g, b = (min(255, int(channel * factor)) for channel in colour)
    return r, g, b


def paint_tree(
    draw: ImageDraw.ImageDraw, camera: Camera, tree: Tree, z: float, bend: float
) -> None:
    bx, by = camera.project(tree.x, z, 0.0, bend)
    _, ty = camera.project(tree.x, z, tree.height, bend)
    scale = camera.focal / z
    trunk = max(1.0, 0.25 * scale)
    draw.rectangle((bx - trunk, (by + ty) / 2, bx + trunk, by), fill=(85, 60, 40))
    radius = 0.3 * tree.height * scale
    cy = ty + radius
    draw.ellipse((bx - radius, ty, bx + radius, cy + radius), fill=tree.crown)
    highlight = shade(tree.crown, 1.25)
    draw.ellipse((bx - 0.6 * radius, ty + 0.15 * radius, bx + 0.2 * radius, cy), fill=highlight)


def paint_post(draw: ImageDraw.ImageDraw, camera: Camera, x: float, z: float, bend: float) -> None:
    bx, by = camera.project(x, z, 0.0, bend)
    _, ty = camera.project(x, z, 1.0, bend)
    half = max(0.6, 0.06 * camera.focal / z)
    draw.rectangle((bx - half, ty, bx + half, by), fill=(240, 240, 240))
    draw.rectangle(
        (bx - half, ty + 0.15 * (by - ty), bx + half, ty + 0.3 * (by - ty)), fill=(20, 20, 20)
    )


def paint_car(
    draw: ImageDraw.ImageDraw, camera: Camera, car: Vehicle, z: float, bend: float
) -> None:
    half = car.width / 2
    left, bottom = camera.project(car.lane_x - half, z, 0.0, bend)
    right, top = camera.project(car.lane_x + half, z, car.height, bend)
    height = bottom - top
    width = right - left
    # Shadow on the road, then wheels, body, rear window, lights, bumper.
    draw.ellipse(
        (left - 0.05 * width, bottom - 0.08 * height, right + 0.05 * width, bottom + 0.06 * height),
        fill=(45, 45, 48),
    )
    draw.rectangle(
        (left + 0.05 * width, bottom - 0.22 * height, left + 0.22 * width, bottom),
        fill=(18, 18, 18),
    )
    draw.rectangle(
        (right - 0.22 * width, bottom - 0.22 * height, right - 0.05 * width, bottom),
        fill=(18, 18, 18),
    )
    body_top = top if car.is_truck else top + 0.02 * height
    draw.rectangle((left, body_top, right, bottom - 0.15 * height), fill=car.colour)
    if car.is_truck:  # a truck's box: a darker frame line instead of a window
        draw.rectangle(
            (left + 0.06 * width, top + 0.06 * height, right - 0.06 * width, bottom - 0.3 * height),
            outline=shade(car.colour, 0.7),
            width=max(1, int(0.02 * width)),
        )
    else:
        draw.rectangle(
            (left + 0.12 * width, top + 0.08 * height, right - 0.12 * width, top + 0.42 * height),
            fill=(40, 52, 66),
        )
    lamp_top, lamp_bottom = bottom - 0.55 * height, bottom - 0.42 * height
    draw.rectangle(
        (left + 0.03 * width, lamp_top, left + 0.2 * width, lamp_bottom), fill=(200, 20, 20)
    )
    draw.rectangle(
        (right - 0.2 * width, lamp_top, right - 0.03 * width, lamp_bottom), fill=(200, 20, 20)
    )
    draw.rectangle(
        (left, bottom - 0.3 * height, right, bottom - 0.18 * height), fill=shade(car.colour, 0.6)
    )


def paint_cone(draw: ImageDraw.ImageDraw, camera: Camera, x: float, z: float, bend: float) -> None:
    bx, by = camera.project(x, z, 0.0, bend)
    _, ty = camera.project(x, z, 0.75, bend)
    half = 0.2 * camera.focal / z
    height = by - ty
    draw.rectangle((bx - 1.3 * half, by - 0.08 * height, bx + 1.3 * half, by), fill=(25, 25, 25))
    draw.polygon(
        [(bx - half, by - 0.06 * height), (bx + half, by - 0.06 * height), (bx, ty)],
        fill=(255, 110, 10),
    )
    # The white reflective band sits between 45% and 65% of the cone's height.
    w_low, w_high = half * 0.55, half * 0.35
    y_low, y_high = by - 0.45 * height, by - 0.65 * height
    draw.polygon(
        [(bx - w_low, y_low), (bx + w_low, y_low), (bx + w_high, y_high), (bx - w_high, y_high)],
        fill=(245, 245, 245),
    )


def paint_barrier(
    draw: ImageDraw.ImageDraw, camera: Camera, x0: float, x1: float, z: float, bend: float
) -> None:
    left_base = camera.project(x0 + 0.15, z, 0.0, bend)
    right_base = camera.project(x1 - 0.15, z, 0.0, bend)
    left, board_bottom = camera.project(x0, z, 0.55, bend)
    right, board_top = camera.project(x1, z, 1.05, bend)
    leg = max(1.0, 0.05 * camera.focal / z)
    for bx, by in (left_base, right_base):
        draw.rectangle((bx - leg, board_bottom, bx + leg, by), fill=(230, 230, 230))
    # Diagonal red and white stripes, as on real lane-closure boards.
    n = 8
    step = (right - left) / n
    slant = 0.5 * step
    for i in range(n):
        colour = (210, 20, 25) if i % 2 == 0 else (250, 250, 250)
        xa = left + i * step
        draw.polygon(
            [
                (xa, board_bottom),
                (xa + step, board_bottom),
                (xa + step + slant, board_top),
                (xa + slant, board_top),
            ],
            fill=colour,
        )
    lamp = max(1.0, 0.12 * camera.focal / z)
    draw.ellipse((right - 2 * lamp, board_top - 2 * lamp, right, board_top), fill=(255, 200, 30))


def paint_warning_sign(
    draw: ImageDraw.ImageDraw, camera: Camera, x: float, z: float, bend: float
) -> None:
    bx, by = camera.project(x, z, 0.0, bend)
    _, pole_top = camera.project(x, z, 1.5, bend)
    _, apex = camera.project(x, z, 2.5, bend)
    scale = camera.focal / z
    draw.rectangle(
        (bx - max(1.0, 0.04 * scale), pole_top, bx + max(1.0, 0.04 * scale), by),
        fill=(140, 140, 140),
    )
    half = 0.55 * scale
    draw.polygon([(bx - half, pole_top), (bx + half, pole_top), (bx, apex)], fill=(215, 25, 30))
    inner = 0.62
    cy = pole_top - (pole_top - apex) * 0.33
    draw.polygon(
        [
            (bx - half * inner, pole_top - 0.08 * scale * 0.9),
            (bx + half * inner, pole_top - 0.08 * scale * 0.9),
            (bx, pole_top - (pole_top - apex) * 0.8),
        ],
        fill=(250, 250, 245),
    )
    # A worker with a shovel, reduced to a head and a slanted body.
    r = 0.06 * scale
    draw.ellipse((bx - r, cy - 3.2 * r, bx + r, cy - 1.2 * r), fill=(15, 15, 15))
    draw.line(
        [(bx, cy - 1.2 * r), (bx - 1.5 * r, cy + 1.2 * r)], fill=(15, 15, 15), width=max(1, int(r))
    )
    draw.line(
        [(bx + 0.5 * r, cy - 0.5 * r), (bx + 2.5 * r, cy + 1.2 * r)],
        fill=(15, 15, 15),
        width=max(1, int(0.6 * r)),
    )


def paint_arrow_board(
    draw: ImageDraw.ImageDraw, camera: Camera, x: float, z: float, bend: float
) -> None:
    bx, by = camera.project(x, z, 0.0, bend)
    _, board_bottom = camera.project(x, z, 1.0, bend)
    _, board_top = camera.project(x, z, 2.1, bend)
    scale = camera.focal / z
    half = 0.65 * scale
    draw.rectangle(
        (bx - max(1.0, 0.04 * scale), board_bottom, bx + max(1.0, 0.04 * scale), by),
        fill=(140, 140, 140),
    )
    draw.rectangle(
        (bx - half, board_top, bx + half, board_bottom),
        fill=(255, 140, 0),
        outline=(250, 250, 250),
        width=max(1, int(0.05 * scale)),
    )
    # A black arrow pointing left: the lane moves over.
    mid = (board_top + board_bottom) / 2
    h = board_bottom - board_top
    draw.polygon(
        [
            (bx - 0.6 * half, mid),
            (bx - 0.1 * half, mid - 0.3 * h),
            (bx - 0.1 * half, mid - 0.1 * h),
            (bx + 0.6 * half, mid - 0.1 * h),
            (bx + 0.6 * half, mid + 0.1 * h),
            (bx - 0.1 * half, mid + 0.1 * h),
            (bx - 0.1 * half, mid + 0.3 * h),
        ],
        fill=(15, 15, 15),
    )
