"""`python -m loadtests.bench_decode` runs (figures are the lead's to take on a quiet machine)."""

from loadtests import bench_decode


def test_the_decode_benchmark_runs_and_reports_both_rows(capsys):
    assert bench_decode.main(["--repeats", "1", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "full decode + resize (before)" in out
    assert "drafted decode + resize (now)" in out
    assert "faster" in out
