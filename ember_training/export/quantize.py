"""INT8 quantization: static QDQ per-channel for vision.onnx, dynamic QUInt8 for decoder.onnx."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

log = logging.getLogger(__name__)


class _ArrayReader(CalibrationDataReader):
    """Feeds calibration images one at a time; `set_range` limits it to a slice (strided calibration)."""

    def __init__(self, batch: np.ndarray, input_name: str = "pixel_values") -> None:
        self._batch, self._name = batch, input_name
        self.set_range(0, len(batch))

    def __len__(self) -> int:
        return len(self._batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter([{self._name: self._batch[i : i + 1]} for i in range(start_index, end_index)])

    def get_next(self):
        return next(self._items, None)


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice on the root logger and its histogram calibrators
    print to stdout; keep both out of the export output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


KEEP_FLOAT_GROUPS = ("first_conv", "depthwise", "head")
GELU_MODES = ("qlinear", "float")
"""How the quantized vision graph runs GELU: `qlinear` x * sigmoid(1.702 x) on the quantized tensor
(quantize_gelus), `float` dequantize -> exact GELU -> quantize."""
SIGMOID_GELU_ALPHA = 1.702  # x * sigmoid(1.702 x): GELU within 0.021 everywhere
"""Parts of vision.onnx a recipe may leave in float: the convolution reading the pixels, the
depthwise convolutions (group > 1: RepViT's token mixers and spatial downsampling, which read the
residual stream), and the MatMul/Gemm nodes after the last convolution (token pooling and the
fusion projection/adapter)."""


@dataclass(frozen=True)
class VisionRecipe:
    """How vision.onnx is statically quantized (QDQ): onnxruntime's quantize_static levers.

    `activation_type`/`weight_type` are QuantType names, `calibrate_method` a CalibrationMethod
    name, `percentile` the share of |activations| a Percentile range keeps, `symmetric_ranges`
    centres calibrated ranges on 0, `keep_float` names from KEEP_FLOAT_GROUPS, `pre_process` one of
    none | fast (no symbolic shape inference) | full, `calibration_stride` images per calibration
    pass (histograms hold every activation of a pass in memory), `extra_options` further
    quantize_static options (e.g. QuantizeBias).

    The defaults (bench/int8_vision.py measured them against the earlier MinMax recipe on the demo
    model): depthwise convolutions in float but the first 4 (the high-resolution ones: in float they
    raised the engine's peak RSS by ~2 MiB, with no measurable gain), activation ranges at the 99.99th
    percentile. A trained
    RepViT's residual stream is heavy-tailed (its largest values are 6-13x its standard deviation):
    min/max ranges spend the 256 uint8 steps on a few values, and the depthwise convolutions, which
    read that stream, were the most sensitive quantized inputs."""

    per_channel: bool = True
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    calibrate_method: str = "Percentile"
    percentile: float = 99.99
    symmetric_ranges: bool = False
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    keep_float: tuple[str, ...] = ("depthwise",)
    quantized_depthwise_first: int = 4
    """the first this many depthwise convolutions (the high-resolution ones, whose float activations
    are the largest) stay quantized even when keep_float has depthwise"""
    pre_process: str = "fast"
    op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
    calibration_stride: int = 4
    extra_options: tuple[tuple[str, Any], ...] = ()
    reduce_range: bool = True
    """7-bit weights (quantize_static's reduce_range). onnxruntime's u8 x s8 integer kernels on x86
    without VNNI (AVX2 only: many x86 robot computers) add int8 products pairwise into int16, which
    saturates with full-range weights. Measured on an AVX2-only AMD EPYC with a demo-size trained
    checkpoint (bench/int8_vision.py): visual-embedding cosine to FP32 mean/min 0.937/0.859 and
    incident agreement 0.955 with 8-bit weights, 0.980/0.967 and 1.000 with 7-bit, vision 8% faster.
    The QDQ graph run as written (no integer kernels) agrees at 0.99995 on the tiny model either way."""
    gelu: str = "qlinear"
    """GELU_MODES: `qlinear` (bench/int8_vision.py on the demo model: mean/min visual-embedding
    cosine 0.978/0.957 against 0.976/0.952 with `float`, vision 16% faster, and the float activations
    around each GELU, the largest tensors of a vision run, are gone: -0.7 MiB of the engine's peak RSS)"""

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("activation_type", self.activation_type, QuantType.__members__),
            ("weight_type", self.weight_type, QuantType.__members__),
            ("calibrate_method", self.calibrate_method, CalibrationMethod.__members__),
            ("pre_process", self.pre_process, ("none", "fast", "full")),
            ("gelu", self.gelu, GELU_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"vision recipe: {name} must be one of {', '.join(allowed)}, got {value!r}")
        bad = [g for g in self.keep_float if g not in KEEP_FLOAT_GROUPS]
        if bad:
            raise ValueError(f"vision recipe: keep_float takes {', '.join(KEEP_FLOAT_GROUPS)}, got {bad}")
        if not 0.0 < self.percentile <= 100.0 or self.calibration_stride < 1:
            raise ValueError(f"vision recipe: percentile must be in (0, 100] and calibration_stride >= 1, got "
                             f"{self.percentile}, {self.calibration_stride}")

    def quantize_static_options(self) -> dict[str, Any]:
        """quantize_static's extra_options for this recipe."""
        extra: dict[str, Any] = {
            "ActivationSymmetric": self.activation_symmetric,
            "WeightSymmetric": self.weight_symmetric,
            "CalibTensorRangeSymmetric": self.symmetric_ranges,
            "CalibPercentile": self.percentile,
        }
        extra.update(dict(self.extra_options))
        return extra


DEFAULT_VISION_RECIPE = VisionRecipe()


def float_nodes(model: onnx.ModelProto, groups: tuple[str, ...], quantized_depthwise_first: int = 0) -> list[str]:
    """Names of the nodes of `groups` (KEEP_FLOAT_GROUPS) in a vision graph; unnamed nodes are named."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    nodes = list(model.graph.node)
    inputs = {i.name for i in model.graph.input}
    names: list[str] = []
    if "first_conv" in groups:
        names += [n.name for n in nodes if n.op_type == "Conv" and n.input[0] in inputs][:1]
    if "depthwise" in groups:
        names += [n.name for n in nodes if n.op_type == "Conv"
                  and any(a.name == "group" and a.i > 1 for a in n.attribute)][quantized_depthwise_first:]
    if "head" in groups:
        last_conv = max((i for i, n in enumerate(nodes) if n.op_type == "Conv"), default=-1)
        names += [n.name for n in nodes[last_conv + 1 :] if n.op_type in ("MatMul", "Gemm")]
    return names


def _scalar_initializer(inits: dict[str, onnx.TensorProto], name: str) -> np.ndarray | None:
    t = inits.get(name)
    if t is None:
        return None
    value = numpy_helper.to_array(t)
    return value if value.size == 1 else None


def quantize_gelus(model: onnx.ModelProto) -> int:
    """Replace each DequantizeLinear -> Gelu -> QuantizeLinear chain of a QDQ graph (per-tensor
    quantization) by x * sigmoid(1.702 x) on the quantized tensor: com.microsoft QLinearSigmoid (its
    input scale times 1.702; output in [0, 1] over 255 steps) and QLinearMul. No float tensor is left
    between the two quantized tensors. Returns the number of chains replaced; edits `model` in place."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id(DequantizeLinear) -> its replacement
    removed: set[int] = set()
    new_inits: list[onnx.TensorProto] = []
    sigmoid_out: dict[int, tuple[str, str]] = {}  # zero-point dtype -> (scale, zero point) names
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx") or len(node.input) != 3:
            continue
        gelu = consumers.get(node.output[0], [])
        if len(gelu) != 1 or gelu[0].op_type != "Gelu" or node.output[0] in outputs:
            continue
        gelu = gelu[0]
        quant = consumers.get(gelu.output[0], [])
        if (len(quant) != 1 or quant[0].op_type != "QuantizeLinear" or len(quant[0].input) != 3
                or gelu.output[0] in outputs or any(a.name == "approximate" and a.s != b"none" for a in gelu.attribute)):
            continue
        quant = quant[0]
        scale, zero = (_scalar_initializer(inits, n) for n in node.input[1:])
        if scale is None or zero is None or any(_scalar_initializer(inits, n) is None for n in quant.input[1:]):
            continue  # per-channel or computed parameters: left as they are
        if zero.dtype not in sigmoid_out:
            base = f"gelu_sigmoid_{zero.dtype.name}"
            sigmoid_zero = np.array(np.iinfo(zero.dtype).min, zero.dtype)  # [0, 1] over the type's 255 steps
            new_inits += [numpy_helper.from_array(np.array(1.0 / 255.0, np.float32), f"{base}_scale"),
                          numpy_helper.from_array(sigmoid_zero, f"{base}_zero_point")]
            sigmoid_out[zero.dtype] = (f"{base}_scale", f"{base}_zero_point")
        s_scale, s_zero = sigmoid_out[zero.dtype]
        x, x_scale, x_zero = node.input
        alpha_scale = f"{node.output[0]}_sigmoid_scale"
        new_inits.append(numpy_helper.from_array(
            (scale.astype(np.float32) * np.float32(SIGMOID_GELU_ALPHA)).reshape(scale.shape), alpha_scale))
        sig = f"{node.output[0]}_sigmoid"
        replaced[id(node)] = [
            helper.make_node("QLinearSigmoid", [x, alpha_scale, x_zero, s_scale, s_zero], [sig],
                             name=f"{gelu.name or sig}_sigmoid", domain="com.microsoft"),
            helper.make_node("QLinearMul", [x, x_scale, x_zero, sig, s_scale, s_zero, *quant.input[1:]],
                             [quant.output[0]], name=f"{gelu.name or sig}_mul", domain="com.microsoft"),
        ]
        removed |= {id(gelu), id(quant)}
    if not replaced:
        return 0
    nodes = []
    for node in graph.node:
        if id(node) in replaced:
            nodes += replaced[id(node)]
        elif id(node) not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def _pre_process(src: Path, dst: Path, mode: str) -> Path:
    """onnxruntime's recommended shape inference + graph cleanup before quantizing (`mode` fast:
    no symbolic shape inference); the source itself when that fails (an optimisation only)."""
    if mode == "none":
        return src
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(src), str(dst), skip_symbolic_shape=mode == "fast")
        return dst
    except Exception as exc:
        log.warning("quant_pre_process skipped for vision: %s", exc)
        return src


def quantize_vision(
    fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray, recipe: VisionRecipe = DEFAULT_VISION_RECIPE
) -> Path:
    """Static QDQ INT8 of `recipe` (default: per-channel symmetric int8 weights, uint8 activations
    calibrated on images at the 99.99th percentile, depthwise convolutions but the first 4 in float,
    GELU on the quantized tensors).

    Convolutions and matrix products carry the compute; they are the quantized ops (SE/LayerNorm
    stay FP32). GELU, between two quantized convolutions, runs on their quantized tensors
    (quantize_gelus) unless recipe.gelu is "float".
    """
    if len(calibration) == 0:
        raise ValueError("static quantization needs at least one calibration image")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        src = _pre_process(Path(fp32_path), Path(tmp) / "vision_pre.onnx", recipe.pre_process)
        exclude = (float_nodes(onnx.load(str(src)), recipe.keep_float, recipe.quantized_depthwise_first)
                   if recipe.keep_float else [])
        extra = recipe.quantize_static_options()
        # one pass per `calibration_stride` images: the histogram calibrators keep every activation
        # of a pass in memory (about 40 MB per image for the demo model's encoder)
        stride = recipe.calibration_stride
        if len(calibration) % stride:
            stride = next(k for k in range(stride, 0, -1) if len(calibration) % k == 0)
        extra["CalibStridedMinMax"] = stride
        with _quiet_root_logger():
            quantize_static(
                str(src),
                str(out_path),
                _ArrayReader(calibration.astype(np.float32)),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(recipe.op_types),
                per_channel=recipe.per_channel,
                activation_type=QuantType[recipe.activation_type],
                weight_type=QuantType[recipe.weight_type],
                calibrate_method=CalibrationMethod[recipe.calibrate_method],
                nodes_to_exclude=exclude,
                reduce_range=recipe.reduce_range,
                extra_options=extra,
            )
    if recipe.gelu == "qlinear":
        model = onnx.load(str(out_path))
        if quantize_gelus(model):
            onnx.save(model, str(out_path))
        del model
    onnx.checker.check_model(str(out_path))
    return out_path


def quantize_decoder(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Dynamic QUInt8 for every weight MatMul and the embedding Gathers.

    The tied embedding is one initializer used by the token Gather and the LM-head MatMul,
    so the quantizer writes it once (uint8 + scale + zero point) and both nodes share it.
    """
    out_path = Path(out_path)
    with _quiet_root_logger():
        quantize_dynamic(
            str(fp32_path),
            str(out_path),
            weight_type=QuantType.QUInt8,
            per_channel=False,
            op_types_to_quantize=["MatMul", "Gather"],
        )
    onnx.checker.check_model(str(out_path))
    model = onnx.load(str(out_path), load_external_data=False)
    names = [i.name for i in model.graph.initializer]
    if "wte_t" in names:
        raise RuntimeError("decoder quantization kept an FP32 copy of the tied embedding")
    return out_path


def optimize_for_ort(src: str | Path, dst: str | Path) -> Path:
    """Apply onnxruntime's hardware-independent (EXTENDED) graph optimizations offline.

    QDQ pairs become QLinearConv, MatMul chains DynamicQuantizeMatMul, LayerNorm/GELU are
    fused: the robot loads a graph with fewer nodes, sooner and with a lower peak. The
    hardware-specific level (layouts) is left to the robot's own session.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return Path(dst)
