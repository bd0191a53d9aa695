"""The GPU benchmark's CPU dry run: every row is measured on a tiny ViT and the report says met / not met."""

import json

from loadtests import bench_gpu


def test_bench_gpu_dry_run_on_cpu_writes_every_row(tmp_path):
    out = tmp_path / "bench"
    code = bench_gpu.main(["--device", "cpu", "--models", "tiny", "--seconds", "0.3", "--batches", "1,4",
                           "--instances", "1,2", "--max-batches", "4", "--callers", "8", "--http-levels", "2",
                           "--per-request", "2", "--load-processes", "1", "--out", str(out)])
    assert code == 0
    (figures,) = json.loads((out / "gpu.json").read_text())
    assert figures["model"] == "tiny"
    assert set(figures["eager"]) == {"1", "4"}
    assert min(figures["eager"].values()) > 0
    assert set(figures["engine"]) == {"exported", "fused"}  # the fused graph passed its gate on the CPU
    assert set(figures["served"]) == {"instances=1 max_batch=4", "instances=2 max_batch=4"}
    assert min(figures["served"].values()) > 0
    assert set(figures["http"]) == {"jpeg x2 c=2", "png x2 c=2"}
    assert min(figures["http"].values()) > 0
    assert not any(figures["http_errors"].values())
    report = (out / "gpu.md").read_text()
    for row in ("1. PyTorch eager", "2. raw engine (exported graph)", "2. raw engine (fused graph)",
                "3. served in process", "4. HTTP", "served in process ≥ 0.85× raw engine"):
        assert row in report
    assert "CPU only" in report


def test_preprocess_bench_runs_and_checks_the_two_forms_agree(capsys):
    from loadtests import bench_preprocess

    assert bench_preprocess.main(["--size", "32", "--repeats", "2"]) == 0
    printed = capsys.readouterr().out
    assert "ImagePreprocess.apply" in printed
    assert "float32 -> float16" in printed


def test_batcher_bench_runs(capsys):
    from loadtests import bench_batcher

    assert bench_batcher.main(["--callers", "4", "--seconds", "0.05"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rates = [float(line.rsplit(": ", 1)[1].split()[0].replace(",", "")) for line in lines]
    assert len(rates) == 4
    assert min(rates) > 0
