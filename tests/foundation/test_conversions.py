"""sensor_msgs Image / CompressedImage <-> numpy, including padded rows and every error case."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from ember.ros.conversions import (
    compressed_to_rgb,
    image_msg_to_rgb,
    image_to_numpy,
    numpy_to_image,
    rgb_to_compressed,
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("encoding", "pixels", "expected_rgb"),
    [
        ("rgb8", RGB, RGB),
        ("bgr8", RGB[:, :, ::-1], RGB),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
        ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
        ("mono8", RGB[:, :, 0], np.repeat(RGB[:, :, :1], 3, axis=2)),
    ],
)
@pytest.mark.parametrize("padding", [0, 3])
def test_raw_round_trip(encoding, pixels, expected_rgb, padding):
    msg = numpy_to_image(pixels, encoding, row_padding=padding)
    assert msg.step == pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1) + padding
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), expected_rgb)


def test_16uc1_little_and_big_endian_with_padding():
    depth = RNG.integers(0, 65535, (4, 6), dtype=np.uint16)
    little = numpy_to_image(depth, "16UC1", row_padding=2)
    np.testing.assert_array_equal(image_to_numpy(little), depth)

    big = Image(height=4, width=6, encoding="16UC1", is_bigendian=1, step=6 * 2 + 4)
    rows = np.concatenate([depth.astype(">u2").view(np.uint8).reshape(4, 12), np.zeros((4, 4), np.uint8)], axis=1)
    big.data = rows.tobytes()
    out = image_to_numpy(big)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)
    rgb = image_msg_to_rgb(big)
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8


def test_padded_step_bytes_are_ignored():
    msg = numpy_to_image(RGB, "rgb8", row_padding=5)
    data = bytearray(msg.data)
    for row in range(msg.height):  # garbage in the padding must not leak into pixels
        data[row * msg.step + 21 : (row + 1) * msg.step] = b"\xff" * 5
    msg.data = bytes(data)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_round_trip(fmt):
    smooth = cv2.GaussianBlur(cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_LINEAR), (5, 5), 0)
    msg = rgb_to_compressed(smooth, fmt)
    assert msg.format == fmt
    out = compressed_to_rgb(msg)
    assert out.shape == smooth.shape
    if fmt == "png":
        np.testing.assert_array_equal(out, smooth)
    else:
        assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 6


def _raw(**overrides) -> Image:
    msg = numpy_to_image(RGB, "rgb8")
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (_raw(encoding="yuv422_weird"), "unknown image encoding 'yuv422_weird'"),
        (_raw(data=bytes(10)), "data length 10 does not match height*step"),
        (_raw(step=20), "step 20 is smaller than width*channels*bytes"),
        (_raw(width=0, step=0, data=b""), "zero size"),
        (_raw(height=0, data=b""), "zero size"),
    ],
)
def test_raw_errors_name_the_problem(msg, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("(", r"\(")):
        image_msg_to_rgb(msg)


def test_corrupt_and_empty_compressed_bytes():
    with pytest.raises(ValueError, match="corrupt compressed image"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8\xff not a jpeg at all"))
    with pytest.raises(ValueError, match="compressed image is empty"):
        compressed_to_rgb(CompressedImage(format="png", data=b""))
    with pytest.raises(ValueError, match="unknown compressed format"):
        rgb_to_compressed(RGB, "gif")


def test_a_compressed_image_too_large_to_decode_is_refused_from_its_header():
    """A PNG of a few KB can declare 30000 x 30000 pixels (2.7 GB decoded): refused before decoding."""
    png = rgb_to_compressed(np.zeros((8, 8, 3), np.uint8), "png")
    raw = bytearray(png.data.tobytes() if hasattr(png.data, "tobytes") else bytes(png.data))
    raw[16:24] = (30000).to_bytes(4, "big") * 2  # IHDR width and height
    with pytest.raises(ValueError, match="30000x30000 pixels exceeds the limit"):
        compressed_to_rgb(CompressedImage(format="png", data=bytes(raw)))
    assert compressed_to_rgb(png, max_pixels=64).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="exceeds the limit of 63 pixels"):
        compressed_to_rgb(png, max_pixels=63)
    with pytest.raises(ValueError, match="corrupt compressed image .*neither JPEG nor PNG"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"GIF89a not a camera frame"))


def test_array_that_does_not_fit_the_encoding():
    with pytest.raises(ValueError, match="does not fit encoding 'rgba8'"):
        numpy_to_image(RGB, "rgba8")


def test_integer_arrays_that_fit_the_encoding_are_accepted():
    wide = RGB.astype(np.int64)  # e.g. the result of integer arithmetic on a uint8 image
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(wide, "rgb8")), RGB)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(RGB[:, :, 0], "mono16")), RGB[:, :, 0])


@pytest.mark.parametrize(
    ("pixels", "encoding"),
    [
        (RGB.astype(np.float32) / 255.0, "rgb8"),  # a float image in [0, 1] would become all zeros
        (RGB.astype(np.int64) + 200, "rgb8"),  # 300 would wrap to 44
        (np.full((2, 3), -1, np.int32), "16UC1"),  # -1 would wrap to 65535
    ],
    ids=["float-0-1", "int-over-255", "negative-depth"],
)
def test_values_the_encoding_cannot_hold_are_refused_not_wrapped(pixels, encoding):
    with pytest.raises(ValueError, match="cannot hold"):
        numpy_to_image(pixels, encoding)


@pytest.mark.parametrize(
    "rgb", [RGB.astype(np.float32) / 255.0, RGB.astype(np.uint16) * 200, RGB[:, :, 0]], ids=["float", "uint16", "2d"]
)
def test_compressing_anything_but_uint8_rgb_is_a_clear_error(rgb):
    with pytest.raises(ValueError, match="uint8 RGB"):
        rgb_to_compressed(rgb, "png")


def test_a_16bit_png_frame_is_stretched_like_the_same_raw_frame():
    """A mono16/16UC1 camera on the compressed transport sends a 16-bit PNG ("mono16; png compressed
    mono16"): it must look like the same frame sent raw (stretched to its peak), not be cut to its
    high byte (a 12-bit thermal or millimetre depth frame would come out almost black)."""
    depth = RNG.integers(0, 4096, (6, 8), dtype=np.uint16)  # 12-bit data
    ok, png = cv2.imencode(".png", depth)
    assert ok
    msg = CompressedImage(format="mono16; png compressed mono16", data=png.tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(msg), image_msg_to_rgb(numpy_to_image(depth, "mono16")))
    colour16 = np.dstack([depth, depth // 2, depth // 4])  # a 16-bit colour PNG (BGR order in the file)
    ok, png = cv2.imencode(".png", colour16)
    out = compressed_to_rgb(CompressedImage(format="png", data=png.tobytes()))
    assert out.dtype == np.uint8 and out.max() == 255
    assert (out[:, :, 2] >= out[:, :, 0]).all()  # the file's first channel (blue) is the brightest


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth", "32FC1; compressedDepth png", "16UC1; compressedDepth rvl"])
def test_compressed_depth_is_refused_as_unsupported_not_called_corrupt(fmt):
    """compressedDepth (a 12-byte depth header before PNG or RVL data) is a format the node does not
    decode: it must say so, not report every frame of a healthy depth camera as corrupt."""
    ok, png = cv2.imencode(".png", RNG.integers(0, 5000, (6, 8), dtype=np.uint16))
    msg = CompressedImage(format=fmt, data=bytes(12) + png.tobytes())
    with pytest.raises(ValueError, match="unsupported compressed format .*compressedDepth") as info:
        compressed_to_rgb(msg)
    assert "corrupt" not in str(info.value)
    from ember.ros.incident_node import error_kind

    assert error_kind(info.value) == "unsupported_compressed"


# Solid colours, so every demosaicing / chroma-upsampling scheme must reproduce them exactly.
BLOCKS = np.zeros((8, 12, 3), np.uint8)
BLOCKS[:4, :6] = (230, 20, 20)  # red
BLOCKS[:4, 6:] = (20, 200, 30)  # green
BLOCKS[4:, :6] = (25, 30, 220)  # blue
BLOCKS[4:, 6:] = (240, 230, 40)  # yellow


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The raw sensor values of a Bayer camera with colour filters `pattern` (e.g. 'rggb': top-left
    2x2 cell is R G / G B) looking at `rgb`."""
    out = np.empty(rgb.shape[:2], np.uint8)
    for i, colour in enumerate(pattern):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return out


def _interior(rgb: np.ndarray) -> np.ndarray:
    """The centre 2x2 of each colour block (away from block edges, where demosaicing blends)."""
    return np.stack([rgb[y : y + 2, x : x + 2] for y in (1, 5) for x in (2, 8)])


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("padding", [0, 4])
def test_bayer_frames_are_demosaiced_with_the_right_colours(pattern, padding):
    """Industrial cameras publish the raw sensor mosaic (bayer_rggb8 ...); each pattern must give the
    scene's colours, not red and blue swapped or green-tinted."""
    msg = numpy_to_image(_mosaic(BLOCKS, pattern), "mono8", row_padding=padding)
    msg.encoding = f"bayer_{pattern}8"
    out = image_msg_to_rgb(msg)
    assert out.shape == BLOCKS.shape and out.dtype == np.uint8
    np.testing.assert_allclose(_interior(out).astype(int), _interior(BLOCKS).astype(int), atol=2)


def _yuv(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range ("studio swing", as UVC cameras send) Y, U, V of uint8 RGB, as uint8 (H, W, 3)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    y = 16 + luma * 219 / 255
    u = 128 + (b - luma) / 1.772 * 224 / 255
    v = 128 + (r - luma) / 1.402 * 224 / 255
    return np.clip(np.rint(np.stack([y, u, v], axis=-1)), 0, 255).astype(np.uint8)


def _pack_422(rgb: np.ndarray, order: str) -> np.ndarray:
    """4:2:2 packed bytes (H, W*2) in `order` ('uyvy' or 'yuyv'), chroma of the left pixel of a pair."""
    yuv = _yuv(rgb)
    h, w = rgb.shape[:2]
    planes = {"y0": yuv[:, 0::2, 0], "y1": yuv[:, 1::2, 0], "u": yuv[:, 0::2, 1], "v": yuv[:, 0::2, 2]}
    names = ["u", "y0", "v", "y1"] if order == "uyvy" else ["y0", "u", "y1", "v"]
    return np.stack([planes[n] for n in names], axis=-1).reshape(h, w * 2)


@pytest.mark.parametrize(
    ("encoding", "order"), [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")]
)
def test_packed_yuv422_frames_keep_their_colours(encoding, order):
    """USB (UVC) cameras send 4:2:2 YUV; ROS's yuv422 is UYVY and yuv422_yuy2 is YUYV."""
    packed = _pack_422(BLOCKS, order)
    msg = Image(height=8, width=12, encoding=encoding, step=12 * 2 + 6)
    msg.data = np.concatenate([packed, np.full((8, 6), 77, np.uint8)], axis=1).tobytes()
    out = image_msg_to_rgb(msg)
    assert out.shape == BLOCKS.shape and out.dtype == np.uint8
    np.testing.assert_allclose(out.astype(int), BLOCKS.astype(int), atol=3)


def test_a_yuv422_frame_of_odd_width_is_refused():
    msg = Image(height=2, width=3, encoding="yuv422", step=6, data=bytes(12))
    with pytest.raises(ValueError, match="odd width 3"):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize("encoding", ["8UC3", "nv21", "bayer_rggb16", "32FC1"])
def test_ambiguous_or_unsupported_encodings_stay_refused(encoding):
    """8UC3 says nothing of the channel order (cv_bridge refuses to colour-convert it too), nv21 has
    no agreed row layout in a sensor_msgs/Image: refused by name rather than guessed."""
    msg = Image(height=2, width=2, encoding=encoding, step=24, data=bytes(48))
    with pytest.raises(ValueError, match=f"unknown image encoding '{encoding}'"):
        image_msg_to_rgb(msg)
