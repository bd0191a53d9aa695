"""CUDA graphs (service/runtime/cuda_graphs.py): the per-batch-size bindings and graph ids, with a fake session, and
the engine's graph path with a real ONNX Runtime session on the CPU; the CUDA run itself skips without a GPU."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

import service.model_pool
from service.runtime.cuda_graphs import CAPTURE_RUNS, NO_GRAPH, TIMED_RUNS, CudaGraphs, graph_shapes_missing
from service.runtime.onnx import OrtEngine

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@dataclass
class FakeValue:
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class FakeBinding:
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = value

    def bind_ortvalue_output(self, name, value):
        self.outputs[name] = value


class FakeIO:
    def value(self, shape, dtype):
        return FakeValue(tuple(shape), np.dtype(dtype))

    def run_options(self, graph_id):
        return SimpleNamespace(graph_id=graph_id)


class FakeSession:
    """Counts runs per (binding, graph id); each run advances a clock by what a replay or an ordinary run costs."""

    def __init__(self, replay_s: float = 1.0, ordinary_s: float = 2.0, fail_capture: bool = False) -> None:
        self.runs: list[tuple[int, int]] = []
        self.bindings: list[FakeBinding] = []
        self.now = 0.0
        self.cost = {NO_GRAPH: ordinary_s}
        self.replay_s = replay_s
        self.fail_capture = fail_capture

    def io_binding(self):
        self.bindings.append(FakeBinding())
        return self.bindings[-1]

    def run_with_iobinding(self, binding, options):
        if self.fail_capture and options.graph_id != NO_GRAPH:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.runs.append((self.bindings.index(binding), options.graph_id))
        self.now += self.cost.get(options.graph_id, self.replay_s)

    def clock(self):
        return self.now


INPUTS = {"pixel_values": ((2, 3, 8, 8), np.dtype(np.uint8))}
OUTPUTS = {"pooled": ((16,), np.dtype(np.float32)), "tokens": ((4, 16), np.dtype(np.float32))}


def graphs(session: FakeSession, mode: str) -> CudaGraphs:
    return CudaGraphs(session, FakeIO(), INPUTS, OUTPUTS, mode, "m/encoder", clock=session.clock)


def test_each_batch_size_gets_fixed_buffers_and_its_own_graph_captured_once():
    session = FakeSession()
    bookkeeping = graphs(session, "on")
    eight = bookkeeping.get(8)
    assert eight.inputs["pixel_values"] == FakeValue((8, 2, 3, 8, 8), np.dtype(np.uint8))
    assert {n: v.shape for n, v in eight.outputs.items()} == {"pooled": (8, 16), "tokens": (8, 4, 16)}
    assert session.bindings[0].inputs == eight.inputs  # every input and every output bound to those buffers
    assert session.bindings[0].outputs == eight.outputs
    assert session.runs == [(0, 8)] * CAPTURE_RUNS  # runs until ONNX Runtime has captured graph 8
    assert bookkeeping.get(8) is eight  # later batches of the size replay: nothing bound or run again
    assert len(session.runs) == CAPTURE_RUNS
    sixteen = bookkeeping.get(16)
    assert sixteen.run_options.graph_id == 16
    assert session.runs[CAPTURE_RUNS:] == [(1, 16)] * CAPTURE_RUNS
    assert bookkeeping.replayed_sizes == [8, 16]


@pytest.mark.parametrize(("replay_s", "keeps"), [(1.0, True), (3.0, False)])
def test_auto_keeps_a_graph_only_where_it_ran_faster_at_warm_up(replay_s, keeps):
    session = FakeSession(replay_s=replay_s, ordinary_s=2.0)
    prepared = graphs(session, "auto").get(4)
    assert prepared.replay is keeps
    assert prepared.run_options.graph_id == (4 if keeps else NO_GRAPH)
    timed = session.runs[CAPTURE_RUNS:]
    assert sorted(set(timed)) == [(0, NO_GRAPH), (0, 4)]
    assert len(timed) == 2 * TIMED_RUNS


def test_a_size_whose_capture_fails_runs_without_a_graph():
    session = FakeSession(fail_capture=True)
    bookkeeping = graphs(session, "on")
    prepared = bookkeeping.get(2)
    assert prepared.replay is False
    assert prepared.run_options.graph_id == NO_GRAPH
    assert bookkeeping.replayed_sizes == []
    assert bookkeeping.prepared_sizes == [2]


def test_modes_and_shapes_a_graph_needs():
    with pytest.raises(ValueError, match="on or auto"):
        CudaGraphs(FakeSession(), FakeIO(), INPUTS, OUTPUTS, "off")
    assert graph_shapes_missing({"x": (3, 8)}, {"y": (4,), "z": None}) == ["z"]
    assert graph_shapes_missing({"x": (3, 8)}, {"y": (4,)}) == []


def test_the_engine_graph_path_on_a_real_session_equals_the_plain_engine(demo_repository):
    """ONNX Runtime's CPU provider has no graphs; `bind_device="cpu"` runs the same fixed bindings there."""
    path = demo_repository / "demo" / "encoder.onnx"
    plain = OrtEngine("demo/encoder", path, ["CPUExecutionProvider"], "fp32")
    assert plain.cuda_graphs == "off"
    assert OrtEngine("demo/encoder", path, ["CPUExecutionProvider"], "fp32", cuda_graphs="on").cuda_graphs == "off"
    graphed = OrtEngine("demo/encoder", path, ["CPUExecutionProvider"], "fp32", bind_device="cpu", cuda_graphs="on")
    assert graphed.cuda_graphs == "on"
    rng = np.random.default_rng(0)
    first = {"pixel_values": rng.integers(0, 256, (3, 2, 3, 64, 64), np.uint8)}
    second = {"pixel_values": rng.integers(0, 256, (3, 2, 3, 64, 64), np.uint8)}
    got = graphed.run(first, ["pooled"])
    assert set(got) == {"pooled"}
    kept = got["pooled"].copy()
    again = graphed.run(second)  # the same batch size: the same buffers, refilled
    np.testing.assert_array_equal(got["pooled"], kept)  # what a run returned is not the reused buffer
    np.testing.assert_allclose(kept, plain.run(first)["pooled"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again["tokens"], plain.run(second)["tokens"], rtol=1e-5, atol=1e-5)
    graphed.run({"pixel_values": first["pixel_values"][:1]})
    assert graphed._graphs.prepared_sizes == [1, 3]


def test_the_settings_reach_every_engine(monkeypatch, demo_repository):
    from service.batching import BatchPolicy
    from service.repository import read_entry
    from service.settings import Settings

    made = []
    monkeypatch.setattr(service.model_pool, "OrtEngine", lambda *args, **kwargs: made.append(kwargs))
    entry = read_entry(demo_repository / "demo")
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_ms=1, max_queue_size=8)
    settings = Settings(cuda_graphs="auto", intra_op_spinning=True)
    service.model_pool.build_engine(entry, "encoder", ["CPUExecutionProvider"], policy, settings.config.runtime)
    assert made == [{"cuda_graphs": "auto", "spinning": True}]


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA execution provider (CPU-only onnxruntime or no GPU on this machine)")
@pytest.mark.parametrize("mode", ["on", "auto"])
def test_cuda_graphs_on_a_gpu_replay_and_agree_with_the_cpu(demo_repository, mode):
    path = demo_repository / "demo" / "encoder.onnx"
    gpu = OrtEngine("demo/encoder", path, ["CUDAExecutionProvider", "CPUExecutionProvider"], "fp32", cuda_graphs=mode)
    cpu = OrtEngine("demo/encoder", path, ["CPUExecutionProvider"], "fp32")
    assert gpu.cuda_graphs == mode
    for batch, seed in ((8, 1), (8, 2), (2, 3)):
        x = {"pixel_values": np.random.default_rng(seed).integers(0, 256, (batch, 2, 3, 64, 64), np.uint8)}
        a, b = cpu.run(x)["pooled"], gpu.run(x, ["pooled"])["pooled"]
        assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.9999
    if mode == "on":
        assert gpu._graphs.replayed_sizes == [2, 8]
