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
    """A random batch of the shape and pixel dtype the demo manifest declares for its encoder."""
    import json

    manifest = json.loads((demo_repository / "demo" / "manifest.json").read_text())
    shape = manifest["components"]["encoder"]["inputs"]["pixel_values"][1:]
    assert manifest["input"]["dtype"] == "uint8"
    return {"pixel_values": np.random.default_rng(seed).integers(0, 256, (batch, *shape), np.uint8)}


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


def test_only_the_requested_outputs_reach_the_host(demo_repository):
    """The IO-bound path (the one a GPU takes), forced onto CPU memory: tokens asked for by nobody stay bound
    to 'device' buffers and are never handed over; the bytes handed to the host are the pooled vectors alone."""
    path = demo_repository / "demo" / "encoder.onnx"
    plain = OrtEngine("demo/encoder", path, ["CPUExecutionProvider"], "fp32")
    bound = OrtEngine("demo/encoder", path, ["CPUExecutionProvider"], "fp32", bind_device="cpu")
    x = demo_input(demo_repository, 4, 3)
    everything = plain.run(x)
    pooled_only = bound.run(x, ["pooled"])
    assert set(pooled_only) == {"pooled"}
    assert bound.host_bytes == everything["pooled"].nbytes
    assert bound.host_bytes < everything["tokens"].nbytes / 10
    np.testing.assert_allclose(pooled_only["pooled"], everything["pooled"], rtol=1e-5, atol=1e-6)
    # the same engine, asked for tokens too, returns them equal to the plain run
    both = bound.run(x, ["pooled", "tokens"])
    np.testing.assert_allclose(both["tokens"], everything["tokens"], rtol=1e-5, atol=1e-6)
    assert bound.host_bytes == everything["pooled"].nbytes + everything["tokens"].nbytes


def test_bound_results_survive_the_next_batch(demo_repository):
    """Host output buffers are reused per batch size: what a run returned must be a copy, not the buffer."""
    bound = OrtEngine("demo/encoder", demo_repository / "demo" / "encoder.onnx", ["CPUExecutionProvider"], "fp32",
                      bind_device="cpu")
    first = bound.run(demo_input(demo_repository, 2, 4), ["pooled"])["pooled"]
    kept = first.copy()
    bound.run(demo_input(demo_repository, 2, 5), ["pooled"])
    np.testing.assert_array_equal(first, kept)


def test_input_buffers_are_allocated_once_per_batch_size(demo_repository):
    engine = OrtEngine("demo/encoder", demo_repository / "demo" / "encoder.onnx", ["CPUExecutionProvider"], "fp32")
    a, b, c = engine.input_buffers(4), engine.input_buffers(4), engine.input_buffers(8)
    assert engine.input_dtypes == {"pixel_values": np.dtype(np.uint8)}  # the demo graph normalises pixels itself
    assert a["pixel_values"].dtype == np.uint8  # buffers follow the graph: a quarter of float32's bytes
    assert a["pixel_values"] is b["pixel_values"]
    assert c["pixel_values"].shape[0] == 8
    assert a["pixel_values"].shape[0] == 4


def test_unknown_outputs_are_refused(demo_repository):
    engine = OrtEngine("demo/encoder", demo_repository / "demo" / "encoder.onnx", ["CPUExecutionProvider"], "fp32")
    with pytest.raises(ValueError, match="none of the outputs"):
        engine.run(demo_input(demo_repository, 1, 6), ["nope"])


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA execution provider (CPU-only onnxruntime or no GPU on this machine)")
def test_cuda_pooled_only_copies_pooled_and_agrees_with_cpu(demo_repository):
    folder = demo_repository / "demo"
    gpu = OrtEngine("demo/encoder", folder / "encoder.onnx", ["CUDAExecutionProvider", "CPUExecutionProvider"], "fp32")
    cpu = OrtEngine("demo/encoder", folder / "encoder.onnx", ["CPUExecutionProvider"], "fp32")
    x = demo_input(demo_repository, 16, 7)
    buffers = gpu.input_buffers(16)
    buffers["pixel_values"][:] = x["pixel_values"]
    out = gpu.run(buffers, ["pooled"])
    assert set(out) == {"pooled"}
    assert gpu.host_bytes == out["pooled"].nbytes
    a, b = cpu.run(x)["pooled"], out["pooled"]  # fp32 on the GPU uses TF32 matrix products: cosine, not allclose
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.9999
