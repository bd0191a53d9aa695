"""JEPA_DECODE_THREADS: 0 (the default) is one decode thread per core the process may run on."""

import os

from service.settings import Settings
from service.state import MAX_AUTO_DECODE_THREADS, Executors, decode_thread_count


def test_auto_decode_threads_follow_the_cpu_affinity_and_an_explicit_count_wins():
    assert Settings().decode_threads == 0
    usable = len(os.sched_getaffinity(0))
    assert decode_thread_count(0) == min(usable, MAX_AUTO_DECODE_THREADS)
    assert decode_thread_count(3) == 3
    config = Settings().config
    executors = Executors.from_config(config.processes, config.media)
    try:
        assert executors.decode._max_workers == min(usable, MAX_AUTO_DECODE_THREADS)
    finally:
        executors.shutdown()
