"""`Client` (sync) and `AsyncClient` for jepa-serve, on httpx.

Each API call is written once, as a generator that yields the HTTP calls it needs and receives their JSON
(`_Operations`); `Client` drives it with blocking requests, `AsyncClient` with awaited ones. So chunking
(uploads sized by the server's GET /limits) and result decoding are the same code for both.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import numpy as np

from jepa_serve_client import __version__
from jepa_serve_client.arrays import Media, as_matrix, decode_array, encode_array, media_input
from jepa_serve_client.errors import (
    APIConnectionError,
    APITimeoutError,
    JepaServeError,
    TransportError,
    UnexpectedResponse,
    error_from_response,
)
from jepa_serve_client.indexing import (
    BatchOutcome,
    FileEntry,
    IndexReport,
    Timer,
    batches,
    index_batch,
    progress_bar,
    scan,
)
from jepa_serve_client.results import (
    ClassifyResult,
    Collection,
    Embeddings,
    Hit,
    Model,
    Plan,
    Point,
    Prediction,
    SurpriseResult,
    UpsertResult,
)
from jepa_serve_client.stream import AsyncSurpriseStream, SurpriseStream, stream_url

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    index_offset: int = 0  # where this chunk starts in the caller's batch: added to an error's detail.index


Operation = Generator[Call, Any, T]


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried: only what the server surely did not do, so a retry never does anything twice.

    - 429 (overloaded, rate limited) and 503 (not ready, storage unreachable): after the server's Retry-After
      when it sends one, else backoff_s x 2^attempt;
    - a connection that could not be opened (refused, DNS, connect timeout: `APIConnectionError` with
      `sent=False`), after backoff_s x 2^attempt, when retry_connect;
    - never a read timeout or a connection lost mid-answer (`APITimeoutError`, `APIConnectionError` with
      `sent=True`): the server may still be computing it; nor any other error.

    Each wait is at most max_backoff_s, all waits of one call at most max_total_s, at most max_retries retries."""

    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_total_s: float = 120.0
    statuses: frozenset[int] = frozenset({429, 503})
    retry_connect: bool = True

    def delay(self, attempt: int, error: JepaServeError, waited_s: float) -> float | None:
        if attempt >= self.max_retries or not self._retryable(error):
            return None
        wait = error.retry_after if error.retry_after is not None else self.backoff_s * 2**attempt
        wait = min(max(wait, 0.0), self.max_backoff_s)
        return None if waited_s + wait > self.max_total_s else wait

    def _retryable(self, error: JepaServeError) -> bool:
        if isinstance(error, TransportError):
            return self.retry_connect and isinstance(error, APIConnectionError) and not error.sent
        return error.status in self.statuses


def path(*parts: str) -> str:
    """/a/b/c with every part percent-encoded: an id such as "q?x=1", "a/b" or "50%" stays one path segment, and
    "." or ".." is not taken for a step up the path."""
    return "".join("/" + (quote(str(part), safe="") if part not in (".", "..") else "%2E" * len(part))
                   for part in parts)


BODY_SHARE = 0.9  # of max_body_bytes a chunk may fill: room for JSON keys and options
_OUTPUT_KEY = {"pooled": "embeddings", "tokens": "tokens", "frames": "frames"}


def _chunks(sizes: Sequence[int], max_items: int, max_bytes: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) runs of items, each within max_items and (but for a lone oversize item) max_bytes."""
    runs, start, used = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_items or used + size > max_bytes):
            runs.append((start, i))
            start, used = i, 0
        used += size
    if start < len(sizes):
        runs.append((start, len(sizes)))
    return runs


def _hit(answer: dict[str, Any]) -> Hit:
    return Hit(id=answer["id"], score=answer["score"], metadata=answer.get("metadata") or {})


def _joined(answers: list[dict[str, Any]], key: str) -> list[Any] | None:
    parts = [answer.get(key) for answer in answers]
    return None if any(part is None for part in parts) else [x for part in parts for x in part]


def _embeddings(answers: list[dict[str, Any]], output: str) -> Embeddings:
    """The answers of one embed call's chunks as one Embeddings (model and space from the first)."""
    vectors = np.concatenate([decode_array(answer[_OUTPUT_KEY[output]]) for answer in answers])
    first = answers[0]
    return Embeddings(vectors=vectors, model=first["model"], space_id=first["space_id"], output=output,
                      cached=_joined(answers, "cached"), sampling=_joined(answers, "sampling"),
                      response=first if len(answers) == 1 else {"chunks": answers})


