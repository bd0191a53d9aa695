"""POST /surprise on V-JEPA 2 with its mask predictor (a tiny random checkpoint exported with a surprise calibration
on normal videos): per future tubelet step, the L1 of predicted vs observed layer-normed tokens, z-scored; equals
the exported encoder and future graphs run by hand with ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tests.conftest import png_bytes, serving
from tests.support.future_export import drifting_frames
from tests.support.toolkit import assert_error, b64


def by_hand(entry: Path, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["input"]["dtype"] == "uint8"  # the graphs take pixels and normalise them themselves
    x = np.ascontiguousarray(frames.transpose(3, 0, 1, 2)[None])  # (1, 3, T, H, W)
    (tokens,) = ort.InferenceSession(str(entry / "encoder.onnx")).run(["tokens"], {"pixel_values": x})
    context = np.ascontiguousarray(x[:, :, :manifest["future"]["context_frames"]])
    (predicted,) = ort.InferenceSession(str(entry / "future.onnx")).run(["predicted"], {"pixel_values": context})
    steps = manifest["future"]["future_steps"]
    observed = tokens[0, -predicted.shape[1]:].astype(np.float64)
    target = (observed - observed.mean(-1, keepdims=True)) / np.sqrt(observed.var(-1, keepdims=True) + 1e-6)
    distance = np.abs(predicted[0] - target).reshape(steps, -1).mean(1)
    spec = manifest["surprise"]
    return distance, (distance - spec["mean"]) / spec["std"]


def test_future_tubelet_steps_are_scored_like_the_onnx_graphs_run_by_hand(future_repository, settings_factory):
    entry = future_repository / "vj"
    assert json.loads((entry / "manifest.json").read_text())["surprise"]["metric"] == "l1_tokens"
    frames = drifting_frames(7, 6)
    with serving(settings_factory(model_repository=future_repository)) as client:
        response = client.post("/surprise", json={"model": "vj", "observations": [
            {"image": b64(png_bytes(f))} for f in frames]})
        assert response.status_code == 200, response.text
        body = response.json()
        distance, scores = by_hand(entry, frames)
        assert body["steps"] == [2, 4]  # the first frame of each predicted tubelet step
        np.testing.assert_allclose(body["distances"], distance, rtol=1e-4)
        np.testing.assert_allclose(body["scores"], scores, rtol=1e-4, atol=1e-4)
        # another clip (its future half from another scene, played backwards): by hand too
        swapped = np.concatenate([frames[:2], drifting_frames(99, 4)[::-1]])
        other = client.post("/surprise", json={"model": "vj", "observations": [
            {"image": b64(png_bytes(f))} for f in swapped]}).json()
        np.testing.assert_allclose(other["distances"], by_hand(entry, swapped)[0], rtol=1e-4)

        assert_error(client.post("/surprise", json={"model": "vj", "observations": [
            {"image": b64(png_bytes(f))} for f in frames[:5]]}), 422, "invalid_context")
        assert_error(client.post("/surprise", json={"model": "vj", "actions": [[0.0] * 7], "observations": [
            {"image": b64(png_bytes(f))} for f in frames]}), 422, "invalid_context")
        with client.websocket_connect("/stream/surprise?model=vj") as ws:
            assert ws.receive_json()["error"]["code"] == "no_surprise"
