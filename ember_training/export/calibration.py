"""Calibration images for static INT8 quantization of the vision encoder.

From a directory of photos (jpg/png, e.g. ../shared/data/incidents/images) or, without
one, from scenes drawn with OpenCV (sky, ground, fire, smoke, water, debris, vehicles):
what matters for calibration is realistic activation ranges, not the labels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ember.engine.preprocess import preprocess
from ember_training.data.images import read_rgb

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


@dataclass
class FolderImages:
    """What a calibration folder gave: images to calibrate on, others held out for the export's
    INT8 checks, and what was passed over (files that do not decode, copies of an image taken)."""

    calibration: list[np.ndarray]
    held_out: list[np.ndarray]
    unreadable: list[Path] = field(default_factory=list)
    duplicates: int = 0
    files: int = 0

    def summary(self, requested: int) -> str:
        """One line on what was used, for the export log."""
        text = f"{len(self.calibration)} calibration image(s)"
        if len(self.calibration) < requested:
            text += f" (asked for {requested}; the folder has {self.files} image file(s))"
        text += f", {len(self.held_out)} held out for the INT8 checks"
        if self.duplicates:
            text += f", {self.duplicates} duplicate(s) skipped"
        if self.unreadable:
            text += f", {len(self.unreadable)} unreadable file(s) skipped (e.g. {self.unreadable[0].name})"
        return text


def load_folder(directory: str | Path, num_calibration: int, num_held_out: int = 0,
                min_side: int | None = None) -> FolderImages:
    """Up to `num_calibration` distinct RGB uint8 images of a directory (searched recursively), spread
    over all of them in name order (spread_order), then up to `num_held_out` others, spread over the
    rest. A folder too small for both keeps a quarter of its files (at most `num_held_out`) out of
    calibration, so that the INT8 checks see some of the user's own images. Grayscale, RGBA and 16-bit files become 8-bit RGB; a file that does not decode, or whose
    pixels equal an image already taken, is passed over (the next one takes its place). With
    `min_side`, large JPEGs decode at reduced scale (training's read_rgb): the model sees
    `min_side` pixels anyway. FileNotFoundError when no image can be read."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"calibration image directory not found: {directory}")
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    tried: set[Path] = set()
    seen: set[bytes] = set()
    out = FolderImages([], [], files=len(paths))
    reserve = min(num_held_out, len(paths) // 4)
    num_calibration = max(1, min(num_calibration, len(paths) - reserve))

    def take(candidates: list[Path], n: int) -> list[np.ndarray]:
        images: list[np.ndarray] = []
        for path in candidates:
            if len(images) >= n:
                break
            tried.add(path)
            try:
                rgb = read_rgb(path, min_side)
            except OSError:
                out.unreadable.append(path)
                continue
            digest = hashlib.sha1(rgb.tobytes() + str(rgb.shape).encode()).digest()
            if digest in seen:
                out.duplicates += 1
                continue
            seen.add(digest)
            images.append(rgb)
        return images

    out.calibration = take(spread_order(paths, num_calibration), num_calibration)
    if not out.calibration:
        raise FileNotFoundError(
            f"no readable images ({', '.join(IMAGE_SUFFIXES)}) under {directory}"
            + (f": {len(out.unreadable)} file(s) do not decode, e.g. {out.unreadable[0]}" if out.unreadable else "")
        )
    rest = [p for p in paths if p not in tried]
    out.held_out = take(spread_order(rest, num_held_out), num_held_out) if num_held_out > 0 else []
    return out


def load_images(directory: str | Path, limit: int = 16) -> list[np.ndarray]:
    """Up to `limit` distinct RGB uint8 images from a directory (load_folder's calibration set)."""
    return load_folder(directory, limit).calibration


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
