"""LitServe with its dynamic batching on, over the same ONNX model and decode.

Run: PEER_MODEL_DIR=model_repository/demo python -m loadtests.peers.litserve_app --port 8200
"""

from __future__ import annotations

import argparse

import litserve as ls
import numpy as np

from loadtests.peers.common import decode_one, load_entry, normalise


class EmbedAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.session, self.preprocess, self.frames = load_entry()

    def decode_request(self, request: dict) -> np.ndarray:
        return decode_one(request, self.preprocess, self.frames)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["pooled"], {"pixel_values": x})[0]

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict:
        return {"embeddings": [normalise(output)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    args = parser.parse_args()
    api = EmbedAPI(max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout, api_path="/embed")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, healthcheck_path="/readyz")
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)


if __name__ == "__main__":
    main()
