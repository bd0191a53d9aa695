"""POST /classify: a kNN vote over a labelled collection equals a brute-force vote; a probe head of each kind
(linear and MLP on pooled features, attentive on tokens) trained by `jepa-export probe` answers what its ONNX graph,
run by hand on the encoder's features, answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from models.demo import world
from tests.conftest import png_bytes, serving
from tests.support.record import record
from tests.support.toolkit import assert_error, b64

LABELS = ("cat", "dog", "fox")


def brute_force_vote(
    vectors: np.ndarray, labels: list[str], query: np.ndarray, k: int, vote: str
) -> list[tuple[str, float, int]]:
    """Cosine similarity to every stored vector, the k best, then counted (or weighted by (1 + cos) / 2)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ (query / np.linalg.norm(query))
    nearest = np.argsort(-sims)[:k]
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for i in nearest:
        totals[labels[i]] = totals.get(labels[i], 0.0) + (1.0 if vote == "majority" else (1 + sims[i]) / 2)
        counts[labels[i]] = counts.get(labels[i], 0) + 1
    whole = sum(totals.values())
    return sorted(((label, w / whole, counts[label]) for label, w in totals.items()), key=lambda t: -t[1])


@pytest.fixture
def labelled(client):
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(3, 16))
    vectors = np.concatenate([c + 0.9 * rng.normal(size=(20, 16)) for c in centres]).astype(np.float32)
    labels = [LABELS[i // 20] for i in range(60)]
    created = client.put("/collections/animals", json={"dim": 16, "metric": "cosine", "space_id": "animals-space"})
    assert created.status_code == 201
    metadata = [{"species": label, "n": i} for i, label in enumerate(labels)]
    metadata[0] = {"n": 0}  # no label: does not vote
    labels[0] = None
    stored = client.post("/collections/animals/points", json={"ids": [f"p{i}" for i in range(60)],
                                                              "vectors": vectors.tolist(), "metadata": metadata})
    assert stored.status_code == 200, stored.text
    return vectors, labels


@pytest.mark.parametrize("vote", ["majority", "weighted"])
def test_knn_equals_a_brute_force_vote(client, labelled, vote):
    vectors, labels = labelled
    queries = np.random.default_rng(9).normal(size=(6, 16)).astype(np.float32)
    response = client.post("/classify", json={"collection": "animals", "vectors": queries.tolist(), "k": 9,
                                              "label_field": "species", "vote": vote, "top_k": 3})
    assert response.status_code == 200, response.text
    for query, got in zip(queries, response.json()["labels"], strict=True):
        keep = [i for i, label in enumerate(labels) if label is not None]
        expected = brute_force_vote(vectors[keep], [labels[i] for i in keep], query, 9, vote)
        assert [g["label"] for g in got] == [e[0] for e in expected]
        np.testing.assert_allclose([g["score"] for g in got], [e[1] for e in expected], rtol=1e-5)
        assert [g["votes"] for g in got] == [e[2] for e in expected]


def test_knn_filter_and_missing_labels(client, labelled):
    vectors, _ = labelled
    only_dogs = client.post("/classify", json={"collection": "animals", "vectors": [vectors[25].tolist()],
                                               "label_field": "species", "filter": {"species": "dog"}}).json()
    assert [v["label"] for v in only_dogs["labels"][0]] == ["dog"]
    # A label field none of the neighbours has (misspelt, most likely) used to answer 200 with no labels.
    nobody = client.post("/classify", json={"collection": "animals", "vectors": [vectors[25].tolist()],
                                            "label_field": "colour"})
    assert_error(nobody, 422, "invalid_label")
    assert nobody.json()["error"]["detail"] == {"label_field": "colour", "fields": ["n", "species"]}
    nothing_near = client.post("/classify", json={"collection": "animals", "vectors": [vectors[25].tolist()],
                                                  "label_field": "species", "filter": {"n": -1}})
    assert nothing_near.json()["labels"] == [[]]  # no neighbour at all: nothing to vote, nothing misspelt


def test_knn_labels_keep_their_json_type_and_objects_are_refused(client):
    """`true` and `"true"` were counted as one label although a filter keeps them apart; a label that is an object
    or a list was silently skipped (200 with no labels)."""
    assert client.put("/collections/typed", json={"dim": 2, "metric": "l2"}).status_code == 201
    labels = [True, "true", "true", 1, 1.0, "1", None, False]
    stored = client.post("/collections/typed/points", json={
        "ids": [f"p{i}" for i in range(len(labels))], "vectors": [[float(i), 0.0] for i in range(len(labels))],
        "metadata": [{"label": label} for label in labels]})
    assert stored.status_code == 200, stored.text
    got = client.post("/classify", json={"collection": "typed", "vectors": [[0.0, 0.0]], "k": 8,
                                         "label_field": "label", "top_k": 10}).json()["labels"][0]
    # Ranked by votes, ties to the nearer label: "true" 2, the number 1 (1 and 1.0) 2, then true, "1", false.
    assert [(g["label"], g["votes"]) for g in got] == [("true", 2), (1, 2), (True, 1), ("1", 1), (False, 1)]
    assert [type(g["label"]) for g in got] == [str, int, bool, str, bool]
    for value in ({"name": "cat"}, ["cat"]):
        client.post("/collections/typed/points", json={"ids": ["odd"], "vectors": [[0.5, 0.0]],
                                                        "metadata": [{"label": value}]})
        refused = client.post("/classify", json={"collection": "typed", "vectors": [[0.0, 0.0]], "k": 3,
                                                 "label_field": "label"})
        assert_error(refused, 422, "invalid_label")
        assert refused.json()["error"]["detail"] == {"label_field": "label", "id": "odd",
                                                     "type": type(value).__name__}
    record("/classify labels", case="true, \"true\", 1, 1.0, \"1\", false as labels",
           refused="5 labels kept apart by JSON type (1 and 1.0 one number)")
    record("/classify labels", case="object and list labels, a label field no neighbour has", refused="422")


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"collection": "animals", "vectors": [[0.0] * 15]}, 422, "dimension_mismatch"),
        ({"collection": "animals", "vectors": [[0.1] * 16], "k": 100000}, 422, "k_too_large"),
        ({"collection": "nope", "vectors": [[0.1] * 16]}, 404, "collection_not_found"),
        ({"collection": "animals", "vectors": [[0.1] * 16], "filter": {"n": {"near": 3}}}, 422, "invalid_filter"),
        ({"collection": "animals", "vectors": [[0.1] * 16], "space_id": "other"}, 409, "space_mismatch"),
        ({"collection": "animals", "inputs": [{"image": "aGk="}]}, 422, "no_model_for_collection"),
        ({"vectors": [[0.1] * 16]}, 422, "validation_error"),
        ({"collection": "animals", "head": "room", "vectors": [[0.1] * 16]}, 422, "validation_error"),
        ({"head": "room", "vectors": [[0.1] * 16]}, 422, "validation_error"),
        ({"collection": "animals"}, 422, "validation_error"),
        ({"head": "nope", "inputs": [{"image": "aGk="}]}, 404, "head_not_found"),
        ({"model": "nope", "head": "room", "inputs": [{"image": "aGk="}]}, 404, "model_not_found"),
        ({"collection": "animals", "vectors": [[0.1] * 16] * 65}, 413, "too_many_items"),
    ],
)
def test_classify_bad_input_is_a_clear_4xx(client, labelled, payload, status, code):
    assert_error(client.post("/classify", json=payload), status, code)


