"""Render frames of a synthetic drive: a road in perspective, traffic, and road works.

The scene lives in road coordinates: X is metres to the right of the road's centre
line, Z metres ahead of the camera, Y metres above the road. A pinhole camera 1.4 m
above the road projects them; the road bends by offsetting X with 0.5 * c * Z^2 (a
parabola is what a constant-curvature road looks like close up). Everything is drawn
with Pillow at twice the output size and box-filtered down, which anti-aliases the
polygons for almost nothing.

Normal frames differ through traffic, trees, bends, drifting clouds and slowly
changing light; blockage frames add orange/white cones, red/white striped barriers
and road-works signs that grow as the car approaches. A blockage is drawn only inside
its interval, so "visible in the frame" and "inside a truth interval" are the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from random import Random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sisyphus_db.evaluate import drive_props as props
from sisyphus_db.evaluate.drive_props import RGB, Camera, Point, Tree, Vehicle

logger = logging.getLogger(__name__)

_SUPERSAMPLE = 2
_CAMERA_HEIGHT = 1.4
_NEAR_Z = 1.5  # nothing closer than this is drawn: it would be behind the image plane
_FAR_Z = 220.0
_LANE_WIDTH = 3.5
_ROAD_HALF = 5.4
_DASH_LENGTH, _DASH_PERIOD = 3.0, 12.0
_CRUISE_SPEED = 22.0  # m/s, about 80 km/h

# Blockage layout, in metres relative to its nearest element (the warning sign).
_BLOCK_START_Z = 30.0  # where the sign is when the interval starts
_BLOCK_DEPTH = 26.0  # the farthest element
_BLOCK_END_Z = 4.0  # where the farthest element is when the interval ends (last cones in view)

_CAR_COLOURS: tuple[RGB, ...] = (
    (236, 236, 236),
    (172, 174, 180),
    (32, 32, 36),
    (32, 52, 112),
    (150, 26, 26),
    (42, 82, 58),
    (192, 176, 140),
    (92, 132, 172),
    (96, 96, 100),
)


@dataclass(frozen=True)
class _Cloud:
    azimuth: float  # radians; the heading moves clouds across the sky
    y_frac: float  # height in the sky, 0 = top of the image, 1 = horizon
    drift: float  # radians per second of their own wind drift
    sprite: int


class DriveScene:
    """Frame renderer for one synthetic drive; `render(i)` gives frame i as RGB uint8."""

    def __init__(
        self,
        *,
        n_frames: int,
        fps: float,
        size: tuple[int, int],
        blockage_intervals: Sequence[tuple[float, float]],
        seed: int,
    ) -> None:
        self.n_frames = n_frames
        self.fps = fps
        self.size = size
        self.blockages = [(float(s), float(e)) for s, e in blockage_intervals]
        self._rng = Random(seed)
        self._width = size[0] * _SUPERSAMPLE
        self._height = size[1] * _SUPERSAMPLE
        self._focal = 0.85 * self._width
        self._horizon = 0.42 * self._height
        self._camera = Camera(
            width=self._width, focal=self._focal, horizon=self._horizon, height=_CAMERA_HEIGHT
        )
        self._phases = [self._rng.uniform(0, 2 * math.pi) for _ in range(6)]
        self._plan_motion()
        self._trees = self._plan_trees()
        self._cars = self._plan_cars()
        self._clouds, self._cloud_sprites = self._plan_clouds()
        self._background = self._paint_background()

    # ------------------------------------------------------------------ planning

    def _time(self, frame: int) -> float:
        return frame / self.fps

    def _blockage_at(self, t: float) -> tuple[int, float, float] | None:
        for index, (start, end) in enumerate(self.blockages):
            if start <= t < end:
                return index, start, end
        return None

    def _plan_motion(self) -> None:
        """Distance driven and heading per frame.

        Inside a blockage interval the speed is set so that the road works travel from
        `_BLOCK_START_Z` ahead until their last cone is `_BLOCK_END_Z` ahead, exactly over
        the interval. Distance is integrated from speed, so lane dashes, trees and road
        works all move consistently.
        """
        times = np.arange(self.n_frames + 1) / self.fps
        speed = np.full(times.shape, _CRUISE_SPEED)
        blockage_speed = [
            (_BLOCK_START_Z + _BLOCK_DEPTH - _BLOCK_END_Z) / max(end - start, 1e-6)
            for start, end in self.blockages
        ]
        for index, t in enumerate(times):
            hit = self._blockage_at(float(t))
            if hit is not None:
                speed[index] = blockage_speed[hit[0]]
        p = self._phases
        self._curvature = 0.0016 * np.sin(2 * math.pi * times / 53 + p[0]) + 0.0006 * np.sin(
            2 * math.pi * times / 17 + p[1]
        )
        step = speed / self.fps
        self._travelled = np.concatenate([[0.0], np.cumsum(step[:-1])])
        self._heading = np.concatenate([[0.0], np.cumsum((self._curvature * step)[:-1])])
        # The sign of each blockage sits at a fixed spot of the route.
        self._blockage_s: list[float] = []
        for start, _ in self.blockages:
            first = min(self.n_frames, math.ceil(start * self.fps - 1e-9))
            self._blockage_s.append(float(self._travelled[first]) + _BLOCK_START_Z)

    def _plan_trees(self) -> list[Tree]:
        """Roadside trees with a density that changes along the route (fields vs woods)."""
        rng = self._rng
        route = float(self._travelled[-1]) + _FAR_Z + 50
        trees: list[Tree] = []
        for side in (-1.0, 1.0):
            s = -20.0
            while s < route:
                density = 0.5 + 0.5 * math.sin(s / 180 + self._phases[2] + side)
                s += rng.uniform(6, 18) / (0.25 + density)
                trees.append(
                    Tree(
                        s=s,
                        x=side * rng.uniform(9.5, 26),
                        height=rng.uniform(4, 10),
                        crown=(rng.randint(30, 70), rng.randint(85, 130), rng.randint(30, 60)),
                    )
                )
        return trees

    def _plan_cars(self) -> list[Vehicle]:
        rng = self._rng
        duration = self.n_frames / self.fps
        cars: list[Vehicle] = []

        def new_car(lane_x: float, times: list[float], zs: list[float]) -> Vehicle:
            truck = rng.random() < 0.12
            return Vehicle(
                lane_x=lane_x + rng.uniform(-0.25, 0.25),
                times=tuple(times),
                zs=tuple(zs),
                colour=rng.choice(_CAR_COLOURS),
                width=rng.uniform(2.4, 2.6) if truck else rng.uniform(1.7, 2.0),
                height=rng.uniform(3.2, 3.8) if truck else rng.uniform(1.35, 1.8),
            )

        def fits(candidate: Vehicle) -> bool:
            # Cars in one lane keep 12 m apart; checking every half second is plenty.
            for other in cars:
                if abs(other.lane_x - candidate.lane_x) > 1.0:
                    continue
                t = max(candidate.times[0], other.times[0])
                while t <= min(candidate.times[-1], other.times[-1]):
                    a, b = candidate.z_at(t), other.z_at(t)
                    if a is not None and b is not None and abs(a - b) < 12:
                        return False
                    t += 0.5
            return True

        def near_blockage(candidate: Vehicle) -> bool:
            # The right lane is the closed one: keep its traffic away from the works.
            return any(
                candidate.times[0] < end + 1 and candidate.times[-1] > start - 1
                for start, end in self.blockages
            )

        # Left lane: faster traffic overtakes from behind and pulls away.
        t = -30.0
        while t < duration:
            t += rng.expovariate(1 / 9)
            v = rng.uniform(3, 7)
            car = new_car(-_LANE_WIDTH, [t, t + (_FAR_Z + 5) / v], [-5.0, _FAR_Z])
            if fits(car):
                cars.append(car)
        # Right lane: slower traffic comes out of the distance and is passed.
        t = -40.0
        while t < duration:
            t += rng.expovariate(1 / 10)
            v = rng.uniform(5, 9)
            car = new_car(_LANE_WIDTH, [t, t + (_FAR_Z + 5) / v], [_FAR_Z, -5.0])
            if fits(car) and not near_blockage(car):
                cars.append(car)
        # Own lane: now and then a car ahead closes in, follows a while, and leaves.
        t = rng.uniform(-20, 10)
        while t < duration:
            near, far = rng.uniform(18, 30), rng.uniform(30, 50)
            arrive = (_FAR_Z - near) / rng.uniform(6, 10)
            hold = rng.uniform(6, 20)
            leave = (_FAR_Z - far) / rng.uniform(4, 8)
            times = [t, t + arrive, t + arrive + hold, t + arrive + hold + leave]
            car = new_car(0.0, times, [_FAR_Z, near, far, _FAR_Z])
            if fits(car):
                cars.append(car)
            t = times[-1] + rng.uniform(3, 15)
        return cars

    def _plan_clouds(self) -> tuple[list[_Cloud], list[Image.Image]]:
        rng = self._rng
        sprites: list[Image.Image] = []
        for _ in range(5):
            w = rng.randint(self._width // 8, self._width // 4)
            h = max(8, w // 3)
            mask = Image.new("L", (w, h), 0)
            draw = ImageDraw.Draw(mask)
            for _ in range(6):
                cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.45, 0.7) * h
                rx, ry = rng.uniform(0.12, 0.25) * w, rng.uniform(0.25, 0.4) * h
                draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=rng.randint(150, 220))
            mask = mask.filter(ImageFilter.GaussianBlur(h / 8))
            sprite = Image.new("RGBA", (w, h), (250, 250, 252, 0))
            sprite.putalpha(mask)
            sprites.append(sprite)
        clouds = [
            _Cloud(
                azimuth=rng.uniform(0, 2 * math.pi),
                y_frac=rng.uniform(0.05, 0.65),
                drift=rng.uniform(-0.004, 0.004),
                sprite=rng.randrange(len(sprites)),
            )
            for _ in range(14)
        ]
        return clouds, sprites

    def _paint_background(self) -> np.ndarray:
        """Sky gradient above the horizon, grass gradient below; lighting comes later."""
        rows = np.arange(self._height, dtype=np.float32)[:, None]
        sky_t = np.clip(rows / self._horizon, 0, 1)
        sky = (1 - sky_t) * np.array([70, 120, 200], np.float32) + sky_t * np.array(
            [185, 210, 235], np.float32
        )
        grass_t = np.clip((rows - self._horizon) / (self._height - self._horizon), 0, 1)
        grass = (1 - grass_t) * np.array([95, 125, 75], np.float32) + grass_t * np.array(
            [70, 120, 45], np.float32
        )
        column = np.where(rows < self._horizon, sky, grass)
        return np.repeat(column[:, None, :], self._width, axis=1).astype(np.uint8)

    # ------------------------------------------------------------------ drawing

    def render(self, frame: int) -> np.ndarray:
        """Frame `frame` as an (height, width, 3) uint8 RGB array."""
        t = self._time(frame)
        bend = float(self._curvature[min(frame, self.n_frames)])
        heading = float(self._heading[min(frame, self.n_frames)])
        travelled = float(self._travelled[min(frame, self.n_frames)])
        image = Image.fromarray(self._background.copy())
        self._draw_clouds(image, t, heading)
        draw = ImageDraw.Draw(image)
        self._draw_hills(draw, heading)
        blockage = self._blockage_at(t)
        self._draw_road(draw, bend, travelled, blockage)

        # Painter's algorithm: collect everything with a depth, draw far to near.
        items: list[tuple[float, Callable[[], None]]] = []
        self._collect_trees(items, draw, bend, travelled)
        self._collect_cars(items, draw, bend, t)
        if blockage is not None:
            z_sign = self._blockage_s[blockage[0]] - travelled
            self._collect_blockage(items, draw, bend, z_sign)
        for _, paint in sorted(items, key=lambda item: -item[0]):
            paint()

        small = image.reduce(_SUPERSAMPLE)
        return self._apply_lighting(np.asarray(small), t)

    def _apply_lighting(self, pixels: np.ndarray, t: float) -> np.ndarray:
        # Slow drift of exposure and colour temperature, like passing cloud cover.
        p = self._phases
        gain = (
            1.0
            + 0.13 * math.sin(2 * math.pi * t / 71 + p[3])
            + 0.05 * math.sin(2 * math.pi * t / 23 + p[4])
        )
        warmth = 0.05 * math.sin(2 * math.pi * t / 97 + p[5])
        ramp = np.arange(256, dtype=np.float32)
        out = np.empty_like(pixels)
        for channel, tint in enumerate((1 + warmth, 1.0, 1 - warmth)):
            lut = np.clip(ramp * gain * tint, 0, 255).astype(np.uint8)
            out[..., channel] = lut[pixels[..., channel]]
        return out

    def _draw_clouds(self, image: Image.Image, t: float, heading: float) -> None:
        panorama = 2 * math.pi * self._focal  # sky wraps round once per full turn
        for cloud in self._clouds:
            sprite = self._cloud_sprites[cloud.sprite]
            angle = cloud.azimuth + cloud.drift * t - heading
            x = (self._focal * angle) % panorama - panorama / 2 + self._width / 2
            y = cloud.y_frac * self._horizon - sprite.height / 2
            if -sprite.width < x < self._width:
                image.paste(sprite, (int(x), int(y)), sprite)

    def _draw_hills(self, draw: ImageDraw.ImageDraw, heading: float) -> None:
        p = self._phases
        xs = np.arange(0, self._width + 8, 8, dtype=np.float64)
        angle = heading + (xs - self._width / 2) / self._focal
        for layer, (colour, scale) in enumerate((((120, 140, 150), 1.0), ((70, 105, 70), 0.55))):
            height = (
                scale
                * self._height
                * (
                    0.05
                    + 0.03 * np.sin(3 * angle + p[layer])
                    + 0.02 * np.sin(7 * angle + p[layer + 2])
                    + 0.01 * np.sin(17 * angle + p[layer + 3])
                )
            )
            ys = self._horizon - height
            outline = list(zip(xs.tolist(), ys.tolist(), strict=True))
            draw.polygon(
                [(0.0, self._horizon + 1), *outline, (float(self._width), self._horizon + 1)],
                fill=colour,
            )

    def _road_strip(
        self, x_left: float, x_right: float, z_near: float, z_far: float, bend: float, n: int = 24
    ) -> list[Point]:
        # Geometric spacing: equal steps on screen need ever longer steps in depth.
        zs = np.geomspace(z_near, z_far, n)
        left = [self._camera.project(x_left, float(z), 0.0, bend) for z in zs]
        right = [self._camera.project(x_right, float(z), 0.0, bend) for z in zs[::-1]]
        return left + right

    def _draw_road(
        self,
        draw: ImageDraw.ImageDraw,
        bend: float,
        travelled: float,
        blockage: tuple[int, float, float] | None,
    ) -> None:
        near = 0.8 * self._focal * _CAMERA_HEIGHT / (self._height - self._horizon)
        draw.polygon(self._road_strip(-7.5, 7.5, near, _FAR_Z, bend), fill=(150, 140, 115))
        draw.polygon(
            self._road_strip(-_ROAD_HALF, _ROAD_HALF, near, _FAR_Z, bend), fill=(84, 84, 88)
        )
        for edge in (-_ROAD_HALF + 0.25, _ROAD_HALF - 0.25):
            draw.polygon(
                self._road_strip(edge - 0.08, edge + 0.08, near, 120.0, bend), fill=(225, 225, 215)
            )
        if blockage is not None:
            # Dug-up asphalt in the closed lane, behind the barriers.
            z0 = self._blockage_s[blockage[0]] - travelled
            zs = (max(near, z0 + 12.0), z0 + _BLOCK_DEPTH + 1.0)
            if zs[1] > zs[0]:
                draw.polygon(
                    self._road_strip(2.1, _ROAD_HALF - 0.5, zs[0], zs[1], bend, 8),
                    fill=(120, 95, 70),
                )
        phase = travelled % _DASH_PERIOD
        for lane_line in (-_LANE_WIDTH / 2, _LANE_WIDTH / 2):
            start = -phase
            while start < 110.0:
                z0, z1 = max(near, start), start + _DASH_LENGTH
                if z1 > z0:
                    draw.polygon(
                        self._road_strip(lane_line - 0.07, lane_line + 0.07, z0, z1, bend, 3),
                        fill=(235, 235, 225),
                    )
                start += _DASH_PERIOD

    def _collect_trees(
        self,
        items: list[tuple[float, Callable[[], None]]],
        draw: ImageDraw.ImageDraw,
        bend: float,
        travelled: float,
    ) -> None:
        for tree in self._trees:
            z = tree.s - travelled
            if _NEAR_Z < z < 160.0:
                items.append((z, partial(props.paint_tree, draw, self._camera, tree, z, bend)))
        # Reflector posts every 50 m give the verge motion even in open fields.
        post = 50.0 - travelled % 50.0
        while post < 120.0:
            for side in (-7.0, 7.0):
                if post > _NEAR_Z:
                    paint = partial(props.paint_post, draw, self._camera, side, post, bend)
                    items.append((post, paint))
            post += 50.0

    def _collect_cars(
        self,
        items: list[tuple[float, Callable[[], None]]],
        draw: ImageDraw.ImageDraw,
        bend: float,
        t: float,
    ) -> None:
        for car in self._cars:
            z = car.z_at(t)
            if z is not None and _NEAR_Z + 1.0 < z < _FAR_Z:
                items.append((z, partial(props.paint_car, draw, self._camera, car, z, bend)))

    # ------------------------------------------------------------------ road works

    def _collect_blockage(
        self,
        items: list[tuple[float, Callable[[], None]]],
        draw: ImageDraw.ImageDraw,
        bend: float,
        z_sign: float,
    ) -> None:
        camera = self._camera

        def add(dz: float, paint: Callable[..., None], *lateral: float) -> None:
            # Every painter takes (draw, camera, *lateral positions, z, bend).
            z = z_sign + dz
            if _NEAR_Z < z < _FAR_Z:
                items.append((z, partial(paint, draw, camera, *lateral, z, bend)))

        add(0.0, props.paint_warning_sign, 6.6)
        add(7.0, props.paint_arrow_board, 6.6)
        # A taper of cones from the verge into the lane line, then cones along it.
        for i in range(6):
            dz = 3.0 + 2.0 * i
            x = (_ROAD_HALF - 0.4) - i * ((_ROAD_HALF - 0.4 - 2.0) / 5)
            add(dz, props.paint_cone, x)
        for dz in np.arange(15.0, _BLOCK_DEPTH + 0.1, 3.0):
            add(float(dz), props.paint_cone, 2.0)
        for dz in (13.0, 23.0):
            add(dz, props.paint_barrier, 2.4, _ROAD_HALF - 0.3)
