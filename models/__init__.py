"""PyTorch model code: architectures, checkpoint loaders and the demo world.

Only `export/` and the tests import this package; the service never does.
"""
