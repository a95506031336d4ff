"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Raw images honour `step` (row padding) and `is_bigendian`; every malformed message
raises ValueError naming the problem, so callers can count and report it. Raw encodings:
rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1, bayer_{rggb,bggr,gbrg,grbg}8 and packed
4:2:2 YUV (yuv422 = uyvy, yuv422_yuy2 = yuyv). Ambiguous or non-camera ones (8UC3, which
does not say the channel order; nv21; 32FC1 depth) are refused by name, as is compressedDepth.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ember.serve.images import DEFAULT_MAX_PIXELS, ImageError, decode_image  # cv2 and numpy only


@dataclass(frozen=True)
class _Encoding:
    channels: int
    dtype: np.dtype


ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, np.dtype(np.uint8)),
    "bgr8": _Encoding(3, np.dtype(np.uint8)),
    "mono8": _Encoding(1, np.dtype(np.uint8)),
    "rgba8": _Encoding(4, np.dtype(np.uint8)),
    "bgra8": _Encoding(4, np.dtype(np.uint8)),
    "16UC1": _Encoding(1, np.dtype(np.uint16)),
    "mono16": _Encoding(1, np.dtype(np.uint16)),
    # raw sensor mosaics: the name gives the colour filters of the top-left 2x2 cell
    "bayer_rggb8": _Encoding(1, np.dtype(np.uint8)),
    "bayer_bggr8": _Encoding(1, np.dtype(np.uint8)),
    "bayer_gbrg8": _Encoding(1, np.dtype(np.uint8)),
    "bayer_grbg8": _Encoding(1, np.dtype(np.uint8)),
    # packed 4:2:2 YUV (two bytes a pixel): ROS's yuv422 is UYVY, yuv422_yuy2 is YUYV
    "yuv422": _Encoding(2, np.dtype(np.uint8)),
    "uyvy": _Encoding(2, np.dtype(np.uint8)),
    "yuv422_yuy2": _Encoding(2, np.dtype(np.uint8)),
    "yuyv": _Encoding(2, np.dtype(np.uint8)),
}
# cv2 colour conversion to RGB of each 8-bit encoding (OpenCV names Bayer patterns by the
# 2x2 cell starting at the second row and column: ROS rggb is OpenCV BG).
_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV,
}
COMPRESSED_FORMATS = ("jpeg", "png")


def _encoding(name: str) -> _Encoding:
    enc = ENCODINGS.get(name)
    if enc is None:
        raise ValueError(f"unknown image encoding {name!r}; supported: {', '.join(ENCODINGS)}")
    return enc


