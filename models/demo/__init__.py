"""The demo model served by `make serve`: a JEPA world model trained on models/demo/world.py."""

from models.demo.model import (
    DEFAULT_WEIGHTS,
    DEMO_ACTION_BOUND,
    DEMO_MEAN,
    DEMO_STD,
    ClipEncoder,
    ClipEncoderConfig,
    DemoModel,
    build_demo_model,
    load_demo_model,
    save_demo_model,
)

__all__ = [
    "DEFAULT_WEIGHTS", "DEMO_ACTION_BOUND", "DEMO_MEAN", "DEMO_STD", "ClipEncoder", "ClipEncoderConfig", "DemoModel",
    "build_demo_model", "load_demo_model", "save_demo_model",
]
