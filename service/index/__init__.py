"""Collections: FAISS indexes + id map + metadata, with durable storage."""

from service.index.collection import Collection, CollectionConfig, Hit
from service.index.store import CollectionStore

__all__ = ["Collection", "CollectionConfig", "CollectionStore", "Hit"]