def image_to_numpy(msg) -> np.ndarray:
    """Pixels of a sensor_msgs/Image as an array in the message's own encoding.

    Returns (H, W) for one channel, (H, W, C) otherwise; native byte order.
    """
    enc = _encoding(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image has zero size: width={width} height={height}")
    if enc.channels == 2 and width % 2:
        raise ValueError(f"{msg.encoding} image has odd width {width} (4:2:2 YUV packs pixel pairs)")
    row_bytes = width * enc.channels * enc.dtype.itemsize
    if step < row_bytes:
        raise ValueError(
            f"image step {step} is smaller than width*channels*bytes = {width}*{enc.channels}*{enc.dtype.itemsize} = {row_bytes}"
        )
    data = msg.data
    buf = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
    if len(buf) != height * step:
        raise ValueError(f"image data length {len(buf)} does not match height*step = {height}*{step} = {height * step}")
    rows = np.frombuffer(buf, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    dtype = enc.dtype.newbyteorder(">" if msg.is_bigendian else "<") if enc.dtype.itemsize > 1 else enc.dtype
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, enc.channels)
    pixels = pixels.astype(enc.dtype.newbyteorder("="), copy=False)
    return pixels[:, :, 0] if enc.channels == 1 else pixels


def stretch_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit (depth, thermal, mono16) values scaled so the frame's peak becomes 255."""
    peak = int(pixels.max()) or 1
    return (pixels.astype(np.float32) * (255.0 / peak)).astype(np.uint8)


def to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an array in `encoding` to contiguous uint8 RGB (H, W, 3) for the model."""
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels)
    if encoding in _TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(pixels), _TO_RGB[encoding])
    if encoding in ("16UC1", "mono16"):
        return cv2.cvtColor(stretch_to_uint8(pixels), cv2.COLOR_GRAY2RGB)
    raise ValueError(f"unknown image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")


def image_msg_to_rgb(msg) -> np.ndarray:
    """A sensor_msgs/Image as uint8 RGB (H, W, 3)."""
    return to_rgb8(image_to_numpy(msg), msg.encoding)


def _check_values_fit(arr: np.ndarray, dtype: np.dtype, encoding: str) -> None:
    """ValueError unless every value of `arr` is stored exactly by `dtype` (no silent wrap or truncation)."""
    if np.can_cast(arr.dtype, dtype, "safe"):
        return
    info = np.iinfo(dtype)
    if arr.dtype.kind in "iu" and (arr.size == 0 or (int(arr.min()) >= info.min and int(arr.max()) <= info.max)):
        return
    raise ValueError(
        f"encoding {encoding!r} ({dtype}) cannot hold the values of a {arr.dtype} array"
        + (" (floats: scale and convert explicitly)" if arr.dtype.kind == "f" else f" (range {info.min}..{info.max})")
    )


def numpy_to_image(pixels: np.ndarray, encoding: str = "rgb8", header=None, row_padding: int = 0):
    """Build a sensor_msgs/Image from an array in `encoding` (optionally with padded rows)."""
    from sensor_msgs.msg import Image

    enc = _encoding(encoding)
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != enc.channels:
        raise ValueError(f"array of shape {pixels.shape} does not fit encoding {encoding!r} ({enc.channels} channels)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image has zero size: shape {pixels.shape}")
    _check_values_fit(arr, enc.dtype, encoding)
    arr = np.ascontiguousarray(arr.astype(enc.dtype, copy=False))
    height, width = arr.shape[:2]
    row_bytes = width * enc.channels * enc.dtype.itemsize
    rows = arr.reshape(height, row_bytes // enc.dtype.itemsize).view(np.uint8).reshape(height, row_bytes)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((height, row_padding), np.uint8)], axis=1)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = 0
    msg.step = row_bytes + row_padding
    msg.data = rows.tobytes()
    return msg


def compressed_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg or png) to uint8 RGB (H, W, 3), with the checks
    of an uploaded image (ember.serve.images.decode_image): the size is read from the header and
    bounded by `max_pixels` before decoding, so a few kilobytes of PNG on a camera topic cannot
    make a robot allocate gigabytes. The format is sniffed from the bytes (drivers write "jpeg",
    "rgb8; jpeg compressed bgr8", "png" or nothing); a 16-bit PNG is stretched like a raw 16-bit
    frame; compressedDepth is refused as unsupported."""
    if "compresseddepth" in str(msg.format).lower():
        raise ValueError(
            f"unsupported compressed format {msg.format!r} (compressedDepth); supported: {', '.join(COMPRESSED_FORMATS)}"
        )
    data = msg.data
    raw = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
    if not raw:
        raise ValueError("compressed image is empty")
    try:
        rgb = decode_image(raw, max_pixels=max_pixels, keep_16bit=True)
    except ImageError as exc:
        if exc.status == 413:  # "image of WxH pixels exceeds the limit of N pixels"
            raise ValueError(f"compressed {exc}") from None
        raise ValueError(f"corrupt compressed image ({len(raw)} bytes, format {msg.format!r}): {exc}") from None
    return rgb if rgb.dtype == np.uint8 else stretch_to_uint8(rgb)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header=None, quality: int = 90):
    """Encode uint8 RGB (H, W, 3) as a sensor_msgs/CompressedImage (jpeg or png)."""
    from sensor_msgs.msg import CompressedImage

    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"unknown compressed format {fmt!r}; supported: {', '.join(COMPRESSED_FORMATS)}")
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shown = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"rgb_to_compressed takes uint8 RGB (H, W, 3), got a {shown}")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"could not encode image of shape {rgb.shape} as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = encoded.tobytes()
    return msg
