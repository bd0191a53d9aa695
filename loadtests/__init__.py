"""Load tests (Locust scenarios in locustfile.py, the reporting runner run.py) and serving benchmarks
(bench_serving.py)."""