# -- probe heads -------------------------------------------------------------------------------------------------


def room_frames(seed: int, n: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    rooms = rng.integers(0, 2, n)
    agents = world.random_free_positions(rng, n, rooms)
    balls = rng.uniform(world.BALL_LO, world.BALL_HI, (n, 2))
    return world.render(agents, balls), ["left" if r == 0 else "right" for r in rooms]


@pytest.fixture(scope="module")
def probed_repository(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo entry with a `room` head trained by the probe exporter's CLI on a labelled folder."""
    from export.cli import main

    root = tmp_path_factory.mktemp("probed")
    shutil.copytree(demo_repository / "demo", root / "demo")
    data = tmp_path_factory.mktemp("rooms")
    frames, labels = room_frames(1, 60)
    for i, (frame, label) in enumerate(zip(frames, labels, strict=True)):
        (data / label).mkdir(exist_ok=True)
        Image.fromarray(frame).save(data / label / f"{i}.png")
    for name, kind in HEADS.items():
        assert main(["probe", "--entry", str(root / "demo"), "--name", name, "--kind", kind, "--data", str(data),
                     "--epochs", "20"]) == 0
    return root


HEADS = {"room": "linear", "room_mlp": "mlp", "room_attentive": "attentive"}  # head name -> kind
FEATURES = {"linear": "pooled", "mlp": "pooled", "attentive": "tokens"}


@pytest.mark.parametrize("name", HEADS)
def test_the_probe_is_in_the_manifest_with_its_kind_labels_and_accuracy(probed_repository, name):
    manifest = json.loads((probed_repository / "demo" / "manifest.json").read_text())
    head = manifest["heads"][name]
    assert (head["kind"], head["features"]) == (HEADS[name], FEATURES[HEADS[name]])
    assert head["labels"] == ["left", "right"]
    assert 0 <= head["held_out_accuracy"] <= 1
    assert (probed_repository / "demo" / manifest["components"][head["component"]]["files"]["fp32"]).is_file()


@pytest.mark.parametrize("name", HEADS)
def test_classify_equals_the_onnx_head_run_by_hand(probed_repository, settings_factory, name):
    entry = probed_repository / "demo"
    frames, _ = room_frames(2, 5)
    with serving(settings_factory(model_repository=probed_repository)) as client:
        response = client.post("/classify", json={"head": name, "top_k": 2,
                                                  "inputs": [{"image": b64(png_bytes(f))} for f in frames]})
    assert response.status_code == 200, response.text
    body = response.json()
    # by hand: a still image is a clip of two identical frames for the demo encoder; the head's features -> head
    x = frames.transpose(0, 3, 1, 2)  # uint8: the demo encoder normalises pixels itself
    clips = np.ascontiguousarray(np.repeat(x[:, None], 2, axis=1))
    output = FEATURES[HEADS[name]]
    features = ort.InferenceSession(str(entry / "encoder.onnx")).run([output], {"pixel_values": clips})[0]
    probabilities = ort.InferenceSession(str(entry / "heads" / f"{name}.onnx")).run(
        ["probabilities"], {"features": features})[0]
    labels = ["left", "right"]
    for row, got in zip(probabilities, body["labels"], strict=True):
        order = np.argsort(-row)
        assert [g["label"] for g in got] == [labels[j] for j in order]
        np.testing.assert_allclose([g["score"] for g in got], row[order], rtol=1e-4, atol=1e-6)
    assert body["head"] == name
    assert body["held_out_accuracy"] == json.loads((entry / "manifest.json").read_text())["heads"][name][
        "held_out_accuracy"]


def test_probe_cli_refuses_bad_data(tmp_path, demo_repository, capsys):
    from export.cli import main

    shutil.copytree(demo_repository / "demo", tmp_path / "demo")
    one_label = tmp_path / "one"
    (one_label / "left").mkdir(parents=True)
    Image.fromarray(room_frames(3, 1)[0][0]).save(one_label / "left" / "a.png")
    assert main(["probe", "--entry", str(tmp_path / "demo"), "--name", "room", "--data", str(one_label)]) == 1
    (tmp_path / "bad.csv").write_text("file,class\na.png,left\n")
    assert main(["probe", "--entry", str(tmp_path / "demo"), "--name", "room", "--csv", str(tmp_path / "bad.csv")]) == 1
    assert main(["probe", "--entry", str(tmp_path / "demo"), "--name", "../x", "--data", str(one_label)]) == 1
    assert main(["probe", "--entry", str(tmp_path / "demo"), "--name", "r", "--kind", "mlp", "--hidden", "0",
                 "--data", str(one_label)]) == 1
    with pytest.raises(SystemExit):
        main(["probe", "--entry", str(tmp_path / "demo"), "--name", "r", "--kind", "svm", "--data", str(one_label)])
    assert "invalid choice: 'svm'" in capsys.readouterr().err
    assert "heads" not in json.loads((tmp_path / "demo" / "manifest.json").read_text())
