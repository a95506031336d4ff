"""Image preprocessing for the vision model: uint8 RGB HxWx3 -> normalised float32 NCHW.

The same steps as training (ember_training.data.images): the whole frame resized to
image_size x image_size with OpenCV's INTER_AREA, scaled to [0, 1], normalised, CHW.
Shrinking (every camera frame) uses a numpy implementation of INTER_AREA (exact area
averaging; within one grey level of cv2.resize) so the engine process need not load
OpenCV (~17 MB resident); enlarging a small image uses cv2 itself.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    if image.size == 0:
        raise ImageError(f"image is empty (shape {image.shape})")
    return image


def _area_taps(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices [K, out] and weights [K, out] of area averaging n -> out samples (n >= out)."""
    scale = n / out
    start = np.arange(out) * scale
    end = start + scale
    first = np.floor(start).astype(np.int64)
    k = int(np.ceil(scale)) + 1
    idx = first[None, :] + np.arange(k)[:, None]
    overlap = np.minimum(idx + 1, end[None, :]) - np.maximum(idx, start[None, :])
    weights = np.clip(overlap, 0.0, None) / scale
    weights[idx >= n] = 0.0
    return np.minimum(idx, n - 1), weights.astype(np.float32)


def area_resize(image: np.ndarray, size: int, block: int = 32) -> np.ndarray:
    """Shrink a uint8 HxWxC image to size x size by area averaging (cv2.INTER_AREA semantics).

    Separable, a few taps per output sample, computed `block` output rows at a time so
    the float buffers stay small (about block x W x C floats).
    """
    h, w, c = image.shape
    if h < size or w < size:
        raise ValueError("area_resize only shrinks")
    if h % size == 0 and w % size == 0:  # integer factors: OpenCV's fast box average and its rounding
        kh, kw = h // size, w // size
        sums = image.reshape(size, kh, size, kw, c).sum(axis=(1, 3), dtype=np.int32)
        if kh * kw == 4:
            return ((sums + 2) >> 2).astype(np.uint8)
        return np.rint(sums.astype(np.float32) * np.float32(1.0 / (kh * kw))).astype(np.uint8)
    rows, row_w = _area_taps(h, size)
    cols, col_w = _area_taps(w, size)
    out = np.empty((size, size, c), np.uint8)
    for r0 in range(0, size, block):
        r1 = min(size, r0 + block)
        acc = np.zeros((r1 - r0, w, c), np.float32)
        tmp = np.empty_like(acc)
        for idx, wk in zip(rows[:, r0:r1], row_w[:, r0:r1], strict=True):
            np.multiply(image[idx], wk[:, None, None], out=tmp)
            acc += tmp
        res = np.zeros((r1 - r0, size, c), np.float32)
        tmp = np.empty_like(res)
        for idx, wk in zip(cols, col_w, strict=True):
            np.multiply(acc[:, idx], wk[None, :, None], out=tmp)
            res += tmp
        np.rint(res, out=res)
        np.clip(res, 0, 255, out=res)
        out[r0:r1] = res
    return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Whole frame to size x size as cv2.resize(..., INTER_AREA) does."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    if h >= size and w >= size:
        return area_resize(image, size)
    import cv2  # enlarging: OpenCV's INTER_AREA is then a linear scheme of its own

    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)


def preprocess(
    image_rgb: np.ndarray,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """uint8 RGB HxWx3 -> [1, 3, S, S] float32: resize (INTER_AREA), /255, (x - mean) / std."""
    image = resize(check_image(image_rgb), image_size)
    x = image.astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
