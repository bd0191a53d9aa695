"""export/probe.py: the head graph is softmax(x W^T + b), a linear fit separates separable data, CSVs and
folders are read as documented."""

import numpy as np
import onnxruntime as ort
import pytest

from export.probe import ProbeOptions, fit_linear, head_graph, labelled_csv, labelled_folder


def test_the_head_graph_is_a_softmax_of_a_linear_map(tmp_path):
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    path = tmp_path / "head.onnx"
    path.write_bytes(head_graph(weight, bias).SerializeToString())
    x = rng.normal(size=(7, 5)).astype(np.float32)
    (got,) = ort.InferenceSession(str(path)).run(["probabilities"], {"features": x})
    logits = x @ weight.T + bias
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(got, expected / expected.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_a_linear_fit_on_raw_features_separates_separable_classes():
    rng = np.random.default_rng(1)
    centres = np.array([[5.0, 0, 0, 100], [0, 5.0, 0, 100], [0, 0, 5.0, 100]])  # an offset the fit must absorb
    y = np.repeat(np.arange(3), 40)
    x = (centres[y] + rng.normal(size=(120, 4))).astype(np.float32)
    weight, bias = fit_linear(x, y, 3, ProbeOptions(entry=None, name="t"))  # type: ignore[arg-type]
    assert ((x @ weight.T + bias).argmax(1) == y).mean() >= 0.97


def test_folders_and_csvs(tmp_path):
    for label in ("b", "a"):
        (tmp_path / "data" / label).mkdir(parents=True)
        (tmp_path / "data" / label / "1.png").write_bytes(b"")
    (tmp_path / "data" / "a" / "notes.txt").write_text("not an image")
    assert [(p.parent.name, label) for p, label in labelled_folder(tmp_path / "data")] == [("a", "a"), ("b", "b")]
    (tmp_path / "set.csv").write_text("path,label\ndata/a/1.png,cat\n")
    assert labelled_csv(tmp_path / "set.csv") == [((tmp_path / "data" / "a" / "1.png").resolve(), "cat")]
    (tmp_path / "bad.csv").write_text("file,class\nx,y\n")
    with pytest.raises(ValueError, match="path"):
        labelled_csv(tmp_path / "bad.csv")
