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
