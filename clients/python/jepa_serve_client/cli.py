"""jepa-serve-client: index a folder, search, embed files, from a shell.

    jepa-serve-client [--url URL] [--api-key KEY] index PATH --collection NAME [--model MODEL]
    jepa-serve-client [--url URL] search FILE --collection NAME [-k 5]      (or --id ID instead of FILE)
    jepa-serve-client [--url URL] embed FILE [FILE ...] [--out vectors.npy]

Exit status: 0 done, 1 any file failed, the run was interrupted or the server refused the request, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jepa_serve_client import __version__
from jepa_serve_client.client import Client, RetryPolicy
from jepa_serve_client.errors import CollectionNotFound, JepaServeError
from jepa_serve_client.indexing import IndexReport

DEFAULT_URL = "http://127.0.0.1:8000"
LISTED = 10  # files named per skip reason in the summary (failed files are all named)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jepa-serve-client", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    top.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY' when the server has keys")
    top.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    top.add_argument("--retries", type=non_negative, default=RetryPolicy.max_retries,
                     help="retries of a request the server refused for now (429, 503) or that could not connect, "
                          f"with growing waits (default {RetryPolicy.max_retries}; 0: fail at once)")
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="embed and upsert the images and videos of a folder (resumable)")
    index.add_argument("path", type=Path)
    index.add_argument("--collection", required=True)
    index.add_argument("--model", help="create the collection from this model when it does not exist")
    index.add_argument("--batch-size", type=int, default=16, help="files per batch (default 16)")
    index.add_argument("--concurrency", type=int, default=4, help="batches in flight (default 4)")
    index.add_argument("--no-recursive", dest="recursive", action="store_false", help="only the folder's own files")
    index.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar with rate and ETA (default: when stderr is a terminal)")

    search = commands.add_parser("search", help="nearest points to an image or video, or to a stored point")
    search.add_argument("file", type=Path, nargs="?")
    search.add_argument("--id", help="search with a stored point instead of a file")
    search.add_argument("--collection", required=True)
    search.add_argument("-k", type=int, default=5)

    embed = commands.add_parser("embed", help="embed files: JSON lines on stdout, or one .npy array")
    embed.add_argument("files", type=Path, nargs="+")
    embed.add_argument("--model")
    embed.add_argument("--out", type=Path, help="write the (N, dim) float32 array here instead")
    return top


def summary(report: IndexReport) -> list[str]:
    done = len(report.indexed) + len(report.skipped) + len(report.failed)
    rate = len(report.indexed) / report.seconds if report.seconds else 0.0
    lines = [f"{report.collection}: {len(report.indexed)} indexed, {len(report.skipped)} skipped, "
             f"{len(report.failed)} failed of {done + report.not_attempted} files in {report.seconds:.1f} s "
             f"({rate:.1f} files/s)"]
    by_reason: dict[str, list[str]] = defaultdict(list)
    for relative, why in report.skipped:
        by_reason[why].append(relative)
    for why, names in by_reason.items():
        shown = ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
        lines.append(f"skipped {len(names)}, {why}: {shown}")
    lines += [f"failed: {relative}: {why}" for relative, why in report.failed]
    if report.interrupted:
        lines.append(f"interrupted: {report.interrupted}; {report.not_attempted} files not sent: run the same "
                     "command again to resume")
    return lines


def run_index(client: Client, args: argparse.Namespace) -> int:
    if args.model:
        client.create_collection(args.collection, model=args.model)
    else:
        try:
            client.get_collection(args.collection)
        except CollectionNotFound:
            print(f"jepa-serve-client: collection {args.collection!r} does not exist: create it, or pass --model "
                  "to create it from a served model", file=sys.stderr)
            return 1
    report = client.index_folder(args.collection, args.path, batch_size=args.batch_size,
                                 concurrency=args.concurrency, recursive=args.recursive, progress=args.progress)
    print("\n".join(summary(report)))
    return 0 if report.ok else 1


def run_search(client: Client, args: argparse.Namespace) -> int:
    if (args.file is None) == (args.id is None):
        print("jepa-serve-client search: give a FILE or --id, not both", file=sys.stderr)
        return 2
    query = {"id": args.id} if args.id is not None else {"input": args.file}
    hits = client.search(args.collection, k=args.k, **query)
    for rank, hit in enumerate(hits, 1):
        print(f"{rank}\t{hit.score:.4f}\t{hit.id}\t{json.dumps(hit.metadata, ensure_ascii=False)}")
    return 0


def run_embed(client: Client, args: argparse.Namespace) -> int:
    embedded = client.embed(args.files, model=args.model)
    if args.out is not None:
        np.save(args.out, embedded.vectors)
        print(f"{args.out}: {embedded.vectors.shape} float32 from model {embedded.model} "
              f"(space {embedded.space_id})")
        return 0
    for path, vector in zip(args.files, embedded.vectors, strict=True):
        print(json.dumps({"file": str(path), "model": embedded.model, "space_id": embedded.space_id,
                          "embedding": [round(float(x), 7) for x in vector]}))
    return 0


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


COMMANDS = {"index": run_index, "search": run_search, "embed": run_embed}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with Client(args.url, api_key=args.api_key, timeout_s=args.timeout,
                    retry=RetryPolicy(max_retries=args.retries)) as client:
            return COMMANDS[args.command](client, args)
    except JepaServeError as exc:
        print(f"jepa-serve-client: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or folder that cannot be read
        print(f"jepa-serve-client: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
