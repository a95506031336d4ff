"""The vision encoder's INT8 recipe (bench/int8_vision.py chose it on the demo model): percentile
ranges, depthwise convolutions in float, recorded in bundle.json; recipes with bad values are
refused in one line. Real quantize_static runs through onnxruntime on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from ember_training.export.calibration import calibration_batch, generated_images
from ember_training.export.onnx_export import export_vision
from ember_training.export.quantize import DEFAULT_VISION_RECIPE, VisionRecipe, float_nodes, quantize_vision
from ember_training.testing import tiny_model


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    """The tiny model's FP32 vision.onnx and calibration inputs in which one value is extreme: a
    heavy tail like a trained encoder's activations have (its largest values 6-13x its standard
    deviation), put where a test can see it. Min/max ranges spend their 256 steps on it."""
    model = tiny_model(seed=0)
    cfg = model.config
    path = tmp_path_factory.mktemp("vision") / "vision_raw.onnx"
    export_vision(model, path)
    images = generated_images(6, seed=0, size=96)
    pixels = calibration_batch(images, cfg.image_size, cfg.image_mean, cfg.image_std)
    pixels[0, :, 20, 20] = 40.0  # the tail: 3 of 73728 calibration values
    return path, pixels


def _input_range(path) -> float:
    """Width of the uint8 range the quantized graph gives its pixel input."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "pixel_values")
    return float(inits[q.input[1]]) * 255


def test_default_recipe_keeps_depthwise_float_and_clips_the_tail(vision, tmp_path):
    path, pixels = vision
    out = quantize_vision(path, tmp_path / "q.onnx", pixels)
    every_depthwise = float_nodes(onnx.load(str(path)), ("depthwise",))
    depthwise = set(float_nodes(onnx.load(str(path)), ("depthwise",), DEFAULT_VISION_RECIPE.quantized_depthwise_first))
    assert depthwise and len(every_depthwise) - len(depthwise) == 4  # the 4 high-resolution ones stay quantized
    q = onnx.load(str(out))
    quantized = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    for node in (n for n in q.graph.node if n.op_type == "Conv"):  # float weights: depthwise only
        assert (node.name in depthwise) == (node.input[1] not in quantized), node.name
    minmax = quantize_vision(path, tmp_path / "minmax.onnx", pixels,
                             VisionRecipe(calibrate_method="MinMax", keep_float=()))
    assert _input_range(minmax) > 40.0  # min/max stretches to the tail
    assert _input_range(out) < 0.5 * _input_range(minmax)  # the percentile range does not


def test_default_recipe_agrees_with_fp32_on_images_not_calibrated_on(vision, tmp_path):
    """The recipe's QDQ graph run as written (dequantize, float op) and onnxruntime's fused integer
    kernels both agree with FP32 at cos > 0.99. With 8-bit weights the fused u8 x s8 kernels of an
    x86 CPU without VNNI saturate: 0.971 on an AVX2-only AMD EPYC for this very model, while the
    QDQ graph gave 0.99995 there; the recipe's 7-bit weights (reduce_range) give 0.99994."""
    path, pixels = vision
    out = quantize_vision(path, tmp_path / "q.onnx", pixels)
    held = calibration_batch(generated_images(4, seed=5, size=96), 64, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    fp32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    as_written = ort.SessionOptions()
    as_written.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    qdq = ort.InferenceSession(str(out), as_written, providers=["CPUExecutionProvider"])
    fused = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for i in range(len(held)):
        a = fp32.run(None, {"pixel_values": held[i : i + 1]})[0].ravel()
        for int8 in (qdq, fused):
            b = int8.run(None, {"pixel_values": held[i : i + 1]})[0].ravel()
            assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99


def test_bundle_records_the_vision_recipe(tiny_bundle):
    checks = json.loads((tiny_bundle / "bundle.json").read_text())["export_checks"]
    recipe = checks["vision_quantization"]
    assert recipe["calibrate_method"] == DEFAULT_VISION_RECIPE.calibrate_method == "Percentile"
    assert recipe["keep_float"] == ["depthwise"]
    assert recipe["reduce_range"] is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calibrate_method": "Best"}, "calibrate_method must be one of"),
        ({"keep_float": ("stem",)}, "keep_float takes first_conv, depthwise, head"),
        ({"percentile": 101.0}, "percentile must be in (0, 100]"),
        ({"activation_type": "QUInt9"}, "activation_type must be one of"),
    ],
)
def test_bad_recipe_is_one_line_error(kwargs, message):
    with pytest.raises(ValueError) as exc:
        VisionRecipe(**kwargs)
    assert message in str(exc.value) and "\n" not in str(exc.value)
