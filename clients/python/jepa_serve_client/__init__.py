"""Python client for jepa-serve (sync `Client`, asyncio `AsyncClient`); numpy in, numpy out."""

__version__ = "1.0.0"

from jepa_serve_client import errors
from jepa_serve_client.arrays import Frames, Video
from jepa_serve_client.client import AsyncClient, Client, RetryPolicy
from jepa_serve_client.errors import JepaServeError
from jepa_serve_client.indexing import IndexReport
from jepa_serve_client.results import (
    ClassifyResult,
    Collection,
    Embeddings,
    Hit,
    Label,
    Model,
    Plan,
    Point,
    Prediction,
    StreamScore,
    SurpriseResult,
    UpsertResult,
)

__all__ = ["AsyncClient", "ClassifyResult", "Client", "Collection", "Embeddings", "Frames", "Hit", "IndexReport",
           "JepaServeError", "Label", "Model", "Plan", "Point", "Prediction", "RetryPolicy", "StreamScore",
           "SurpriseResult", "UpsertResult", "Video", "errors", "__version__"]
