"""The GPU benchmark's CPU dry run: every row is measured on a tiny ViT and the report says met / not met."""

import json

from loadtests import bench_gpu


def test_bench_gpu_dry_run_on_cpu_writes_every_row(tmp_path):
    """Images and a V-JEPA 2-shaped clip encoder: every graph of row 2 (fused and unfused attention, ONNX Runtime's
    fusions, the CUDA graph path's fixed bindings), the served rows with CUDA graphs off and on, HTTP for images."""
    out = tmp_path / "bench"
    code = bench_gpu.main(["--device", "cpu", "--models", "tiny,vjepa2-tiny", "--seconds", "0.3", "--batches", "1,4",
                           "--clip-batches", "1,2", "--instances", "1,2", "--max-batches", "4", "--clip-max-batches",
                           "2", "--callers", "8", "--clip-callers", "4", "--ort-fusions", "unfused", "--http-levels",
                           "2", "--http-seconds", "1", "--per-request", "2", "--load-processes", "1",
                           "--out", str(out)])
    assert code == 0
    image, clip = json.loads((out / "gpu.json").read_text())
    assert (image["model"], image["unit"], clip["model"], clip["unit"]) == ("tiny", "img/s", "vjepa2-tiny", "clips/s")
    for figures, batches in ((image, {"1", "4"}), (clip, {"1", "2"})):
        assert set(figures["eager"]) == batches
        assert min(figures["eager"].values()) > 0
        graphs = {"mha", "onnx", "unfused", "unfused+ort"}  # the fused graphs and today's passed their gates
        cuda_graph = set(figures["engine"]) - graphs
        assert len(cuda_graph) == 1
        assert cuda_graph.pop().split(" ") in ([g, "cuda-graph"] for g in graphs)  # the fastest, replayed
        assert all(set(by_batch) == batches for by_batch in figures["engine"].values())
        limit = max(int(b) for b in batches) if figures is clip else 4
        assert set(figures["served"]) == {f"instances={n} max_batch={limit}{mode}" for n in (1, 2)
                                          for mode in ("", " cuda_graphs=on")}
        assert min(figures["served"].values()) > 0
    assert set(image["http"]) == {"jpeg x2 c=2", "png x2 c=2"}
    assert min(image["http"].values()) > 0
    assert not any(image["http_errors"].values())
    assert not clip["http"]  # clips are measured below HTTP
    report = (out / "gpu.md").read_text()
    for row in ("1. PyTorch eager", "2. raw engine, mha", "2. raw engine, unfused+ort", "3. served in process",
                "4. HTTP", "served in process ≥ 0.85× raw engine", "engine ≥ 1.1× PyTorch eager",
                "engine ≥ 1.0× PyTorch eager", "| row | best clips/s |"):
        assert row in report
    assert "CPU only" in report


def test_attention_bench_compares_the_three_graphs_on_the_cpu(capsys):
    from loadtests import bench_attention

    assert bench_attention.main(["--image-size", "32", "--patch-size", "8", "--dim", "32", "--depth", "1",
                                 "--heads", "2", "--batches", "1,2", "--seconds", "0.05", "--rounds", "1"]) == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()
            if line.startswith("| ") and "img/s" not in line}
    assert set(rows) == {"mha", "onnx", "unfused"}
    assert rows["unfused"].rstrip().endswith("| 1.00× |")


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
