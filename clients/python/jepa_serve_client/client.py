"""`Client` (sync) and `AsyncClient` for jepa-serve, on httpx.

Each API call is written once, as a generator that yields the HTTP calls it needs and receives their JSON
(`_Operations`); `Client` drives it with blocking requests, `AsyncClient` with awaited ones. So chunking
(uploads sized by the server's GET /limits) and result decoding are the same code for both.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np

from jepa_serve_client.arrays import Media, as_matrix, decode_array, encode_array, media_input
from jepa_serve_client.errors import JepaServeError, error_from_response

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
    """Retries of 429 (overloaded, rate limited) and 503 (not ready, storage unreachable): nothing was done, so
    a retry is safe. Waits the server's Retry-After when it sends one, else backoff_s x 2^attempt; each wait at
    most max_backoff_s, all waits of one call at most max_total_s."""

    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_total_s: float = 120.0
    statuses: frozenset[int] = frozenset({429, 503})

    def delay(self, attempt: int, error: JepaServeError, waited_s: float) -> float | None:
        if error.status not in self.statuses or attempt >= self.max_retries:
            return None
        wait = error.retry_after if error.retry_after is not None else self.backoff_s * 2**attempt
        wait = min(max(wait, 0.0), self.max_backoff_s)
        return None if waited_s + wait > self.max_total_s else wait


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class UpsertResult:
    upserted: int
    count: int
    requests: int


@dataclass(frozen=True)
class Prediction:
    states: np.ndarray  # (steps, dim): the predicted state after each action
    initial_state: np.ndarray  # (dim,)
    tokens: np.ndarray | None  # (steps, tokens, dim) with output="tokens"
    response: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Plan:
    actions: np.ndarray  # (horizon, action_dim)
    cost: float
    zero_action_cost: float
    predicted_states: np.ndarray  # (horizon, dim)
    response: dict[str, Any] = field(repr=False)


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


class _Operations:
    """The API, written once: each method is a generator of `Call`s that returns the decoded result."""

    def __init__(self) -> None:
        self.limits: dict[str, int] | None = None

    def server_limits(self) -> Operation[dict[str, int]]:
        if self.limits is None:
            self.limits = yield Call("GET", "/limits")
        return self.limits

    def embed(self, inputs: Iterable[Media], *, model: str | None, output: str, normalize: bool,
              options: dict[str, Any]) -> Operation[np.ndarray]:
        limits = yield from self.server_limits()
        items = [media_input(item) for item in inputs]
        sizes = [len(json.dumps(item)) for item in items]
        body = {"output": output, "normalize": normalize, "encoding": "base64", "dtype": "float32", **options}
        if model is not None:
            body["model"] = model
        parts = []
        for start, stop in _chunks(sizes, limits["max_request_items"], int(limits["max_body_bytes"] * BODY_SHARE)):
            answer = yield Call("POST", "/embed", {**body, "inputs": items[start:stop]}, index_offset=start)
            parts.append(decode_array(answer[_OUTPUT_KEY[output]]))
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def upsert(self, collection: str, ids: Sequence[str], *, vectors: Any, inputs: Iterable[Media] | None,
               metadata: Sequence[dict[str, Any]] | None, space_id: str | None) -> Operation[UpsertResult]:
        if (vectors is None) == (inputs is None):
            raise ValueError("give exactly one of vectors or inputs")
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
            answer = yield Call("POST", f"/collections/{collection}/points", body, index_offset=start)
            upserted += answer["upserted"]
            count = answer["count"]
        return UpsertResult(upserted=upserted, count=count, requests=len(runs))

    def delete(self, collection: str, ids: Sequence[str]) -> Operation[int]:
        limits = yield from self.server_limits()
        ids, deleted, step = [str(i) for i in ids], 0, limits["max_request_items"]
        for start in range(0, len(ids), step):
            answer = yield Call("DELETE", f"/collections/{collection}/points", {"ids": ids[start:start + step]},
                                index_offset=start)
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
            return [Hit(**h) for h in answer["results"][0]]
        limits = yield from self.server_limits()
        matrix, step, results = as_matrix(vectors), limits["max_request_items"], []
        for start in range(0, len(matrix), step):
            answer = yield Call("POST", "/search", {**body, "vectors": encode_array(matrix[start:start + step])},
                                index_offset=start)
            results.extend([Hit(**h) for h in hits] for hits in answer["results"])
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
                 options: dict[str, Any]) -> Operation[dict[str, Any]]:
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
        return (yield Call("POST", "/surprise", body))

    def classify(self, *, inputs: Sequence[Media] | None, vectors: Any, head: str | None, collection: str | None,
                 model: str | None, options: dict[str, Any]) -> Operation[list[list[dict[str, Any]]]]:
        body: dict[str, Any] = {key: value for key, value in
                                {"head": head, "collection": collection, "model": model, **options}.items()
                                if value is not None}
        if inputs is not None:
            body["inputs"] = [media_input(item) for item in inputs]
        if vectors is not None:
            body["vectors"] = as_matrix(vectors).tolist()
        answer = yield Call("POST", "/classify", body)
        return answer["labels"]

    def get_point(self, collection: str, point_id: str) -> Operation[tuple[np.ndarray, dict[str, Any]]]:
        answer = yield Call("GET", f"/collections/{collection}/points/{point_id}")
        return np.asarray(answer["vector"], dtype=np.float32), answer["metadata"]

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
        """Inputs (paths, bytes, `Video`, `Frames`, float arrays) -> float32 array: (N, dim) pooled, or (N, tokens,
        dim) / (N, steps, dim) for output="tokens" / "frames". Sent in chunks within the server's limits; options:
        num_frames, stride, fps, start_s, timeout_ms."""
        return self._run(self._ops.embed(inputs, model=model, output=output, normalize=normalize, options=options))

    def create_collection(self, name: str, *, model: str | None = None, dim: int | None = None,
                          metric: str = "cosine", index: str = "flat", **options: Any) -> Any:
        body = {k: v for k, v in {"model": model, "dim": dim, "metric": metric, "index": index, **options}.items()
                if v is not None}
        return self._run(self._ops.plain(Call("PUT", f"/collections/{name}", body)))

    def get_collection(self, name: str) -> Any:
        return self._run(self._ops.plain(Call("GET", f"/collections/{name}")))

    def list_collections(self) -> Any:
        return self._run(self._ops.plain(Call("GET", "/collections")))

    def drop_collection(self, name: str) -> Any:
        return self._run(self._ops.plain(Call("DELETE", f"/collections/{name}")))

    def upsert(self, collection: str, ids: Sequence[str], vectors: Any = None, *, inputs: Iterable[Media] | None = None,
               metadata: Sequence[dict[str, Any]] | None = None, space_id: str | None = None) -> Any:
        """Store points from vectors (numpy (N, dim)) or media inputs, in as many requests as the server's limits
        need (GET /limits); returns UpsertResult(upserted, count, requests)."""
        return self._run(self._ops.upsert(collection, ids, vectors=vectors, inputs=inputs, metadata=metadata,
                                          space_id=space_id))

    def delete(self, collection: str, ids: Sequence[str]) -> Any:
        return self._run(self._ops.delete(collection, ids))

    def get_point(self, collection: str, point_id: str) -> Any:
        """(vector, metadata) of one stored point."""
        return self._run(self._ops.get_point(collection, point_id))

    def search(self, collection: str, vector: Any = None, *, vectors: Any = None, input: Media | None = None,
               id: str | None = None, k: int = 10, filter: dict[str, Any] | None = None,
               params: dict[str, Any] | None = None, space_id: str | None = None) -> Any:
        """Hits of one query (a vector, a media input or a stored id), or one list of hits per row of `vectors`."""
        return self._run(self._ops.search(collection, vector=vector, vectors=vectors, input=input, id=id, k=k,
                                          filter=filter, params=params, space_id=space_id))

    def predict_future(self, context: Sequence[Media] | None = None, actions: Any = None, *, state: Any = None,
                       model: str | None = None, output: str = "pooled", **options: Any) -> Any:
        return self._run(self._ops.predict_future(context=context, state=state, actions=actions, model=model,
                                                  output=output, options=options))

    def plan(self, observation: Sequence[Media], goal: Media | None = None, *, goal_state: Any = None,
             model: str | None = None, **options: Any) -> Any:
        """Options: horizon, samples, iterations, elites, cost, subspace, action_repeat, seed, timeout_ms."""
        return self._run(self._ops.plan(observation=observation, goal=goal, goal_state=goal_state, model=model,
                                        options=options))

    def surprise(self, observations: Sequence[Media] | None = None, actions: Any = None, *, states: Any = None,
                 model: str | None = None, **options: Any) -> Any:
        """The /surprise response: a score per step (`steps`, `scores`, `distances`, `surprising`). Options:
        proprio (V-JEPA 2-AC: the end-effector pose at each frame, (n, 7)), threshold, num_frames, stride, fps,
        start_s, timeout_ms."""
        return self._run(self._ops.surprise(observations=observations, states=states, actions=actions, model=model,
                                            options=options))

    def classify(self, inputs: Sequence[Media] | None = None, *, vectors: Any = None, head: str | None = None,
                 collection: str | None = None, model: str | None = None, **options: Any) -> Any:
        """Per input, labels best first ({"label", "score", "votes"}): a probe `head`, or a kNN vote over a
        `collection` (options: k, label_field, vote, filter, top_k, timeout_ms)."""
        return self._run(self._ops.classify(inputs=inputs, vectors=vectors, head=head, collection=collection,
                                            model=model, options=options))

    def models(self) -> Any:
        return self._run(self._ops.plain(Call("GET", "/models")))

    def limits(self) -> Any:
        return self._run(self._ops.server_limits())


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": "jepa-serve-client/0.1"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _answer(response: httpx.Response, call: Call) -> tuple[Any, JepaServeError | None]:
    if response.status_code < 400:
        return (response.json() if response.content else None), None
    try:
        body = response.json()
    except ValueError:
        body = None
    retry_after = response.headers.get("retry-after")
    error = error_from_response(response.status_code, body, float(retry_after) if retry_after else None)
    if call.index_offset and error.index is not None:
        error.detail["index"] = error.index + call.index_offset  # the position in the caller's whole batch
    return None, error


class Client(_Api):
    """Blocking client. `Client("http://127.0.0.1:8000", api_key=...)`; use as a context manager or `close()`."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy = RetryPolicy(), transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._http = httpx.Client(base_url=url, headers=_headers(api_key), timeout=timeout_s, transport=transport)
        self._ops, self.retry, self._sleep = _Operations(), retry, sleep

    def _send(self, call: Call) -> Any:
        waited, attempt = 0.0, 0
        while True:
            response = self._http.request(call.method, call.path, json=call.json)
            answer, error = _answer(response, call)
            if error is None:
                return answer
            wait = self.retry.delay(attempt, error, waited)
            if wait is None:
                raise error
            self._sleep(wait)
            waited, attempt = waited + wait, attempt + 1

    def _run(self, operation: Operation[T]) -> T:
        try:
            call = next(operation)
            while True:
                call = operation.send(self._send(call))
        except StopIteration as done:
            return done.value

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
        self._ops, self.retry, self._sleep = _Operations(), retry, sleep

    async def _send(self, call: Call) -> Any:
        waited, attempt = 0.0, 0
        while True:
            response = await self._http.request(call.method, call.path, json=call.json)
            answer, error = _answer(response, call)
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
                call = operation.send(await self._send(call))
        except StopIteration as done:
            return done.value

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
