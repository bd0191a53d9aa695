from service.batching.batcher import BatchPolicy, DynamicBatcher

__all__ = ["BatchPolicy", "DynamicBatcher"]
