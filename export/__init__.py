"""PyTorch -> ONNX -> model-repository entries. Knows nothing of HTTP."""
