"""The INT8 vision encoder runs its GELUs on the quantized tensors (VisionRecipe.gelu = "qlinear").

Each DequantizeLinear -> Gelu -> QuantizeLinear chain of the QDQ graph (float activations 4x the
uint8 ones: the largest live tensors of a vision run) becomes x * sigmoid(1.702 x) computed from
the uint8 tensor by onnxruntime's QLinearSigmoid and QLinearMul; gelu="float" keeps the float
chain. Real quantize_static and onnxruntime sessions; the quantized function is checked over every
uint8 input value against GELU."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember_training.export.calibration import calibration_batch, generated_images
from ember_training.export.onnx_export import export_vision
from ember_training.export.quantize import VisionRecipe, quantize_gelus, quantize_vision
from ember_training.testing import tiny_model


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    model = tiny_model(seed=0)
    cfg = model.config
    path = tmp_path_factory.mktemp("vision") / "vision_raw.onnx"
    export_vision(model, path)
    pixels = calibration_batch(generated_images(4, seed=0, size=96), cfg.image_size, cfg.image_mean, cfg.image_std)
    return path, pixels


def _ops(path) -> dict[str, int]:
    """Op type -> count; "dequantized Gelu": the Gelus that read a DequantizeLinear's output."""
    graph = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    ops: dict[str, int] = {}
    for n in graph.node:
        kinds = [n.op_type] + (["dequantized Gelu"] if n.op_type == "Gelu" and producer.get(n.input[0]) == "DequantizeLinear" else [])
        for kind in kinds:
            ops[kind] = ops.get(kind, 0) + 1
    return ops


def test_default_recipe_has_no_float_gelu_between_quantized_tensors(vision, tmp_path):
    path, pixels = vision
    float_ops = _ops(quantize_vision(path, tmp_path / "f.onnx", pixels, VisionRecipe(gelu="float")))
    chains = float_ops["dequantized Gelu"]  # all but the adapter's, after its float bias Add
    assert chains >= _ops(path)["Gelu"] - 1 > 0 and "QLinearSigmoid" not in float_ops
    ops = _ops(quantize_vision(path, tmp_path / "q.onnx", pixels))
    assert "dequantized Gelu" not in ops
    assert ops["QLinearSigmoid"] == ops["QLinearMul"] == chains


def _chain(x_scale: float, x_zp: int, y_scale: float, y_zp: int) -> onnx.ModelProto:
    """uint8 x -> DequantizeLinear -> Gelu -> QuantizeLinear -> uint8 y, as quantize_static writes it."""
    inits = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "xs"),
        numpy_helper.from_array(np.array(x_zp, np.uint8), "xz"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
        numpy_helper.from_array(np.array(y_zp, np.uint8), "yz"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
        helper.make_node("Gelu", ["xf"], ["gf"]),
        helper.make_node("QuantizeLinear", ["gf", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.UINT8, [256])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [256])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def test_quantized_gelu_is_within_one_step_of_gelu_over_every_input():
    x_scale, x_zp, y_scale, y_zp = 10.0 / 255, 102, 6.2 / 255, 7  # x in [-4, 6], y in [-0.17, 6]
    model = _chain(x_scale, x_zp, y_scale, y_zp)
    assert quantize_gelus(model) == 1
    assert [n.op_type for n in model.graph.node] == ["QLinearSigmoid", "QLinearMul"]
    x = np.arange(256, dtype=np.uint8)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    xf = (x.astype(np.float64) - x_zp) * x_scale
    gelu = xf * 0.5 * (1 + np.vectorize(math.erf)(xf / math.sqrt(2)))
    steps = np.abs((y.astype(np.float64) - y_zp) * y_scale - gelu) / y_scale
    assert steps.max() <= 1.5 and steps.mean() < 0.5, (steps.max(), steps.mean())


def test_bad_gelu_mode_is_one_line_error():
    with pytest.raises(ValueError) as exc:
        VisionRecipe(gelu="relu")
    assert "gelu must be one of" in str(exc.value) and "\n" not in str(exc.value)
