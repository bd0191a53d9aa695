"""The demo model served by `make serve`."""

from models.demo.model import DEMO_ACTION_BOUND, DEMO_MEAN, DEMO_STD, DemoModel, build_demo_model

__all__ = ["DEMO_ACTION_BOUND", "DEMO_MEAN", "DEMO_STD", "DemoModel", "build_demo_model"]
