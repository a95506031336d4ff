"""The torch-free Ember engine (numpy, onnxruntime, tokenizers, opencv): DESIGN §4."""

from ember.engine.analysis import Analysis
from ember.engine.bundle import BundleError, load_bundle
from ember.engine.engine import EmberEngine
from ember.engine.preprocess import ImageError

__all__ = ["Analysis", "BundleError", "EmberEngine", "ImageError", "load_bundle"]
