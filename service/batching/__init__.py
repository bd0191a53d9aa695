from service.batching.batcher import BatchPolicy, DynamicBatcher
from service.batching.protocol import Batcher

__all__ = ["BatchPolicy", "Batcher", "DynamicBatcher"]
