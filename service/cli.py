"""`jepa-serve`: run the HTTP server. Every setting is a JEPA_* environment variable (service/settings.py); the
flags below override two of them."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from service.index.dirlock import DataDirLock, DataDirLocked
from service.logs import configure_logging
from service.settings import SettingsError, did_you_mean, load_settings, unknown_variables
from service.supervisor import Supervisor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jepa-serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-repository", help="overrides JEPA_MODEL_REPOSITORY")
    parser.add_argument("--data-dir", help="overrides JEPA_DATA_DIR")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"model_repository": args.model_repository, "data_dir": args.data_dir}.items() if v}
    try:
        settings = load_settings(os.environ, **overrides)
    except SettingsError as exc:
        print(f"jepa-serve: {exc}", file=sys.stderr)
        return 2
    config = settings.config  # the groups every process runs with, built and cross-checked once (service/config.py)
    configure_logging(config.logging.format, args.log_level)
    for name in unknown_variables(os.environ):
        meant = did_you_mean(name)
        logging.getLogger("service.settings").warning(
            "%s is not a jepa-serve setting: ignored (%s)", name,
            f"did you mean {meant}?" if meant else "see service/settings.py",
        )
    lock = None
    if config.collections.storage == "local":
        # Taken before anything starts and held until the process ends, so a second server on the same
        # directory stops here with one line instead of silently sharing (and truncating) the logs.
        try:
            lock = DataDirLock.acquire(config.collections.data_dir)
        except DataDirLocked as exc:
            print(f"jepa-serve: {exc}", file=sys.stderr)
            return 1
    # Fronts and a core (service/supervisor.py). SIGTERM: the fronts stop accepting and finish their requests,
    # then the core drains the batch queues and snapshots the logs.
    return Supervisor(config, args.host, args.port, args.log_level, lock).run()