class _Operations:
    """The API, written once: each method is a generator of `Call`s that returns the decoded result."""

    def __init__(self) -> None:
        self.limits: dict[str, int] | None = None

    def server_limits(self) -> Operation[dict[str, int]]:
        if self.limits is None:
            self.limits = yield Call("GET", "/limits")
        return self.limits

    def embed(self, inputs: Iterable[Media], *, model: str | None, output: str, normalize: bool,
              options: dict[str, Any]) -> Operation[Embeddings]:
        limits = yield from self.server_limits()
        items = [media_input(item) for item in inputs]
        if not items:
            raise ValueError("embed needs at least one input")
        sizes = [len(json.dumps(item)) for item in items]
        body = {"output": output, "normalize": normalize, "encoding": "base64", "dtype": "float32", **options}
        if model is not None:
            body["model"] = model
        answers = []
        for start, stop in _chunks(sizes, limits["max_request_items"], int(limits["max_body_bytes"] * BODY_SHARE)):
            answers.append((yield Call("POST", "/embed", {**body, "inputs": items[start:stop]}, index_offset=start)))
        return _embeddings(answers, output)

    def upsert(self, collection: str, ids: Sequence[str], *, vectors: Any, inputs: Iterable[Media] | None,
               metadata: Sequence[dict[str, Any]] | None, space_id: str | None) -> Operation[UpsertResult]:
        if (vectors is None) == (inputs is None):
            raise ValueError("give exactly one of vectors or inputs")
        if isinstance(vectors, Embeddings) and space_id is None:
            space_id = vectors.space_id  # so a collection of another space refuses them (409)
        limits = yield from self.server_limits()
        ids = [str(i) for i in ids]
        meta_sizes = [len(json.dumps(m)) for m in metadata] if metadata is not None else [2] * len(ids)
        if metadata is not None and len(metadata) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(metadata)} metadata entries")
        budget = int(limits["max_body_bytes"] * BODY_SHARE)
        if vectors is not None:
            matrix = as_matrix(vectors)
            if len(matrix) != len(ids):
                raise ValueError(f"{len(ids)} ids but {len(matrix)} vectors")
            row_bytes = matrix.shape[1] * 4
            max_rows = max(1, min(limits["max_upsert_vectors"], limits["max_upsert_bytes"] // max(row_bytes, 1)))
            sizes = [row_bytes * 4 // 3 + len(i) + 4 + m for i, m in zip(ids, meta_sizes, strict=True)]
            runs = _chunks(sizes, max_rows, budget)
            payload = lambda a, b: {"vectors": encode_array(matrix[a:b])}  # noqa: E731
        else:
            items = [media_input(item) for item in inputs or ()]
            if len(items) != len(ids):
                raise ValueError(f"{len(ids)} ids but {len(items)} inputs")
            sizes = [len(json.dumps(item)) + len(i) + 4 + m for item, i, m in zip(items, ids, meta_sizes, strict=True)]
            runs = _chunks(sizes, limits["max_request_items"], budget)
            payload = lambda a, b: {"inputs": items[a:b]}  # noqa: E731
        upserted, count = 0, 0
        for start, stop in runs:
            body = {"ids": ids[start:stop], **payload(start, stop)}
            if metadata is not None:
                body["metadata"] = list(metadata[start:stop])
            if space_id is not None:
                body["space_id"] = space_id
            answer = yield Call("POST", path("collections", collection, "points"), body, index_offset=start)
            upserted += answer["upserted"]
            count = answer["count"]
        return UpsertResult(upserted=upserted, count=count, requests=len(runs))

    def delete(self, collection: str, ids: Sequence[str]) -> Operation[int]:
        limits = yield from self.server_limits()
        ids, deleted, step = [str(i) for i in ids], 0, limits["max_request_items"]
        for start in range(0, len(ids), step):
            answer = yield Call("DELETE", path("collections", collection, "points"),
                                {"ids": ids[start:start + step]}, index_offset=start)
            deleted += answer["deleted"]
        return deleted

    def search(self, collection: str, *, vector: Any, vectors: Any, input: Media | None, id: str | None, k: int,
               filter: dict[str, Any] | None, params: dict[str, Any] | None, space_id: str | None,
               ) -> Operation[list[Hit] | list[list[Hit]]]:
        if sum(x is not None for x in (vector, vectors, input, id)) != 1:
            raise ValueError("give exactly one of vector, vectors, input or id")
        body: dict[str, Any] = {"collection": collection, "k": k}
        for key, value in (("filter", filter), ("params", params), ("space_id", space_id)):
            if value is not None:
                body[key] = value
        if vectors is None:
            if vector is not None:
                body["vector"] = np.asarray(vector, dtype=np.float32).ravel().tolist()
            elif input is not None:
                body["input"] = media_input(input)
            else:
                body["id"] = id
            answer = yield Call("POST", "/search", body)
            return [_hit(h) for h in answer["results"][0]]
        limits = yield from self.server_limits()
        matrix, step, results = as_matrix(vectors), limits["max_request_items"], []
        for start in range(0, len(matrix), step):
            answer = yield Call("POST", "/search", {**body, "vectors": encode_array(matrix[start:start + step])},
                                index_offset=start)
            results.extend([_hit(h) for h in hits] for hits in answer["results"])
        return results

    def predict_future(self, *, context: Sequence[Media] | None, state: Any, actions: Any, model: str | None,
                       output: str, options: dict[str, Any]) -> Operation[Prediction]:
        body: dict[str, Any] = {"output": output, "encoding": "base64", **options}
        if model is not None:
            body["model"] = model
        if context is not None:
            body["context"] = [media_input(item) for item in context]
        if state is not None:
            body["state"] = np.asarray(state, dtype=np.float32).ravel().tolist()
        if actions is not None:
            body["actions"] = np.asarray(actions, dtype=np.float32).tolist()
        answer = yield Call("POST", "/predict_future", body)
        tokens = answer.get("tokens")
        return Prediction(states=decode_array(answer["states"]), initial_state=decode_array(answer["initial_state"]),
                          tokens=None if tokens is None else decode_array(tokens), response=answer)

    def plan(self, *, observation: Sequence[Media], goal: Media | None, goal_state: Any, model: str | None,
             options: dict[str, Any]) -> Operation[Plan]:
        body: dict[str, Any] = {"observation": [media_input(item) for item in observation], **options}
        if model is not None:
            body["model"] = model
        if goal is not None:
            body["goal"] = media_input(goal)
        if goal_state is not None:
            body["goal_state"] = np.asarray(goal_state, dtype=np.float32).ravel().tolist()
        answer = yield Call("POST", "/plan", body)
        return Plan(actions=decode_array(answer["actions"]), cost=answer["cost"],
                    zero_action_cost=answer["zero_action_cost"],
                    predicted_states=decode_array(answer["predicted_states"]), response=answer)

    def surprise(self, *, observations: Sequence[Media] | None, states: Any, actions: Any, model: str | None,
                 options: dict[str, Any]) -> Operation[SurpriseResult]:
        body: dict[str, Any] = dict(options)
        if model is not None:
            body["model"] = model
        if observations is not None:
            body["observations"] = [media_input(item) for item in observations]
        if states is not None:
            body["states"] = np.asarray(states, dtype=np.float32).tolist()
        if actions is not None:
            body["actions"] = np.asarray(actions, dtype=np.float32).tolist()
        if body.get("proprio") is not None:
            body["proprio"] = np.asarray(body["proprio"], dtype=np.float32).tolist()
        return SurpriseResult.from_answer((yield Call("POST", "/surprise", body)))

    def classify(self, *, inputs: Sequence[Media] | None, vectors: Any, head: str | None, collection: str | None,
                 model: str | None, options: dict[str, Any]) -> Operation[ClassifyResult]:
        body: dict[str, Any] = {key: value for key, value in
                                {"head": head, "collection": collection, "model": model, **options}.items()
                                if value is not None}
        if inputs is not None:
            body["inputs"] = [media_input(item) for item in inputs]
        if vectors is not None:
            body["vectors"] = as_matrix(vectors).tolist()
        return ClassifyResult.from_answer((yield Call("POST", "/classify", body)))

    def get_point(self, collection: str, point_id: str) -> Operation[Point]:
        return Point.from_answer((yield Call("GET", path("collections", collection, "points", point_id))))

    def collection(self, call: Call) -> Operation[Collection]:
        return Collection.from_answer((yield call))

    def list_collections(self) -> Operation[list[Collection]]:
        return [Collection.from_answer(c) for c in (yield Call("GET", "/collections"))]

    def models(self) -> Operation[list[Model]]:
        return [Model.from_answer(m) for m in (yield Call("GET", "/models"))["models"]]

    def plain(self, call: Call) -> Operation[Any]:
        return (yield call)


class _Api:
    """The public methods, shared by both clients: each returns `self._run(operation)`, which is the result for
    `Client` and an awaitable of it for `AsyncClient`."""

    _ops: _Operations

    def _run(self, operation: Operation[Any]) -> Any:
        raise NotImplementedError

    def embed(self, inputs: Iterable[Media], *, model: str | None = None, output: str = "pooled",
              normalize: bool = True, **options: Any) -> Any:
        """Inputs (paths, bytes, `Video`, `Frames`, float arrays) -> `Embeddings`: `.vectors` float32 (N, dim) pooled,
        or (N, tokens, dim) / (N, steps, dim) for output="tokens" / "frames", with `.model` and `.space_id`. Sent in
        chunks within the server's limits; options: num_frames, stride, fps, start_s, timeout_ms."""
        return self._run(self._ops.embed(inputs, model=model, output=output, normalize=normalize, options=options))

    def create_collection(self, name: str, *, model: str | None = None, dim: int | None = None,
                          metric: str = "cosine", index: str = "flat", **options: Any) -> Any:
        """A `Collection` (idempotent: the existing one when its configuration is the same, else CollectionExists).
        `model` takes the dimension and embedding space from a served model; options: space_id, params."""
        body = {k: v for k, v in {"model": model, "dim": dim, "metric": metric, "index": index, **options}.items()
                if v is not None}
        return self._run(self._ops.collection(Call("PUT", path("collections", name), body)))

    def get_collection(self, name: str) -> Any:
        """A `Collection`: count, dim, metric, index, space_id, model, memory_bytes."""
        return self._run(self._ops.collection(Call("GET", path("collections", name))))

    def list_collections(self) -> Any:
        """Every `Collection`."""
        return self._run(self._ops.list_collections())

    def drop_collection(self, name: str) -> Any:
        """Delete a collection and its points (None)."""
        return self._run(self._ops.plain(Call("DELETE", path("collections", name))))

    def upsert(self, collection: str, ids: Sequence[str], vectors: Any = None, *, inputs: Iterable[Media] | None = None,
               metadata: Sequence[dict[str, Any]] | None = None, space_id: str | None = None) -> Any:
        """Store points from vectors (numpy (N, dim), or `Embeddings`, whose space_id is then declared) or media
        inputs, in as many requests as the server's limits need (GET /limits); returns UpsertResult(upserted,
        count, requests). An id is replaced when it exists."""
        return self._run(self._ops.upsert(collection, ids, vectors=vectors, inputs=inputs, metadata=metadata,
                                          space_id=space_id))

    def delete(self, collection: str, ids: Sequence[str]) -> Any:
        """How many of the ids were deleted (unknown ids are ignored)."""
        return self._run(self._ops.delete(collection, ids))

    def get_point(self, collection: str, point_id: str) -> Any:
        """One stored `Point` (id, vector, metadata); PointNotFound if absent."""
        return self._run(self._ops.get_point(collection, point_id))

    def search(self, collection: str, vector: Any = None, *, vectors: Any = None, input: Media | None = None,
               id: str | None = None, k: int = 10, filter: dict[str, Any] | None = None,
               params: dict[str, Any] | None = None, space_id: str | None = None) -> Any:
        """`Hit`s (id, score, metadata) of one query (a vector, a media input or a stored id), best first, or one
        list of hits per row of `vectors`."""
        return self._run(self._ops.search(collection, vector=vector, vectors=vectors, input=input, id=id, k=k,
                                          filter=filter, params=params, space_id=space_id))

    def predict_future(self, context: Sequence[Media] | None = None, actions: Any = None, *, state: Any = None,
                       model: str | None = None, output: str = "pooled", **options: Any) -> Any:
        """A `Prediction`: the predicted state after each action (`.states`), from context frames or a `state`."""
        return self._run(self._ops.predict_future(context=context, state=state, actions=actions, model=model,
                                                  output=output, options=options))

    def plan(self, observation: Sequence[Media], goal: Media | None = None, *, goal_state: Any = None,
             model: str | None = None, **options: Any) -> Any:
        """A `Plan` (actions, cost, zero_action_cost, predicted_states). Options: horizon, samples, iterations, elites,
        cost, subspace, action_repeat, seed, timeout_ms."""
        return self._run(self._ops.plan(observation=observation, goal=goal, goal_state=goal_state, model=model,
                                        options=options))

    def surprise(self, observations: Sequence[Media] | None = None, actions: Any = None, *, states: Any = None,
                 model: str | None = None, **options: Any) -> Any:
        """A `SurpriseResult`: a score per step (`steps`, `scores`, `distances`, `surprising`). Options:
        proprio (V-JEPA 2-AC: the end-effector pose at each frame, (n, 7)), threshold, num_frames, stride, fps,
        start_s, timeout_ms."""
        return self._run(self._ops.surprise(observations=observations, states=states, actions=actions, model=model,
                                            options=options))

    def classify(self, inputs: Sequence[Media] | None = None, *, vectors: Any = None, head: str | None = None,
                 collection: str | None = None, model: str | None = None, **options: Any) -> Any:
        """A `ClassifyResult`: per input, `Label`s best first (`.labels`, `.top`): a probe `head`, or a kNN vote over
        a `collection` (options: k, label_field, vote, filter, top_k, timeout_ms)."""
        return self._run(self._ops.classify(inputs=inputs, vectors=vectors, head=head, collection=collection,
                                            model=model, options=options))

    def models(self) -> Any:
        """Every served `Model` (name, family, space_id, dim, input, predictor, surprise, heads)."""
        return self._run(self._ops.models())

    def limits(self) -> Any:
        """The server's request limits (GET /limits), fetched once per client."""
        return self._run(self._ops.server_limits())


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": f"jepa-serve-client/{__version__}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _stream_headers(http: httpx.Client | httpx.AsyncClient) -> dict[str, str]:
    """The key and user agent for the WebSocket handshake (not httpx's Connection and encoding headers)."""
    return {name: http.headers[name] for name in ("authorization", "user-agent") if name in http.headers}


def _answer(response: httpx.Response, call: Call) -> tuple[Any, JepaServeError | None]:
    if response.status_code < 400:
        try:
            return (response.json() if response.content else None), None
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            return None, UnexpectedResponse(f"{call.method} {call.path} answered {response.status_code} with {kind}, "
                                            "not JSON: is this URL a jepa-serve server?", status=response.status_code)
    try:
        body = response.json()
    except ValueError:
        body = None
    retry_after = response.headers.get("retry-after")
    error = error_from_response(response.status_code, body, float(retry_after) if retry_after else None)
    if call.index_offset and error.index is not None:
        error.detail["index"] = error.index + call.index_offset  # the position in the caller's whole batch
    return None, error


def transport_error(exc: httpx.TransportError, call: Call) -> TransportError:
    """httpx's failure as the client's: `sent` False when the request surely never reached the server."""
    try:
        where = f"{call.method} {exc.request.url}"
    except RuntimeError:  # no request attached
        where = f"{call.method} {call.path}"
    error: TransportError
    if isinstance(exc, httpx.TimeoutException):
        sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
        error = APITimeoutError(f"{where} timed out ({type(exc).__name__}): {exc}", sent=sent)
    else:
        sent = not isinstance(exc, (httpx.ConnectError, httpx.UnsupportedProtocol))
        error = APIConnectionError(f"{where} failed ({type(exc).__name__}): {exc}", sent=sent)
    error.__cause__ = exc  # the traceback shows httpx's own error
    return error


class Client(_Api):
    """Blocking client. `Client("http://127.0.0.1:8000", api_key=...)`; use as a context manager or `close()`."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy = RetryPolicy(), transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._http = httpx.Client(base_url=url, headers=_headers(api_key), timeout=timeout_s, transport=transport)
        self._ops, self.retry, self._sleep, self.timeout_s = _Operations(), retry, sleep, timeout_s

    def _send(self, call: Call) -> Any:
        waited, attempt = 0.0, 0
        while True:
            try:
                answer, error = _answer(self._http.request(call.method, call.path, json=call.json), call)
            except httpx.TransportError as exc:
                answer, error = None, transport_error(exc, call)
            if error is None:
                return answer
            wait = self.retry.delay(attempt, error, waited)
            if wait is None:
                raise error
            self._sleep(wait)
            waited, attempt = waited + wait, attempt + 1

    def _run(self, operation: Operation[T]) -> T:
        """Drive an operation: each call's answer is sent into it, each error thrown into it (it may catch it)."""
        try:
            call = next(operation)
            while True:
                try:
                    answer = self._send(call)
                except JepaServeError as error:
                    call = operation.throw(error)
                else:
                    call = operation.send(answer)
        except StopIteration as done:
            return done.value

    def stream_surprise(self, model: str | None = None, threshold: float | None = None) -> SurpriseStream:
        """Open the WebSocket /stream/surprise (after its {"type": "ready"} message, in `.ready`): `send(frame,
        action)` -> StreamScore, `scores(frames, actions)` pipelined. Use it as a context manager."""
        return SurpriseStream(stream_url(str(self._http.base_url), model, threshold), _stream_headers(self._http),
                              self.timeout_s)

    def index_folder(self, collection: str, folder: str | os.PathLike, *, batch_size: int = 16,
                     concurrency: int = 4, recursive: bool = True, progress: bool | None = None,
                     extra_metadata: Callable[[Path], dict[str, Any]] | None = None) -> IndexReport:
        """Embed and upsert the images and videos under `folder` into `collection` (which must exist), at most
        `concurrency` batches of `batch_size` files in flight; resumable, with a progress bar (None: when stderr
        is a terminal). See jepa_serve_client.indexing for the ids, metadata and what is skipped."""
        timer, (entries, unsupported) = Timer(), scan(folder, recursive)
        report = IndexReport(collection, str(folder), skipped=list(unsupported))
        self.limits()
        with progress_bar(len(entries), collection, progress) as bar, \
                ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="index") as pool:
            futures = {pool.submit(self._run, index_batch(self._ops, collection, batch, extra_metadata)): batch
                       for batch in batches(entries, batch_size)}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                outcome = future.result()
                if outcome.interrupted and not report.interrupted:  # stop: the batches not started stay for later
                    report.not_attempted = sum(len(futures[f]) for f in futures if f.cancel())
                report.add(outcome)
                bar.update(outcome.done)
        report.seconds = timer.seconds()
        return report

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Api):
    """asyncio client with the same methods as `Client`, each awaited."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy = RetryPolicy(), transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self._http = httpx.AsyncClient(base_url=url, headers=_headers(api_key), timeout=timeout_s, transport=transport)
        self._ops, self.retry, self._sleep, self.timeout_s = _Operations(), retry, sleep, timeout_s

    async def _send(self, call: Call) -> Any:
        waited, attempt = 0.0, 0
        while True:
            try:
                answer, error = _answer(await self._http.request(call.method, call.path, json=call.json), call)
            except httpx.TransportError as exc:
                answer, error = None, transport_error(exc, call)
            if error is None:
                return answer
            wait = self.retry.delay(attempt, error, waited)
            if wait is None:
                raise error
            await self._sleep(wait)
            waited, attempt = waited + wait, attempt + 1

    async def _run(self, operation: Operation[T]) -> T:  # type: ignore[override]
        try:
            call = next(operation)
            while True:
                try:
                    answer = await self._send(call)
                except JepaServeError as error:
                    call = operation.throw(error)
                else:
                    call = operation.send(answer)
        except StopIteration as done:
            return done.value

    def stream_surprise(self, model: str | None = None, threshold: float | None = None) -> AsyncSurpriseStream:
        """`async with client.stream_surprise() as stream:` (or `stream = await client.stream_surprise()`): the
        asyncio twin of Client.stream_surprise."""
        return AsyncSurpriseStream(stream_url(str(self._http.base_url), model, threshold),
                                   _stream_headers(self._http), self.timeout_s)

    async def index_folder(self, collection: str, folder: str | os.PathLike, *, batch_size: int = 16,
                           concurrency: int = 4, recursive: bool = True, progress: bool | None = None,
                           extra_metadata: Callable[[Path], dict[str, Any]] | None = None) -> IndexReport:
        """The asyncio twin of Client.index_folder (the folder is walked in this thread)."""
        timer, (entries, unsupported) = Timer(), scan(folder, recursive)
        report = IndexReport(collection, str(folder), skipped=list(unsupported))
        await self.limits()
        gate = asyncio.Semaphore(max(1, concurrency))

        async def run(batch: list[FileEntry]) -> BatchOutcome:
            async with gate:
                return await self._run(index_batch(self._ops, collection, batch, extra_metadata))

        tasks = {asyncio.ensure_future(run(batch)): batch for batch in batches(entries, batch_size)}
        with progress_bar(len(entries), collection, progress) as bar:
            for next_done in asyncio.as_completed(tasks):
                outcome = await next_done
                report.add(outcome)
                bar.update(outcome.done)
                if outcome.interrupted:  # stop: what was not stored is left for the next run
                    stopped = [task for task in tasks if not task.done() and task.cancel()]
                    report.not_attempted = sum(len(tasks[task]) for task in stopped)
                    await asyncio.gather(*stopped, return_exceptions=True)
                    break
        report.seconds = timer.seconds()
        return report

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
