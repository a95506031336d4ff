"""INT8 quantization: static QDQ per-channel for vision.onnx, dynamic QUInt8 for decoder.onnx."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
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
    """Feeds calibration images one at a time."""

    def __init__(self, batch: np.ndarray, input_name: str = "pixel_values") -> None:
        self._items = iter([{input_name: batch[i : i + 1]} for i in range(len(batch))])

    def get_next(self):
        return next(self._items, None)


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice on the root logger; keep it out of the export output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_vision(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray) -> Path:
    """Static QDQ INT8: per-channel symmetric int8 weights, uint8 activations calibrated on images.

    Convolutions and matrix products carry the compute; they are the quantized ops
    (GELU/SE/LayerNorm stay FP32, which keeps accuracy and avoids extra Q/DQ pairs).
    """
    if len(calibration) == 0:
        raise ValueError("static quantization needs at least one calibration image")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(fp32_path)
        try:  # shape inference + graph cleanup, as onnxruntime recommends before quantizing
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = Path(tmp) / "vision_pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception as exc:  # pre-processing is an optimisation only
            log.warning("quant_pre_process skipped for vision: %s", exc)
        with _quiet_root_logger():
            quantize_static(
                str(src),
                str(out_path),
                _ArrayReader(calibration.astype(np.float32)),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
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
