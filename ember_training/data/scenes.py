"""Incident scenes drawn with OpenCV, labelled with real Incidents1M category names.

The label is carried by what is drawn (flames, smoke plumes, water, rubble, crashed cars,
snow, a sunken hull, ...), never by text: no glyph is ever written into an image. Layout,
sizes, colours, lighting and noise are random, and backgrounds are shared between incident
types, so no single pixel or global colour gives the label away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Rng = np.random.Generator
Img = np.ndarray


@dataclass(frozen=True)
class Recipe:
    """A scene type: positive incident names, compatible places, and its overlay painter."""

    name: str
    incidents: tuple[str, ...]
    places: tuple[str, ...]
    paint: Callable[[Img, Rng, str], None]


def _jit(rng: Rng, color: tuple[int, int, int], amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _horizon(img: Img, rng: Rng) -> int:
    return int(img.shape[0] * rng.uniform(0.35, 0.55))


def _sky(img: Img, rng: Rng, top: tuple[int, int, int], bottom: tuple[int, int, int], h: int) -> None:
    top, bottom = _jit(rng, top), _jit(rng, bottom)
    for y in range(h):
        t = y / max(h - 1, 1)
        img[y, :] = [int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)]


def _ground(img: Img, rng: Rng, y0: int, color: tuple[int, int, int]) -> None:
    img[y0:, :] = _jit(rng, color)


def _building(img: Img, rng: Rng, x: int, base: int, w: int, h: int) -> tuple[int, int, int, int]:
    wall = _jit(rng, (170, 150, 130), 40)
    cv2.rectangle(img, (x, base - h), (x + w, base), wall, -1)
    win = _jit(rng, (90, 110, 140), 30)
    step = max(6, w // 4)
    for wy in range(base - h + 4, base - 6, step):
        for wx in range(x + 3, x + w - 5, step):
            cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2), win, -1)
    return x, base - h, w, h


def _house(img: Img, rng: Rng, x: int, base: int, w: int) -> tuple[int, int, int, int]:
    h = int(w * rng.uniform(0.6, 0.9))
    cv2.rectangle(img, (x, base - h), (x + w, base), _jit(rng, (200, 180, 150), 40), -1)
    roof = np.array([[x - 3, base - h], [x + w + 3, base - h], [x + w // 2, base - h - w // 2]], np.int32)
    cv2.fillPoly(img, [roof], _jit(rng, (140, 60, 50), 30))
    return x, base - h - w // 2, w, h + w // 2


def _tree(img: Img, rng: Rng, x: int, base: int, s: int) -> None:
    cv2.rectangle(img, (x - s // 8, base - s // 3), (x + s // 8, base), _jit(rng, (90, 60, 30)), -1)
    pts = np.array([[x - s // 2, base - s // 3], [x + s // 2, base - s // 3], [x, base - s - s // 2]], np.int32)
    cv2.fillPoly(img, [pts], _jit(rng, (40, 120, 50), 30))


def _car(img: Img, rng: Rng, cx: int, cy: int, s: int, angle: float = 0.0) -> None:
    color = tuple(int(c) for c in rng.integers(30, 230, 3))
    rect = ((cx, cy), (s, s // 2), angle)
    cv2.fillPoly(img, [cv2.boxPoints(rect).astype(np.int32)], color)
    roof = ((cx, cy), (s // 2, s // 3), angle)
    cv2.fillPoly(img, [cv2.boxPoints(roof).astype(np.int32)], _jit(rng, (60, 70, 90)))


def _road(img: Img, rng: Rng, y0: int, lanes: int = 2) -> None:
    h, w = img.shape[:2]
    img[y0:, :] = _jit(rng, (80, 80, 85), 15)
    for k in range(1, lanes):
        y = y0 + (h - y0) * k // lanes
        for x in range(int(rng.integers(0, 10)), w, 14):
            cv2.line(img, (x, y), (x + 7, y), _jit(rng, (230, 220, 120), 20), 1)


def _flames(img: Img, rng: Rng, x: int, y: int, w: int, h: int) -> None:
    """Flickering tongues of red -> orange -> yellow, blurred into a glow."""
    layer = np.zeros_like(img)
    for _ in range(int(rng.integers(6, 14))):
        fx = int(rng.integers(x, x + max(w, 2)))
        fw = int(rng.integers(3, max(4, w // 3)))
        fh = int(rng.integers(max(4, h // 3), max(5, h)))
        for color, scale in (((200, 30, 10), 1.0), ((250, 120, 20), 0.7), ((255, 220, 80), 0.4)):
            pts = np.array([[fx - int(fw * scale), y], [fx + int(fw * scale), y],
                            [fx + int(rng.integers(-3, 4)), y - int(fh * scale)]], np.int32)
            cv2.fillPoly(layer, [pts], _jit(rng, color, 20))
    mask = layer.any(-1)
    img[mask] = layer[mask]
    glow = cv2.GaussianBlur(layer, (0, 0), 3)
    np.copyto(img, np.clip(img.astype(np.int16) + glow // 3, 0, 255).astype(np.uint8))


def _smoke(img: Img, rng: Rng, x: int, y: int, spread: int, dark: bool | None = None) -> None:
    """A rising plume of translucent grey blobs."""
    dark = bool(rng.integers(0, 2)) if dark is None else dark
    layer = np.zeros(img.shape[:2], np.float32)
    cx, cy = float(x), float(y)
    for _ in range(int(rng.integers(8, 16))):
        r = int(rng.integers(max(3, spread // 4), max(4, spread // 2)))
        cv2.circle(layer, (int(cx), int(cy)), r, 1.0, -1)
        cx += rng.uniform(-spread / 3, spread / 2)
        cy -= rng.uniform(spread / 6, spread / 3)
    layer = cv2.GaussianBlur(layer, (0, 0), 4)[..., None] * rng.uniform(0.55, 0.85)
    tone = np.array(_jit(rng, (60, 60, 60) if dark else (170, 170, 170), 20), np.float32)
    np.copyto(img, (img * (1 - layer) + tone * layer).astype(np.uint8))


def _water(img: Img, rng: Rng, level: int, muddy: bool = True) -> None:
    h, w = img.shape[:2]
    color = np.array(_jit(rng, (120, 105, 70) if muddy else (40, 90, 160), 20), np.float32)
    alpha = rng.uniform(0.75, 0.9)
    region = img[level:].astype(np.float32)
    img[level:] = (region * (1 - alpha) + color * alpha).astype(np.uint8)
    for _ in range(int(rng.integers(6, 14))):
        y = int(rng.integers(level + 2, h))
        x = int(rng.integers(0, w))
        cv2.line(img, (x, y), (x + int(rng.integers(5, 15)), y), _jit(rng, (200, 200, 210), 20), 1)


def _rubble(img: Img, rng: Rng, x: int, y: int, w: int, h: int, pieces: tuple[int, int] = (15, 30), size: int = 8) -> None:
    for _ in range(int(rng.integers(*pieces))):
        cx, cy = int(rng.integers(x, x + w)), int(rng.integers(y, y + h))
        s = int(rng.integers(2, size))
        pts = (np.array([[cx, cy]]) + rng.integers(-s, s + 1, (5, 2))).astype(np.int32)
        cv2.fillPoly(img, [cv2.convexHull(pts)], _jit(rng, (130, 120, 110), 40))


def _cracks(img: Img, rng: Rng, y0: int) -> None:
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(2, 5))):
        pts = [(int(rng.integers(0, w)), int(rng.integers(y0, h)))]
        for _ in range(6):
            px, py = pts[-1]
            pts.append((px + int(rng.integers(-10, 11)), py + int(rng.integers(-4, 8))))
        cv2.polylines(img, [np.array(pts, np.int32)], False, (25, 20, 20), int(rng.integers(1, 3)))


# -------------------------------------------------------------- backgrounds by place
def background(img: Img, rng: Rng, place: str) -> int:
    """Paint the place; returns the ground line y."""
    h, w = img.shape[:2]
    y0 = _horizon(img, rng)
    _sky(img, rng, (110, 160, 220), (190, 210, 235), y0)
    if place in ("street", "highway", "bridge"):
        _road(img, rng, y0, 3 if place == "highway" else 2)
        if place == "street":
            for x in range(0, w, int(rng.integers(25, 40))):
                _building(img, rng, x, y0, int(rng.integers(15, 25)), int(rng.integers(15, y0 - 5)))
    elif place == "parking lot":
        _ground(img, rng, y0, (95, 95, 100))
        for x in range(4, w, 16):
            cv2.line(img, (x, y0 + 4), (x, h - 4), _jit(rng, (230, 230, 230), 15), 1)
    elif place in ("forest", "forest road"):
        _ground(img, rng, y0, (60, 110, 50))
        for _ in range(int(rng.integers(6, 12))):
            _tree(img, rng, int(rng.integers(0, w)), int(rng.integers(y0, h)), int(rng.integers(18, 35)))
    elif place in ("ocean", "coast", "beach", "port"):
        img[y0:] = _jit(rng, (40, 100, 170), 25)
        if place in ("coast", "beach"):
            sand = int(y0 + (h - y0) * rng.uniform(0.55, 0.75))
            img[sand:] = _jit(rng, (210, 190, 140), 20)
    elif place in ("mountain", "valley", "snowfield"):
        _ground(img, rng, y0, (235, 235, 240) if place == "snowfield" else (100, 130, 70))
        for _ in range(int(rng.integers(2, 4))):
            px = int(rng.integers(0, w))
            peak = np.array([[px - 40, y0], [px + 40, y0], [px, int(y0 * rng.uniform(0.2, 0.5))]], np.int32)
            cv2.fillPoly(img, [peak], _jit(rng, (120, 110, 105), 20))
    else:  # house, building outdoor, residential neighborhood, village, downtown
        _ground(img, rng, y0, (90, 140, 70))
        for x in range(int(rng.integers(0, 10)), w - 10, int(rng.integers(30, 45))):
            if place in ("building outdoor", "downtown"):
                _building(img, rng, x, y0 + 5, int(rng.integers(18, 30)), int(rng.integers(25, y0)))
            else:
                _house(img, rng, x, y0 + 5, int(rng.integers(18, 26)))
    return y0


# -------------------------------------------------------------- incident painters
def _paint_fire(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    x0 = int(rng.integers(0, w // 2))
    base = int(rng.integers(h // 2, h - 5))
    x, top, bw, bh = _building(img, rng, x0, base, int(rng.integers(w // 4, w // 2)), int(rng.integers(h // 4, h // 2)))
    _flames(img, rng, x, top + int(bh * rng.uniform(0.2, 0.6)), bw, bh // 2)
    _smoke(img, rng, x + bw // 2, top, max(10, bw // 2))


def _paint_wildfire(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    y = int(rng.integers(h // 2, h - 5))
    _flames(img, rng, 0, y, w, int(rng.integers(h // 5, h // 3)))
    for _ in range(int(rng.integers(1, 3))):
        _smoke(img, rng, int(rng.integers(0, w)), y - 10, int(rng.integers(15, 30)))


def _paint_smoke(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 3))):
        _smoke(img, rng, int(rng.integers(w // 5, 4 * w // 5)), int(rng.integers(h // 2, h - 5)),
               int(rng.integers(15, 30)), dark=True)


def _paint_flood(img: Img, rng: Rng, place: str) -> None:
    h = img.shape[0]
    for _ in range(int(rng.integers(1, 4))):
        _car(img, rng, int(rng.integers(10, img.shape[1] - 10)), int(rng.integers(h // 2, h - 8)), int(rng.integers(16, 26)))
    _water(img, rng, int(h * rng.uniform(0.45, 0.7)), muddy=True)


def _paint_collapse(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    x = int(rng.integers(0, w // 2))
    base = int(rng.integers(2 * h // 3, h - 3))
    bw = int(rng.integers(w // 4, w // 2))
    # a broken, tilted wall stump and a rubble heap
    stump = np.array([[x, base], [x + bw, base], [x + bw - 5, base - h // 5], [x + 8, base - h // 3]], np.int32)
    cv2.fillPoly(img, [stump], _jit(rng, (160, 140, 120), 30))
    _rubble(img, rng, max(0, x - 10), base - h // 6, bw + 20, h // 6)


def _paint_earthquake(img: Img, rng: Rng, place: str) -> None:
    _paint_collapse(img, rng, place)
    _cracks(img, rng, img.shape[0] // 2)


def _paint_car_accident(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    cx, cy = int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(2 * h // 3, h - 10))
    s = int(rng.integers(20, 30))
    _car(img, rng, cx, cy, s, float(rng.uniform(-30, 30)))
    _car(img, rng, cx + s // 2, cy - s // 6, s, float(rng.uniform(50, 130)))
    _rubble(img, rng, cx - s, cy + s // 4, 2 * s, 6, pieces=(4, 9), size=4)


def _paint_traffic_jam(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    y0 = int(h * 0.55)
    for row in range(3):
        y = y0 + 6 + row * (h - y0) // 3
        for x in range(int(rng.integers(0, 8)), w, int(rng.integers(18, 24))):
            _car(img, rng, x, y, int(rng.integers(14, 18)))


def _paint_snow(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    grey = np.array(_jit(rng, (215, 220, 228), 10), np.float32)
    lower = img[h // 2:].astype(np.float32)
    img[h // 2:] = (lower * 0.25 + grey * 0.75).astype(np.uint8)
    for _ in range(int(rng.integers(80, 200))):
        cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(0, 2)), (250, 250, 250), -1)


def _paint_sunken_ship(img: Img, rng: Rng, place: str) -> None:
    """Underwater: blue-green murk, a tilted hull on the seabed, floating particles."""
    h, w = img.shape[:2]
    _sky(img, rng, (20, 110, 130), (5, 40, 70), h)
    floor = int(h * rng.uniform(0.7, 0.85))
    img[floor:] = _jit(rng, (90, 85, 60), 20)
    hull = ((int(rng.integers(w // 4, 3 * w // 4)), floor - 6), (int(rng.integers(w // 3, w // 2)), 14),
            float(rng.uniform(-25, 25)))
    cv2.fillPoly(img, [cv2.boxPoints(hull).astype(np.int32)], _jit(rng, (70, 50, 40), 20))
    for _ in range(int(rng.integers(30, 80))):
        cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), 0, _jit(rng, (160, 200, 200), 30), -1)


def _paint_ship_surface(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    cx, cy = int(rng.integers(w // 4, 3 * w // 4)), int(h * rng.uniform(0.55, 0.75))
    hull = ((cx, cy), (int(rng.integers(w // 3, w // 2)), 12), float(rng.uniform(15, 40)))
    cv2.fillPoly(img, [cv2.boxPoints(hull).astype(np.int32)], _jit(rng, (150, 40, 40), 30))
    _smoke(img, rng, cx, cy - 8, 14)


def _paint_oil_spill(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(2, 5))):
        center = (int(rng.integers(0, w)), int(rng.integers(h // 2, h)))
        axes = (int(rng.integers(10, 30)), int(rng.integers(4, 10)))
        cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360, _jit(rng, (25, 20, 25), 10), -1)


def _paint_landslide(img: Img, rng: Rng, place: str) -> None:
    h, w = img.shape[:2]
    x = int(rng.integers(0, w // 2))
    mass = np.array([[x, h // 3], [x + w // 4, h // 3], [x + w // 2 + 10, h], [x - 10, h]], np.int32)
    cv2.fillPoly(img, [mass], _jit(rng, (120, 85, 50), 25))
    _rubble(img, rng, x, h // 2, w // 2, h // 2)


def _paint_nothing(img: Img, rng: Rng, place: str) -> None:
    if place in ("street", "highway", "parking lot") and rng.random() < 0.7:
        for _ in range(int(rng.integers(1, 3))):
            _car(img, rng, int(rng.integers(10, img.shape[1] - 10)), int(rng.integers(2 * img.shape[0] // 3, img.shape[0] - 8)),
                 int(rng.integers(16, 24)))


RECIPES: tuple[Recipe, ...] = (
    Recipe("fire", ("on fire", "with smoke"), ("building outdoor", "house", "residential neighborhood"), _paint_fire),
    Recipe("wildfire", ("wildfire", "with smoke"), ("forest", "mountain", "valley"), _paint_wildfire),
    Recipe("smoke", ("with smoke",), ("street", "industrial area", "village"), _paint_smoke),
    Recipe("flood", ("flooded",), ("street", "parking lot", "residential neighborhood", "village"), _paint_flood),
    Recipe("collapse", ("collapsed", "damaged"), ("building outdoor", "downtown", "street"), _paint_collapse),
    Recipe("earthquake", ("earthquake", "collapsed", "damaged"), ("village", "residential neighborhood"), _paint_earthquake),
    Recipe("car_accident", ("car accident",), ("street", "highway", "bridge"), _paint_car_accident),
    Recipe("traffic_jam", ("traffic jam",), ("highway", "street"), _paint_traffic_jam),
    Recipe("snow", ("snow covered",), ("street", "residential neighborhood", "mountain", "forest"), _paint_snow),
    Recipe("underwater", ("ship boat accident",), ("ocean",), _paint_sunken_ship),
    Recipe("ship", ("ship boat accident", "with smoke"), ("ocean", "port", "coast"), _paint_ship_surface),
    Recipe("oil_spill", ("oil spill",), ("ocean", "coast", "beach"), _paint_oil_spill),
    Recipe("landslide", ("landslide",), ("mountain", "valley"), _paint_landslide),
    Recipe("normal", (), ("street", "forest", "beach", "house", "highway", "parking lot", "mountain"), _paint_nothing),
)


def draw_scene(recipe: Recipe, place: str, rng: Rng, size: int) -> Img:
    """An RGB uint8 image of `recipe` at `place` (drawn at 128 px and resized to `size`)."""
    img = np.zeros((128, 128, 3), np.uint8)
    if recipe.name != "underwater":
        background(img, rng, place)
    recipe.paint(img, rng, place)
    # global lighting and sensor noise
    gain = rng.uniform(0.75, 1.2)
    noise = rng.normal(0, rng.uniform(2, 8), img.shape)
    img = np.clip(img.astype(np.float32) * gain + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = img[:, ::-1].copy()
    if size != 128:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img
