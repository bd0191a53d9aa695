"""Locust scenarios for jepa-serve: /embed, /search, /predict_future and /plan in a realistic mix.

Run it directly against any deployment:

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless -u 8 -r 4 -t 60s

or through `loadtests/run.py` (`make loadtest`), which also starts a server, samples /metrics and
writes a report. Options of this file (all also LOCUST_JEPA_* environment variables):

    --jepa-shape constant|step|spike   load shape (constant follows -u/-r/-t)
    --jepa-api-key KEY                 sends `Authorization: Bearer KEY` (or JEPA_API_KEY)
    --jepa-mix embed=6,search=3,...    relative weights of the four user classes
    --jepa-samples-csv PATH            one row per request (time, name, status, latency) for the report

Status policy: 2xx with a well-formed body is a success; 429 (queue full) is the service shedding load
as designed, so it is recorded as a success under "<name> [429]" (and the user honours Retry-After);
anything else (5xx, other 4xx, connection errors, a malformed 2xx body) is a failure.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import gevent
import load_payloads as payloads
import load_schedule as schedules
from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.runners import WorkerRunner

log = logging.getLogger("jepa-loadtest")

MAX_ITEMS_PER_REQUEST = 64  # the service's default JEPA_MAX_REQUEST_ITEMS
RETRY_AFTER_CAP_S = 5.0


# ---------------------------------------------------------------- options

@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    def opt(name: str, **kwargs) -> None:
        env = "LOCUST_" + name.lstrip("-").replace("-", "_").upper()
        parser.add_argument(name, env_var=env, **kwargs)

    opt("--jepa-shape", choices=schedules.SHAPES, default="constant", help="load shape")
    opt("--jepa-steps", default="10,20,30,40,60,80", help="step shape: users of each step")
    opt("--jepa-step-seconds", type=float, default=30.0, help="step shape: seconds per step")
    opt("--jepa-spike-users", default="10,150", help="spike shape: BASE,PEAK users")
    opt("--jepa-spike-seconds", default="20,20,40", help="spike shape: BEFORE,SPIKE,AFTER seconds")
    opt("--jepa-api-key", default=os.environ.get("JEPA_API_KEY", ""), is_secret=True,
        help="API key sent as 'Authorization: Bearer <key>'")
    opt("--jepa-model", default="", help="model to load; default: the first served model with a predictor")
    opt("--jepa-collection", default="loadtest", help="collection created (idempotently) and searched")
    opt("--jepa-collection-size", type=int, default=1000, help="points upserted into the collection at start")
    opt("--jepa-keep-collection", action="store_true", default=False, help="do not drop the collection at the end")
    opt("--jepa-mix", default="embed=6,search=3,predict=1,plan=1", help="relative weights of the user classes")
    opt("--jepa-wait-ms", default="500,1500", help="think time between a user's requests: MIN,MAX milliseconds")
    opt("--jepa-samples-csv", default="", help="write one row per request here (used by loadtests/run.py)")


# ---------------------------------------------------------------- what the server offers

@dataclass
class Target:
    """What the server under test serves, found once at start (so every node sends valid requests)."""

    host: str
    headers: dict[str, str]
    model: str
    dim: int
    space_id: str
    predictor: dict[str, Any] | None
    plan_schema: dict[str, Any] | None = None
    collection: str | None = None
    stored: list[tuple[str, list[float]]] = field(default_factory=list)
    images: payloads.ImagePool | None = None
    disabled: dict[str, str] = field(default_factory=dict)  # user class -> why it does not run


_target: Target | None = None
_shape_started_at: float | None = None


def _call(
    host: str, method: str, path: str, headers: dict[str, str], body: Any = None, timeout: float = 60
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(host.rstrip("/") + path, data=data, method=method,
                                     headers={**headers, **({"Content-Type": "application/json"} if data else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw[:200]


def _auth_headers(options) -> dict[str, str]:
    key = getattr(options, "jepa_api_key", "") or ""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _plan_request_schema(openapi: dict[str, Any]) -> dict[str, Any] | None:
    operation = openapi.get("paths", {}).get("/plan", {}).get("post")
    if not operation:
        return None
    components = openapi.get("components", {}).get("schemas", {})
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    if "schema" not in content:
        return None
    schema = _resolve(content["schema"], components)
    return {"schema": schema, "components": components}


def _is_array(prop: dict[str, Any], components: dict[str, Any]) -> bool:
    prop = _resolve(prop, components)
    options = prop.get("anyOf", []) + prop.get("oneOf", []) + [prop]
    return any(_resolve(o, components).get("type") == "array" for o in options)


def _choose_model(models: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    if not models:
        raise RuntimeError("the server lists no models (GET /models)")
    if wanted:
        for m in models:
            if m["name"] == wanted:
                return m
        raise RuntimeError(f"model {wanted!r} is not served; served: {[m['name'] for m in models]}")
    return next((m for m in models if m.get("predictor")), models[0])


def _setup_collection(target: Target, name: str, size: int) -> None:
    """Create the collection from the model (idempotent PUT) and upsert `size` unit vectors in chunks."""
    status, body = _call(target.host, "PUT", f"/collections/{name}", target.headers, {"model": target.model})
    if status not in (200, 201):
        raise RuntimeError(f"PUT /collections/{name} -> {status}: {body}")
    rng = random.Random(1234)  # the same points on every node and every run
    labels = ["cat", "dog", "car", "tree", "house", "boat", "bird", "rock"]
    points = [(f"p{i:06d}", payloads.unit_vector(rng, target.dim)) for i in range(size)]
    for start in range(0, size, MAX_ITEMS_PER_REQUEST):
        chunk = points[start:start + MAX_ITEMS_PER_REQUEST]
        body_out = {"ids": [p for p, _ in chunk], "vectors": [v for _, v in chunk], "space_id": target.space_id,
                    "metadata": [{"label": labels[int(p[1:]) % len(labels)], "n": int(p[1:])} for p, _ in chunk]}
        for _ in range(10):  # the service may shed load while it starts
            status, body = _call(target.host, "POST", f"/collections/{name}/points", target.headers, body_out)
            if status != 429:
                break
            time.sleep(1)
        if status != 200:
            raise RuntimeError(f"POST /collections/{name}/points -> {status}: {body}")
    target.collection = name
    target.stored = points


def discover(environment) -> Target:  # noqa: C901 - one start-up sequence; each branch a capability the server may lack
    """Find the model, its predictor and /plan, prepare the collection; once per process."""
    global _target
    if _target is not None:
        return _target
    options = environment.parsed_options
    host = environment.host or getattr(options, "host", None)
    if not host:
        raise RuntimeError("no --host given")
    headers = _auth_headers(options)
    status, openapi = _call(host, "GET", "/openapi.json", headers)
    if status != 200 or not isinstance(openapi, dict):
        # Some deployments hide the schema: then only what /models says is known, and /plan is not tried.
        log.warning("GET /openapi.json -> %s: /plan is left out", status)
        openapi = {"paths": {"/predict_future": {}}}
    status, listing = _call(host, "GET", "/models", headers)
    if status != 200:
        raise RuntimeError(f"GET /models -> {status}: {listing} (wrong API key?)")
    model = _choose_model(listing.get("models", []), options.jepa_model)
    target = Target(host=host, headers=headers, model=model["name"], dim=int(model["dim"]), space_id=model["space_id"],
                    predictor=model.get("predictor"), images=payloads.image_pool())
    if not target.predictor:
        target.disabled["PredictUser"] = f"model {target.model!r} has no predictor"
        target.disabled["PlanUser"] = f"model {target.model!r} has no predictor"
    elif "/predict_future" not in openapi.get("paths", {}):
        target.disabled["PredictUser"] = "the server has no /predict_future"
    if "PlanUser" not in target.disabled:
        target.plan_schema = _plan_request_schema(openapi)
        if target.plan_schema is None:
            target.disabled["PlanUser"] = "the server has no POST /plan"
    if "PlanUser" not in target.disabled:
        _probe_plan(target)
    if "SearchUser" not in target.disabled:
        _setup_collection(target, options.jepa_collection, options.jepa_collection_size)
    for name, why in target.disabled.items():
        log.warning("%s does not run: %s", name, why)
    _target = target
    return target


# ---------------------------------------------------------------- request bodies

def context_frames(target: Target, rng: random.Random) -> list[dict[str, str]]:
    frames = int((target.predictor or {}).get("context_frames", 1))
    return [{"image": target.images.pick(rng).b64} for _ in range(frames)]


def random_actions(target: Target, rng: random.Random, steps: int) -> list[list[float]]:
    spec = target.predictor or {}
    low, high = spec.get("action_low"), spec.get("action_high")
    dim = int(spec.get("action_dim", 2))
    low = low or [-1.0] * dim
    high = high or [1.0] * dim
    return [[rng.uniform(lo, hi) for lo, hi in zip(low, high, strict=True)] for _ in range(steps)]


def plan_body(target: Target, rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    """A /plan request built from its OpenAPI schema: returns (body, required fields it could not fill)."""
    assert target.plan_schema is not None
    schema, components = target.plan_schema["schema"], target.plan_schema["components"]
    props = schema.get("properties", {})
    body: dict[str, Any] = {}
    small = {"horizon": 5, "samples": 64, "iterations": 3, "num_samples": 64, "topk": 8, "elites": 8}
    for name, prop in props.items():
        if name == "model":
            body[name] = target.model
        elif name in ("observation", "observations", "context", "start"):
            frames = context_frames(target, rng)
            body[name] = frames if _is_array(prop, components) else frames[-1]
        elif name == "goal":
            goal = [{"image": target.images.pick(rng).b64}]
            body[name] = goal if _is_array(prop, components) else goal[0]
        elif name in small:
            resolved = _resolve(prop, components)
            value = small[name]
            if "maximum" in resolved:
                value = min(value, resolved["maximum"])
            if "minimum" in resolved:
                value = max(value, resolved["minimum"])
            body[name] = value
    missing = [r for r in schema.get("required", []) if r not in body]
    return body, missing


def _probe_plan(target: Target) -> None:
    body, missing = plan_body(target, random.Random(0))
    if missing:
        target.disabled["PlanUser"] = f"/plan needs fields this locustfile does not know: {missing}"
        return
    status, reply = _call(target.host, "POST", "/plan", target.headers, body)
    if status != 200:
        target.disabled["PlanUser"] = f"a probe POST /plan answered {status}: {str(reply)[:200]}"


# ---------------------------------------------------------------- users

class JepaUser(FastHttpUser):
    abstract = True
    wait_time = between(0.05, 0.25)
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.target = discover(self.environment)
        self.rng = random.Random()

    def send(self, path: str, name: str, *, json_body: Any = None, data: bytes | None = None,
             content_type: str | None = None, check=None) -> Any:
        """POST and classify: 2xx (checked) ok, 429 expected overload, anything else a failure."""
        headers = dict(self.target.headers)
        if content_type:
            headers["Content-Type"] = content_type
        backoff = 0.0
        reply = None
        with self.client.post(path, name=name, json=json_body, data=data, headers=headers, catch_response=True) as resp:
            status = resp.status_code
            if status == 429:
                resp.request_meta["name"] = f"{name} [429]"
                resp.success()
                retry_after = resp.headers.get("Retry-After") or resp.headers.get("retry-after") or "1"
                try:
                    backoff = min(float(retry_after), RETRY_AFTER_CAP_S)
                except ValueError:
                    backoff = 1.0
            elif 200 <= status < 300:
                try:
                    reply = resp.json()
                    problem = check(reply) if check else None
                except ValueError:
                    problem = "2xx with a body that is not JSON"
                if problem:
                    resp.failure(problem)
                    reply = None
                else:
                    resp.success()
            else:
                text = (resp.text or "")[:200] if status else str(resp.error)
                resp.failure(f"HTTP {status}: {text}")
        if backoff:
            gevent.sleep(backoff)  # a well-behaved client waits as told
        return reply


def _expect_rows(key: str, n: int):
    def check(body: dict[str, Any]) -> str | None:
        rows = body.get(key)
        return None if isinstance(rows, list) and len(rows) == n else f"expected {n} {key}, got {len(rows or [])}"
    return check


class EmbedUser(JepaUser):
    """Clients embedding photos: mostly one image per request, some small batches, a few uploads of files."""

    weight = 6

    def _embed_json(self, n: int) -> None:
        inputs = [{"image": self.target.images.pick(self.rng).b64} for _ in range(n)]
        self.send("/embed", f"/embed json b={n}", json_body={"model": self.target.model, "inputs": inputs},
                  check=_expect_rows("embeddings", n))

    @task(6)
    def embed_one(self) -> None:
        self._embed_json(1)

    @task(2)
    def embed_four(self) -> None:
        self._embed_json(4)

    @task(1)
    def embed_sixteen(self) -> None:
        self._embed_json(16)

    @task(1)
    def embed_multipart(self) -> None:
        images = [self.target.images.pick(self.rng) for _ in range(8)]
        data, content_type = payloads.multipart_body(images, {"model": self.target.model})
        self.send("/embed", "/embed multipart b=8", data=data, content_type=content_type,
                  check=_expect_rows("embeddings", 8))


def _has_hits(body: dict[str, Any]) -> str | None:
    results = body.get("results")
    return None if results and results[0] else "search returned no hits"


class SearchUser(JepaUser):
    """Retrieval: queries by vector (client-side embeddings), by image, and 'more like this' by stored id."""

    weight = 3

    @task(6)
    def by_vector(self) -> None:
        _, vector = self.rng.choice(self.target.stored)
        query = [v + self.rng.gauss(0.0, 0.02) for v in vector]
        self.send(
            "/search",
            "/search vector",
            check=_has_hits,
            json_body={
                "collection": self.target.collection,
                "vector": query,
                "k": 10,
                "space_id": self.target.space_id,
            },
        )

    @task(2)
    def by_image(self) -> None:
        image = self.target.images.pick(self.rng)
        self.send("/search", "/search image", check=_has_hits,
                  json_body={"collection": self.target.collection, "input": {"image": image.b64}, "k": 5})

    @task(1)
    def by_id(self) -> None:
        point_id, _ = self.rng.choice(self.target.stored)
        self.send("/search", "/search id", check=_has_hits,
                  json_body={"collection": self.target.collection, "id": point_id, "k": 10})


class PredictUser(JepaUser):
    """World-model clients: roll the predictor forward from frames, or from a state they already hold."""

    weight = 1

    @task(2)
    def from_context(self) -> None:
        steps = self.rng.choice((4, 8, 16))
        self.send("/predict_future", "/predict_future context", check=_expect_rows("states", steps), json_body={
            "model": self.target.model, "context": context_frames(self.target, self.rng),
            "actions": random_actions(self.target, self.rng, steps)})

    @task(1)
    def from_state(self) -> None:
        steps = self.rng.choice((4, 8, 16))
        state = [self.rng.gauss(0.0, 1.0) for _ in range(int(self.target.predictor.get("state_dim", self.target.dim)))]
        self.send("/predict_future", "/predict_future state", check=_expect_rows("states", steps), json_body={
            "model": self.target.model, "state": state, "actions": random_actions(self.target, self.rng, steps)})


class PlanUser(JepaUser):
    """Planning clients: CEM toward a goal image (runs only when the server has POST /plan)."""

    weight = 1

    @task
    def plan(self) -> None:
        body, _ = plan_body(self.target, self.rng)
        self.send("/plan", "/plan", json_body=body,
                  check=lambda r: None if r.get("actions") else "plan returned no actions")


USER_CLASSES = {"embed": EmbedUser, "search": SearchUser, "predict": PredictUser, "plan": PlanUser}


# ---------------------------------------------------------------- shape

def schedule_of(options) -> schedules.Schedule:
    return schedules.from_options(
        options.jepa_shape, users=options.num_users or 1, spawn_rate=options.spawn_rate or 1,
        run_time_s=options.run_time, steps=options.jepa_steps, step_seconds=options.jepa_step_seconds,
        spike_users=options.jepa_spike_users, spike_seconds=options.jepa_spike_seconds,
    )


class JepaShape(LoadTestShape):
    """Follows loadtests/load_schedule.py; `constant` is plain -u/-r/-t."""

    use_common_options = True

    def reset_time(self) -> None:
        global _shape_started_at
        super().reset_time()
        _shape_started_at = time.time()

    def tick(self):
        options = self.runner.environment.parsed_options
        phase = schedule_of(options).at(self.get_run_time())
        return None if phase is None else (phase.users, phase.spawn_rate)


# ---------------------------------------------------------------- lifecycle and the per-request record

class SampleWriter:
    """One CSV row per request, so the report can cut exact percentiles by second and by load phase."""

    def __init__(self, path: str, runner) -> None:
        self.path = path
        self.runner = runner  # for the user count at each request
        self._file = open(path, "w", newline="")  # noqa: SIM115 - closed at quitting
        self._csv = csv.writer(self._file)
        self._csv.writerow(["t", "ms", "name", "status", "outcome", "users"])

    def write(self, t: float, ms: float, name: str, status: int, outcome: str, users: int) -> None:
        if self._file.closed:
            return
        self._csv.writerow([f"{t:.3f}", f"{ms:.2f}", name, status, outcome, users])

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


_writer: SampleWriter | None = None


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    global _writer
    options = environment.parsed_options
    if options is None:
        return
    low, high = (float(x) / 1000.0 for x in options.jepa_wait_ms.split(","))
    JepaUser.wait_time = between(low, high)
    weights = dict(item.split("=") for item in options.jepa_mix.split(",") if item)
    for key, weight in weights.items():
        if key not in USER_CLASSES:
            raise ValueError(f"--jepa-mix: unknown class {key!r}; known: {list(USER_CLASSES)}")
        USER_CLASSES[key].weight = int(weight)
    if options.jepa_samples_csv:
        _writer = SampleWriter(options.jepa_samples_csv, environment.runner)
    if environment.host:
        discover(environment)  # before the shape's clock starts: setup time is not load time


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    target = discover(environment)
    # Classes the server cannot serve (no predictor, no /plan) are left out before any user spawns.
    keep = [c for c in environment.user_classes if c.__name__ not in target.disabled and c.weight > 0]
    if not keep:
        raise RuntimeError(f"no user class can run against this server: {target.disabled}")
    environment.user_classes[:] = keep
    log.info("user classes: %s; images: %s", {c.__name__: c.weight for c in keep}, target.images.source)


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, response=None, exception=None,
                start_time=None, **_kwargs) -> None:
    if _writer is None:
        return
    status = getattr(response, "status_code", 0) or 0
    if exception is not None:
        outcome = "fail"
    elif status == 429:
        outcome = "overload"
    else:
        outcome = "ok"
    users = _writer.runner.user_count if _writer.runner is not None else 0
    started = start_time if start_time is not None else time.time() - response_time / 1000.0
    _writer.write(started, response_time, name.removesuffix(" [429]"), status, outcome, users)


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    global _target
    target = _target
    options = environment.parsed_options
    if options is not None and options.jepa_samples_csv and target is not None:
        meta = {
            "shape": options.jepa_shape,
            "shape_started_at": _shape_started_at,
            "schedule": [vars(p) | {"end_s": None if p.end_s == float("inf") else p.end_s}
                         for p in schedule_of(options).phases],
            "model": target.model,
            "user_classes": {c.__name__: c.weight for c in environment.user_classes},
            "disabled": target.disabled,
            "images": {"source": target.images.source, "labels": [i.label for i in target.images.images],
                       "sizes": [list(s) for s in payloads.SIZES]},
            "wait_ms": options.jepa_wait_ms,
            "api_key": bool(options.jepa_api_key),
            "collection": {"name": target.collection, "points": len(target.stored)},
        }
        with open(options.jepa_samples_csv + ".meta.json", "w") as f:
            json.dump(meta, f, indent=2)
    if _writer is not None:
        _writer.flush()
    is_worker = isinstance(environment.runner, WorkerRunner)
    if (
        target is not None
        and target.collection
        and options is not None
        and not options.jepa_keep_collection
        and not is_worker
    ):
        _call(target.host, "DELETE", f"/collections/{target.collection}", target.headers)
        _target = None  # a next run (web UI) creates it again


@events.quit.add_listener
def _on_quit(**_kwargs) -> None:
    # `quit` comes after the runner stopped its users, so the record holds the same requests as Locust's stats.
    if _writer is not None:
        _writer.close()
