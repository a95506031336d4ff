"""Export EmberVLM to the robots' ONNX bundle (DESIGN §4)."""

from ember_training.export.bundle_writer import (
    ExportError,
    ExportOptions,
    bundle_size_bytes,
    export_bundle,
)

__all__ = ["ExportError", "ExportOptions", "bundle_size_bytes", "export_bundle"]
