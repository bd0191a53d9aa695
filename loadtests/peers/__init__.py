"""Peer servers for side-by-side benchmarks: the usual alternatives a user would pick instead."""
