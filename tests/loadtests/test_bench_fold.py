"""The fold benchmark's smoke run: both graphs exported, equal, timed, one row each (figures: a quiet machine)."""


def test_fold_bench_times_the_folded_and_the_unfolded_graph(capsys):
    from loadtests import bench_fold

    assert bench_fold.main(["--image-size", "32", "--patch-size", "8", "--seconds", "0.05", "--rounds", "1"]) == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.splitlines()
            if line.startswith("| ") and "ms per image" not in line}
    assert rows == {"unfolded": "Cast, Mul, Add", "folded": "Cast"}
