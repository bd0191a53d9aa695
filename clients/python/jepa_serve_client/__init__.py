"""Python client for jepa-serve (sync `Client`, asyncio `AsyncClient`); numpy in, numpy out."""

from jepa_serve_client import errors
from jepa_serve_client.arrays import Frames, Video
from jepa_serve_client.client import AsyncClient, Client, Hit, Plan, Prediction, RetryPolicy, UpsertResult
from jepa_serve_client.errors import JepaServeError

__all__ = ["AsyncClient", "Client", "Frames", "Hit", "JepaServeError", "Plan", "Prediction", "RetryPolicy",
           "UpsertResult", "Video", "errors"]
