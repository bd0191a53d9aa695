"""The plain FastAPI + ONNX Runtime app most people write first: each request runs alone.

Run: PEER_MODEL_DIR=model_repository/demo uvicorn loadtests.peers.naive_app:app --port 8100
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from loadtests.peers.common import decode_one, load_entry, normalise

app = FastAPI()
session, preprocess, frames = load_entry()


@app.post("/embed")
def embed(body: dict) -> dict:
    # A sync endpoint: FastAPI runs it in its thread pool, one ORT call per request.
    pixels = decode_one(body, preprocess, frames)
    pooled = session.run(["pooled"], {"pixel_values": pixels[None]})[0][0]
    return {"embeddings": [normalise(pooled)]}


@app.get("/readyz")
async def readyz(_: Request) -> dict:
    return {"status": "ready"}
