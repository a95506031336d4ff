"""EmberVLM, one module per component (nanoVLM style)."""

from ember_training.model.config import ModelConfig
from ember_training.model.ember_vlm import EmberVLM, EmberVLMOutput, GenerationOutput
from ember_training.model.params import count_parameters, format_param_table

__all__ = [
    "EmberVLM",
    "EmberVLMOutput",
    "GenerationOutput",
    "ModelConfig",
    "count_parameters",
    "format_param_table",
]
