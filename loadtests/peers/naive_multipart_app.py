"""The naive peer of the host benchmark: a plain FastAPI handler that decodes the request's multipart images and
runs the model on them, nothing else. No batching across requests, no decode pool: scale comes from
`uvicorn --workers N` (a process and a model copy per worker). Same decode, preprocessing and ONNX graph as
jepa-serve, so only the serving strategy differs.

Run: PEER_MODEL_DIR=model_repository/vit uvicorn loadtests.peers.naive_multipart_app:app --workers 2 --port 8100
"""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI, File, UploadFile

from loadtests.peers.common import LIMITS, as_model_item, load_entry, normalise
from service.media.images import decode_image

app = FastAPI()
session, preprocess, frames = load_entry()


@app.post("/embed")
def embed(files: list[UploadFile] = File(...)) -> dict:  # noqa: B008 - FastAPI's way to declare form files
    # A sync endpoint: FastAPI runs it in its thread pool; one ORT call for the request's images.
    pixels = np.stack([as_model_item(preprocess.apply(decode_image(f.file.read(), LIMITS)), frames) for f in files])
    pooled = session.run(["pooled"], {"pixel_values": pixels})[0]
    return {"embeddings": [normalise(row) for row in pooled]}


@app.get("/readyz")
def readyz() -> dict:
    return {"status": "ready"}
