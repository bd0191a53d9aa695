"""Decoding and preprocessing of request media into model-ready float arrays."""
