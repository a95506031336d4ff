"""Image decoding and preprocessing (the engine's preprocessing is the no-augment path)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .common import MISSING_IMAGE, UNREADABLE_IMAGE


def check_image(path: str | Path) -> str | None:
    """None if `path` is a file in an image format OpenCV decodes (its signature is read, not the
    pixels), else the skip reason: MISSING_IMAGE, or UNREADABLE_IMAGE for an empty file or another
    format (an HTML error page saved under the image's name by a failed download)."""
    path = Path(path)
    if not path.is_file():
        return MISSING_IMAGE
    if path.stat().st_size == 0 or not cv2.haveImageReader(str(path)):
        return UNREADABLE_IMAGE
    return None


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3]; OSError if it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop (80-100% of each side), horizontal flip, mild brightness/contrast change."""
    h, w = rgb.shape[:2]
    ch, cw = int(h * rng.uniform(0.8, 1.0)), int(w * rng.uniform(0.8, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = rgb[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain, bias = rng.uniform(0.9, 1.1), rng.uniform(-10, 10)
    return np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def to_tensor_array(rgb: np.ndarray, size: int, mean: list[float], std: list[float]) -> np.ndarray:
    """Resize the whole frame to size x size (INTER_AREA), scale to [0, 1], normalise: float32 [3, S, S]."""
    img = cv2.resize(np.ascontiguousarray(rgb), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))
