"""The GPU search benchmark's CPU dry run (ONNX Runtime's CPU provider): every row measured, the report written."""

import json

from loadtests import bench_gpu_search


def test_bench_gpu_search_dry_run_on_cpu_writes_every_row(tmp_path, fake_repository):
    out = tmp_path / "bench"
    code = bench_gpu_search.main(["--device", "cpu", "--points", "3000", "--dim", "16", "--batches", "1,32",
                                  "--seconds", "0.1", "--single", "10", "--http-clients", "2",
                                  "--repository", str(fake_repository), "--out", str(out)])
    assert code == 0
    figures = json.loads((out / "gpu_search.json").read_text())
    assert figures["recall"] == 1.0  # random unit vectors: no fp16 ties at the edge of the top 10
    assert set(figures["device_batched"]) == set(figures["faiss_batched"]) == {"1", "32"}
    assert min(figures["device_batched"].values()) > 0
    assert figures["device_single_ms"]["p50"] > 0
    assert figures["http_single_ms"]["p50"] > 0
    assert figures["http_batched_qps"] > 0
    report = (out / "gpu_search.md").read_text()
    for line in ("batched ≥ 50,000 q/s", "single query p50 ≤ 2.0 ms", "| device (ONNX Runtime) |",
                 "| FAISS flat on the CPU |", "HTTP `POST /search`"):
        assert line in report
