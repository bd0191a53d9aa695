"""export/probe.py and export/probe_heads.py: each head graph computes what its weights say, a linear fit separates
separable data, an MLP head learns an XOR a linear head cannot (end to end through a labelled folder), an attentive
head needs the encoder's tokens, manifests refuse a head whose kind and features disagree, CSVs and folders are read
as documented."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from contract import HEAD_FEATURES, HeadSpec
from export.probe import KIND_DEFAULTS, ProbeOptions, labelled_csv, labelled_folder, train_probe
from export.probe_heads import FitOptions, MlpWeights, fit_linear, head_graph, mlp_graph
from service.repository import ManifestError, read_entry
from tests.support.fake_repository import SIZE, write_fake_entry

LINEAR = FitOptions(**dict(zip(("epochs", "learning_rate", "weight_decay"), KIND_DEFAULTS["linear"], strict=True)))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def run(model, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString()).run(["probabilities"], {"features": x})[0]


def test_the_head_graph_is_a_softmax_of_a_linear_map():
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_allclose(run(head_graph(weight, bias), x), softmax(x @ weight.T + bias), rtol=1e-5, atol=1e-6)


def test_the_mlp_graph_is_a_softmax_of_a_relu_layer():
    rng = np.random.default_rng(1)
    weights = MlpWeights(*(rng.normal(size=s).astype(np.float32) for s in ((6, 5), (6,), (3, 6), (3,))))
    x = rng.normal(size=(7, 5)).astype(np.float32)
    expected = softmax(np.maximum(x @ weights.w1.T + weights.b1, 0) @ weights.w2.T + weights.b2)
    np.testing.assert_allclose(run(mlp_graph(weights), x), expected, rtol=1e-5, atol=1e-6)


def test_a_linear_fit_on_raw_features_separates_separable_classes():
    rng = np.random.default_rng(1)
    centres = np.array([[5.0, 0, 0, 100], [0, 5.0, 0, 100], [0, 0, 5.0, 100]])  # an offset the fit must absorb
    y = np.repeat(np.arange(3), 40)
    x = (centres[y] + rng.normal(size=(120, 4))).astype(np.float32)
    weight, bias = fit_linear(x, y, 3, LINEAR)
    assert ((x @ weight.T + bias).argmax(1) == y).mean() >= 0.97


def test_every_head_kind_has_training_defaults():
    assert set(KIND_DEFAULTS) == set(HEAD_FEATURES)


def xor_folder(folder, n_per_cell: int = 25, seed: int = 0):
    """Flat-coloured images, red and green each dark or bright (plus noise): label `same` when both are dark or both
    bright. The fake encoder is linear, so its pooled features are a linear map of the colour: a linear head on them
    cannot draw the XOR, one hidden layer can."""
    rng = np.random.default_rng(seed)
    for red in (0.2, 0.8):
        for green in (0.2, 0.8):
            label = "same" if red == green else "other"
            (folder / label).mkdir(parents=True, exist_ok=True)
            for i in range(n_per_cell):
                rgb = np.array([red, green, 0.5]) + rng.normal(0, 0.04, 3)
                pixels = np.clip(rgb + rng.normal(0, 0.02, (SIZE, SIZE, 3)), 0, 1)
                Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / label / f"{red}{green}_{i}.png")
    return labelled_folder(folder)


def test_an_mlp_head_learns_an_xor_a_linear_head_cannot(tmp_path):
    entry = write_fake_entry(tmp_path / "repo")
    samples = xor_folder(tmp_path / "xor")
    records = {kind: train_probe(ProbeOptions(entry=entry, name=f"xor_{kind}", kind=kind, holdout=0.3, epochs=100),
                                 samples, "xor", log=lambda _: None) for kind in ("linear", "mlp")}
    assert records["linear"]["held_out_accuracy"] < 0.7
    assert records["mlp"]["held_out_accuracy"] > 0.9
    manifest = json.loads((entry / "manifest.json").read_text())
    for kind, record in records.items():
        assert manifest["heads"][f"xor_{kind}"] == record
        assert (record["kind"], record["features"]) == (kind, "pooled")
    served = read_entry(entry)  # the service accepts the entry
    assert served.manifest.heads["xor_mlp"].held_out_accuracy == records["mlp"]["held_out_accuracy"]


def test_an_attentive_head_needs_a_tokens_output_and_a_bad_kind_is_refused(tmp_path):
    entry = write_fake_entry(tmp_path / "repo")
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["components"]["encoder"]["outputs"] = ["pooled"]
    (entry / "manifest.json").write_text(json.dumps(manifest))
    samples = xor_folder(tmp_path / "xor", n_per_cell=2)
    with pytest.raises(ValueError, match="no 'tokens' output.*attentive probe reads the token grid"):
        train_probe(ProbeOptions(entry=entry, name="a", kind="attentive"), samples, "xor", log=lambda _: None)
    with pytest.raises(ValueError, match="probe kind 'svm'"):
        train_probe(ProbeOptions(entry=entry, name="a", kind="svm"), samples, "xor", log=lambda _: None)
    assert not json.loads((entry / "manifest.json").read_text())["heads"]
    assert not (entry / "heads").exists()


def test_a_manifest_head_must_read_what_its_kind_reads_and_what_the_encoder_has(tmp_path):
    with pytest.raises(ValueError, match="attentive head reads 'tokens'"):
        HeadSpec(component="c", labels=["a", "b"], kind="attentive", features="pooled")
    entry = write_fake_entry(tmp_path / "repo")
    shutil.copy(entry / "encoder.onnx", entry / "head.onnx")  # any graph: only the contract is read here
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["components"]["encoder"]["outputs"] = ["pooled"]
    manifest["components"]["head_a"] = {"files": {"fp32": "head.onnx"}, "inputs": {}, "outputs": ["probabilities"]}
    manifest["heads"] = {"a": {"component": "head_a", "labels": ["x", "y"], "kind": "attentive", "features": "tokens"}}
    (entry / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="reads the encoder's 'tokens' output, which it lacks"):
        read_entry(entry)


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
