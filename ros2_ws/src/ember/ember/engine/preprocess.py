"""Image preprocessing for the vision model: uint8 RGB HxWx3 -> normalised float32 NCHW."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


class ImageError(ValueError):
    """An input image the engine cannot use (wrong type, dtype, shape or empty)."""


def check_image(image: object) -> np.ndarray:
    """Return `image` if it is a non-empty uint8 RGB array of shape HxWx3, else raise ImageError."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array (uint8 RGB, HxWx3), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"image must have dtype uint8 (RGB 0..255), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"image must have shape HxWx3 (RGB), got {image.shape}")
    if image.size == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image is empty (shape {image.shape})")
    return image


def preprocess(
    image_rgb: np.ndarray,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """Resize (squash) to image_size x image_size, scale to [0, 1], normalise -> [1, 3, S, S] float32.

    INTER_AREA when shrinking, INTER_LINEAR when enlarging (what training uses too).
    """
    image = check_image(image_rgb)
    h, w = image.shape[:2]
    if (h, w) != (image_size, image_size):
        interp = cv2.INTER_AREA if h >= image_size and w >= image_size else cv2.INTER_LINEAR
        image = cv2.resize(np.ascontiguousarray(image), (image_size, image_size), interpolation=interp)
    x = image.astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
