"""Inference engines behind one small protocol."""

from service.runtime.engine import Engine
from service.runtime.onnx import OrtEngine, available_providers, choose_precision

__all__ = ["Engine", "OrtEngine", "available_providers", "choose_precision"]
