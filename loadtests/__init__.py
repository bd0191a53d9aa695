"""Load tests of jepa-serve: the Locust scenarios (locustfile.py) and the runner that reports on them (run.py)."""
