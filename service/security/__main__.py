"""`python -m service.security`: make API keys and their config entries.

  new-key --name ci --scopes read,write   prints the key (once) and the entry to configure
  hash                                     reads a key on stdin, prints its sha256
  init-file PATH --name admin              first start of a deployment: writes PATH with one new key's entry,
                                           prints the key; does nothing if PATH already has entries
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from service.security.keys import ApiKey, KeyRing, hash_key, new_key
from service.security.policy import SCOPES


def _entry(name: str, key: str, scopes: str) -> str:
    entry = f"{name}:{hash_key(key)}:{scopes}"
    ApiKey.parse(entry)  # same validation as the server
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.security", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("new-key", help="a new random key and its config entry")
    make.add_argument("--name", required=True)
    make.add_argument("--scopes", default="read", help=f"comma-separated, of {sorted(SCOPES)}")
    sub.add_parser("hash", help="sha256 of a key read from stdin")
    init = sub.add_parser("init-file", help="create a keys file with one admin key if it has none")
    init.add_argument("path", type=Path)
    init.add_argument("--name", default="admin")
    init.add_argument("--scopes", default="read,write,ops")
    args = parser.parse_args(argv)

    if args.command == "new-key":
        key = new_key()
        print(f"key (shown once, give it to the client): {key}")
        print(f"entry (for JEPA_API_KEYS or the keys file): {_entry(args.name, key, args.scopes)}")
    elif args.command == "hash":
        print(hash_key(sys.stdin.readline().strip()))
    else:
        path: Path = args.path
        if path.exists() and len(KeyRing.from_config("", path)):
            print(f"{path} already holds API keys; nothing to do")
            return 0
        key = new_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Only the digest is written; 0644 so that a non-root server in another container can read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(
                "# name:sha256(key):scopes, one per line. Add keys with `python -m service.security new-key`.\n"
            )
            handle.write(_entry(args.name, key, args.scopes) + "\n")
        print(f"created {path} with key {args.name!r} ({args.scopes}).")
        print(f"API key (shown once, store it now): {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
