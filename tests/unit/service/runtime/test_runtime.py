import shutil

import numpy as np
import onnxruntime as ort
import pytest

from service.runtime.gpu import engine_cache_key, slug
from service.runtime.onnx import OrtEngine, available_providers, choose_precision, profile_shapes, tensorrt_options

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_GPU = shutil.which("nvidia-smi") is not None


def test_cpu_is_always_the_fallback():
    assert available_providers("auto")[-1] == "CPUExecutionProvider"
    assert available_providers("tensorrt")[-1] == "CPUExecutionProvider"


def test_precision_rules():
    assert choose_precision("auto", ["CPUExecutionProvider"], has_fp16=True) == "fp32"
    assert choose_precision("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], has_fp16=True) == "fp16"
    assert choose_precision("auto", ["CUDAExecutionProvider"], has_fp16=False) == "fp32"
    assert choose_precision("fp16", ["CPUExecutionProvider"], has_fp16=True) == "fp16"
    assert choose_precision("fp32", ["CUDAExecutionProvider"], has_fp16=True) == "fp32"


def test_tensorrt_profiles_cover_every_dynamic_input(tmp_path):
    inputs = {"state": [-1, 128], "action": [-1, 2]}
    assert profile_shapes(inputs, 8) == "state:8x128,action:8x2"
    options = tensorrt_options(inputs, tmp_path, "fp16", 32, 16, "10.9.0")
    assert options["trt_profile_max_shapes"] == "state:32x128,action:32x2"
    assert options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_path"].startswith(str(tmp_path))


def test_engine_cache_key_names_gpu_and_version():
    assert engine_cache_key("10.9.0.34", gpu="NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3-trt10-9-0-34"
    assert slug("A/B c") == "a-b-c"


def demo_input(demo_repository, batch: int, seed: int) -> dict:
    """A random batch of the shape the demo manifest declares for its encoder."""
    import json

    manifest = json.loads((demo_repository / "demo" / "manifest.json").read_text())
    shape = manifest["components"]["encoder"]["inputs"]["pixel_values"][1:]
    return {"pixel_values": np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)}


def test_fp16_artifact_on_cpu_runs_and_matches_fp32(demo_repository):
    """The fp16 file is served on GPUs; on CPU we can still check it loads and agrees with fp32."""
    folder = demo_repository / "demo"
    fp32 = OrtEngine("demo/encoder", folder / "encoder.onnx", ["CPUExecutionProvider"], "fp32")
    fp16 = OrtEngine("demo/encoder", folder / "encoder.fp16.onnx", ["CPUExecutionProvider"], "fp16")
    x = demo_input(demo_repository, 4, 0)
    a, b = fp32.run(x)["pooled"], fp16.run(x)["pooled"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA execution provider (CPU-only onnxruntime or no GPU on this machine)")
def test_cuda_fp16_parity_on_gpu(demo_repository):
    folder = demo_repository / "demo"
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    gpu = OrtEngine("demo/encoder", folder / "encoder.fp16.onnx", providers, "fp16")
    cpu = OrtEngine("demo/encoder", folder / "encoder.onnx", ["CPUExecutionProvider"], "fp32")
    assert gpu.device == "CUDAExecutionProvider"
    x = demo_input(demo_repository, 8, 1)
    a, b = cpu.run(x)["pooled"], gpu.run(x)["pooled"]
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.999


@pytest.mark.skipif(not HAS_GPU, reason="no NVIDIA GPU on this machine: the native TensorRT runtime cannot run")
def test_native_tensorrt_engine_matches_onnx(demo_repository, tmp_path):
    pytest.importorskip("tensorrt", reason="tensorrt not installed (gpu extra)")
    from service.runtime.tensorrt import TensorRTEngine

    folder = demo_repository / "demo"
    x = demo_input(demo_repository, 5, 2)
    engine = TensorRTEngine("demo/encoder", folder / "encoder.fp16.onnx", tmp_path, "fp16",
                            {"pixel_values": [-1, *x["pixel_values"].shape[1:]]}, 16, 8)
    cpu = OrtEngine("demo/encoder", folder / "encoder.onnx", ["CPUExecutionProvider"], "fp32")
    a, b = cpu.run(x)["pooled"], engine.run(x)["pooled"]
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.999
