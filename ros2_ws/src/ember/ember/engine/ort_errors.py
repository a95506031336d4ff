"""onnxruntime's model-load errors as one line a robot operator can act on.

onnxruntime reports a model it cannot load with its C++ source path, a function signature
and, for an unknown operator, every input of the node: hundreds of characters over two
lines. `describe_load_error` keeps what matters (the file is truncated, stamped with a newer
opset or IR version, or uses an operator this onnxruntime lacks) and says whether the file
was made for a newer onnxruntime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DETAIL = 240
_PREFIX = re.compile(r"^\s*\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_LOAD_FROM = re.compile(r"Load model from .*? failed:\s*")
_SOURCE = re.compile(r"\S*onnxruntime_src\S*:\d+\s+.*?\)\s+(?=[A-Z])")  # path:line + C++ signature
_OPSET = re.compile(r"Opset (\d+) is under development.*?domain (\S+) is till opset (\d+)", re.S)
_IR = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_NO_OP = re.compile(r"(?:No Op registered for|Could not find an implementation for) (\S+?)(?:\(\d+\))?(?=[\s,.]|$)")
# (lower case) from a path: "Protobuf parsing failed"; from bytes: "... because protobuf parsing failed"
_CORRUPT = ("protobuf parsing failed", "no graph was found", "modelproto does not have a graph")


@dataclass(frozen=True)
class LoadFailure:
    """What went wrong, in one line, and whether the file needs a newer onnxruntime."""

    detail: str
    needs_newer_runtime: bool = False
    corrupt: bool = False


def describe_load_error(exc: BaseException) -> LoadFailure:
    """One-line description of an onnxruntime InferenceSession load error."""
    text = " ".join(_SOURCE.sub("", _LOAD_FROM.sub("", _PREFIX.sub("", str(exc)))).split())
    if m := _OPSET.search(text):
        return LoadFailure(f"it is stamped with {m[2]} opset {m[1]}; this onnxruntime supports up to opset {m[3]}", True)
    if m := _IR.search(text):
        return LoadFailure(f"its ONNX IR version {m[1]} is newer than this onnxruntime reads (up to {m[2]})", True)
    if m := _NO_OP.search(text):
        return LoadFailure(f"operator {m[1]} is not implemented by this onnxruntime", True)
    if any(marker in text.lower() for marker in _CORRUPT):
        return LoadFailure("the file is truncated or corrupt (not a complete ONNX model)", corrupt=True)
    if len(text) > MAX_DETAIL:
        text = text[: MAX_DETAIL - 3].rstrip() + "..."
    return LoadFailure(text or type(exc).__name__)
