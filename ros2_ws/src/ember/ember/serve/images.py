"""Validation and decoding of uploaded images before the model sees them.

Only JPEG and PNG are accepted (the formats of sensor_msgs/CompressedImage). The
format is sniffed from the bytes, the dimensions are read from the header and bounded
*before* decoding (so a small file cannot expand into gigabytes of pixels), and the
decoded array must have exactly those dimensions (transposed for a photo whose EXIF
orientation rotates it by 90 degrees: it is decoded upright, as cv2.imread shows it).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FORMAT_MIME = {"jpeg": "image/jpeg", "png": "image/png"}
ACCEPTED_MIME = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "application/octet-stream"})
DEFAULT_MAX_PIXELS = 4096 * 4096
# SOFn markers that carry the frame size (not DHT 0xC4, JPG 0xC8, DAC 0xCC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class ImageError(ValueError):
    """An upload that is not a usable image; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def sniff_format(data: bytes) -> str | None:
    """'jpeg' or 'png' from the file signature, else None."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    # Signature (8) + IHDR length (4) + b"IHDR" (4) + width (4) + height (4).
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError("corrupt PNG: the IHDR header is missing or truncated")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise ImageError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise ImageError(f"corrupt JPEG: segment length {length} at byte {pos}")
        if marker in _JPEG_SOF:
            if pos + 9 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise ImageError("corrupt JPEG: no frame header (SOF) before the image data")


def image_size(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) read from a JPEG or PNG header without decoding the pixels."""
    return _png_size(data) if fmt == "png" else _jpeg_size(data)


def decode_image(
    data: bytes, declared_type: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, keep_16bit: bool = False
) -> np.ndarray:
    """Validate and decode an uploaded JPEG or PNG to contiguous uint8 RGB (H, W, 3).

    `declared_type` is the part's Content-Type, if the client sent one. Raises ImageError
    (415 for an unsupported type, 413 for too many pixels, 422 for empty or corrupt data).
    With `keep_16bit` a 16-bit PNG comes back as uint16 RGB (else it is cut to its high byte).
    """
    declared = (declared_type or "").split(";")[0].strip().lower() or None
    if declared is not None and declared not in ACCEPTED_MIME:
        raise ImageError(f"unsupported image content type {declared!r}; send image/jpeg or image/png", 415)
    if not data:
        raise ImageError("the image file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        if declared in ("image/jpeg", "image/jpg", "image/pjpeg", "image/png"):
            raise ImageError(f"corrupt image: declared {declared} but the bytes do not start with a {declared} signature")
        raise ImageError("unsupported image format: the bytes are neither JPEG nor PNG", 415)
    width, height = image_size(data, fmt)
    if width <= 0 or height <= 0:
        raise ImageError(f"corrupt {fmt.upper()}: header says {width}x{height} pixels")
    if width * height > max_pixels:
        raise ImageError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels", 413)
    flags = cv2.IMREAD_COLOR | (cv2.IMREAD_ANYDEPTH if keep_16bit else 0)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if bgr is None:
        raise ImageError(f"corrupt {fmt.upper()}: the image data could not be decoded ({len(data)} bytes)")
    # OpenCV applies an EXIF orientation: a rotated (portrait phone) photo decodes transposed.
    if bgr.shape[:2] not in ((height, width), (width, height)) or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ImageError(f"corrupt {fmt.upper()}: decoded shape {bgr.shape} does not match the header {width}x{height}")
    if bgr.dtype != np.uint8 and not (keep_16bit and bgr.dtype == np.uint16):
        raise ImageError(f"unsupported {fmt.upper()} sample type {bgr.dtype}", 415)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
