"""Calibration images for static INT8 quantization of the vision encoder.

From a directory of photos (jpg/png, e.g. ../shared/data/incidents/images) or, without
one, from scenes drawn with OpenCV (sky, ground, fire, smoke, water, debris, vehicles):
what matters for calibration is realistic activation ranges, not the labels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ember.engine.preprocess import preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def spread_order(paths: list[Path], limit: int) -> list[Path]:
    """`paths` (sorted by name) reordered so the first `limit` are spread evenly over all of them,
    the rest after: a directory of recorded frames named in time order then calibrates on the whole
    recording, not on its first `limit` (nearly identical) frames."""
    if len(paths) <= limit:
        return list(paths)
    picked = sorted({int(i) for i in np.linspace(0, len(paths) - 1, limit).round()})
    chosen = set(picked)
    return [paths[i] for i in picked] + [p for i, p in enumerate(paths) if i not in chosen]


def load_images(directory: str | Path, limit: int = 16) -> list[np.ndarray]:
    """Up to `limit` RGB uint8 images from a directory, spread over all of them in name order
    (spread_order); unreadable files are skipped (the next ones take their place)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"calibration image directory not found: {directory}")
    images = []
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in spread_order(paths, limit):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if len(images) >= limit:
            break
    if not images:
        raise FileNotFoundError(f"no readable images ({', '.join(IMAGE_SUFFIXES)}) under {directory}")
    return images


def draw_scene(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One random outdoor scene, RGB uint8."""
    img = np.zeros((size, size, 3), np.uint8)
    horizon = int(rng.integers(size // 4, 3 * size // 4))
    sky_top, sky_bottom = rng.integers(60, 255, 3), rng.integers(60, 255, 3)
    for y in range(horizon):
        a = y / max(horizon - 1, 1)
        img[y] = (1 - a) * sky_top + a * sky_bottom
    img[horizon:] = rng.integers(20, 200, 3)
    for _ in range(int(rng.integers(2, 7))):
        kind = rng.integers(0, 4)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(size // 20, size // 4))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, color, -1)
        elif kind == 1:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1)
        elif kind == 2:
            pts = rng.integers(0, size, (5, 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], color)
        else:
            cv2.line(img, (cx, cy), (int(rng.integers(0, size)), int(rng.integers(0, size))), color, int(rng.integers(2, 9)))
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.0)))
    noise = rng.normal(0, rng.uniform(2, 12), img.shape)
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def generated_images(n: int = 16, seed: int = 0, size: int = 256) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [draw_scene(rng, size) for _ in range(n)]


def calibration_batch(
    images: list[np.ndarray], image_size: int, mean: list[float], std: list[float]
) -> np.ndarray:
    """[N, 3, S, S] float32, preprocessed exactly as the engine does."""
    return np.concatenate([preprocess(im, image_size, mean, std) for im in images], axis=0)
