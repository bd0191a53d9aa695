"""jepa-serve: the HTTP service. Reads model-repository entries only; never imports torch."""
