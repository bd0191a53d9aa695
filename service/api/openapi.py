"""The OpenAPI document and the pages that show it: everything about the API's description is here.

- /docs (Swagger UI) and /redoc load their JavaScript and CSS from this server (the `fastapi-offline`
  package ships the files), so they render on an air-gapped network.
- operationIds are the route functions' names (`create_collection`, not `create_collection_collections__name__put`).
- Each operation has a description, the error statuses it can really answer, and request examples that a
  test sends to a real server (service/api/examples.py).
- With API keys configured, a Bearer security scheme: Swagger UI shows an Authorize button.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from service.api.examples import request_examples
from service.api.schemas import ErrorResponse
from service.config import LimitsConfig, SecurityConfig
from service.errors import ServiceError, meanings_by_status

ASSETS_URL = "/docs/assets"  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"


def operation_id(route: APIRoute) -> str:
    return route.name


DESCRIPTIONS = {
    "embed": "Images, clips, videos or preprocessed tensors → pooled embeddings (L2-normalised by default), and "
             "with `output` the patch-token grid or one vector per time step. JSON (base64 media) or "
             "`multipart/form-data` (`files`). `encoding: base64` or `Accept: application/x-npy` for compact arrays. "
             "A bad input is named by `error.detail.index`.",
    "list_collections": "Every collection with its size, dimension, metric, index and embedding space.",
    "create_collection": "Create a collection (idempotent: 200 if it exists with the same configuration, 409 if "
                         "with another). `model` takes the dimension and embedding space from a served model.",
    "get_collection": "One collection: count, dimension, metric, index kind in use, memory.",
    "drop_collection": "Delete a collection and its stored points.",
    "upsert_points": "Insert or replace points: precomputed `vectors` (lists or one base64 array; up to "
                     "`max_upsert_vectors` and `max_upsert_bytes` per request, see GET /limits) or media `inputs` "
                     "embedded by the collection's model (up to `max_request_items`). Acknowledged once durable.",
    "delete_points": "Delete points by id (unknown ids are ignored; `deleted` counts the ones removed).",
    "get_point": "One stored point: its vector and metadata.",
    "search": "Nearest neighbours by a `vector`, many `vectors` (one result list each), a media `input` or a "
              "stored point's `id`, with metadata `filter`s and per-request index `params`.",
    "predict_future": "Roll the model's predictor forward from `context` frames (or a `state`) through `actions`: "
                      "the predicted state embedding after each step.",
    "plan": "Plan an action sequence from the `observation` toward a `goal` image (or `goal_state`) by the "
            "cross-entropy method on the model's latent predictor.",
    "surprise": "How surprising each step of a sequence is to the model's predictor: `observations` (frames, or one "
                "video) or precomputed `states`, plus the `actions` between them, → per step the distance between the "
                "predicted and the observed state as a z-score against normal data (the manifest's calibration), "
                "and the steps over `threshold`. The WebSocket /stream/surprise scores frames as they come.",
    "classify": "Labels for media `inputs`: the top-k of a probe `head` trained by `jepa-export probe`, or a kNN vote "
                "(`majority` or similarity-`weighted`) of the nearest points of a `collection` on their metadata "
                "`label_field` (queries may also be `vectors`).",
    "healthz": "Liveness: 200 while the process runs and its batchers run; 503 if a batcher stopped.",
    "readyz": "Readiness: 200 once models are loaded and warm and collections recovered; 503 with the phase "
              "(loading, building_engine, warming, failed, stopping) before that.",
    "list_models": "Served models: family, embedding space, dimension, input contract, predictor, runtimes.",
    "metrics": "Prometheus metrics (`jepa_` prefix).",
    "limits": "The server's request limits: a client sizes its batches by them.",
}

# The error statuses each operation can answer; 401/403 (keys), and 429 (rate limit, concurrency limit) are
# added where configured.
# 400: undecodable JSON or media; 413: body or item limits; 415: content or image type; 422: schema or rule;
# 429: queue full; 503: not ready or storage unreachable; 504: deadline; 507: write not durable.
ROUTE_ERRORS: dict[str, tuple[int, ...]] = {
    "embed": (400, 404, 413, 415, 422, 429, 503, 504),
    "list_collections": (503,),
    "create_collection": (400, 404, 409, 413, 422, 503, 507),
    "get_collection": (404, 422, 503),
    "drop_collection": (404, 422, 503, 507),
    "upsert_points": (400, 404, 409, 413, 415, 422, 429, 503, 507),
    "delete_points": (400, 404, 413, 422, 503, 507),
    "get_point": (404, 422, 503),
    "search": (400, 404, 409, 413, 415, 422, 429, 503, 504),
    "predict_future": (400, 404, 413, 415, 422, 429, 503, 504),
    "plan": (400, 404, 413, 415, 422, 429, 503, 504),
    "surprise": (400, 404, 413, 415, 422, 429, 503, 504),
    "classify": (400, 404, 409, 413, 415, 422, 429, 503, 504),
    "healthz": (503,),
    "readyz": (503,),
    "list_models": (),
    "metrics": (),
    "limits": (),
}
OPEN_WHEN = {"healthz": "health_open", "readyz": "health_open", "metrics": "metrics_open"}
# Answered even at the concurrency limit (JEPA_MAX_CONCURRENT_REQUESTS), which answers 429 on every other route.
UNLIMITED = frozenset({"healthz", "readyz", "metrics"})

TIMEOUT_HEADER = {
    "name": "x-request-timeout-ms", "in": "header", "required": False,
    "description": "deadline of this request in milliseconds (0 < t < 3600000); past it the answer is 504 and "
                   "queued work is dropped. A `timeout_ms` body field wins; default JEPA_REQUEST_TIMEOUT_MS.",
    "schema": {"type": "string", "pattern": r"^\d+(\.\d+)?$", "examples": ["5000"]},
}
DEADLINE_OPS = frozenset({"embed", "search", "predict_future", "plan", "surprise", "classify"})
HEALTH_SCHEMA = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"],
                 "additionalProperties": True}


def install_docs(app: FastAPI, security: SecurityConfig, limits: LimitsConfig) -> None:
    """Swagger UI and ReDoc from local assets, and the customised OpenAPI document (built once ready)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "displayOperationId": True},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        services = getattr(app.state, "services", None)
        ready = services is not None and services.ready
        document = build_openapi(app, security, limits, _default_model(services) if ready else None)
        if ready:  # the examples that depend on the model are in it: keep it
            app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _default_model(services):
    try:
        return services.models.resolve_model(None, services.config.models.default)
    except ServiceError:
        return None


def build_openapi(app: FastAPI, security: SecurityConfig, limits: LimitsConfig, model) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description,
                           routes=app.routes)
    auth = security.auth_configured
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorResponse"] = ErrorResponse.model_json_schema(
        ref_template="#/components/schemas/{model}")
    components["schemas"].update(
        ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {})
    )
    if auth:
        components["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "an API key: `Authorization: Bearer <key>` (scopes read, write, ops)"}}
    examples = request_examples(model)
    meanings = meanings_by_status()  # from the one error table: every code of each status, with its meaning
    for path_item in document["paths"].values():
        for operation in path_item.values():
            _describe(operation, security, bool(limits.max_concurrent_requests), examples, meanings)
    return document


def _describe(  # noqa: C901 - one pass over an operation, a branch per thing the schema adds to it
    operation: dict[str, Any], security: SecurityConfig, concurrency_limited: bool,
              examples: dict[str, dict[str, dict[str, Any]]], meanings: dict[int, str]) -> None:
    op = operation["operationId"]
    operation["description"] = DESCRIPTIONS.get(op, operation.get("description", ""))
    auth, rate_limited = security.auth_configured, security.rate_limit.requests > 0
    open_route = op in OPEN_WHEN and getattr(security, OPEN_WHEN[op])
    statuses = set(ROUTE_ERRORS.get(op, ()))
    if auth and not open_route:
        statuses |= {401, 403}
        operation["security"] = [{"bearer": []}]
    elif auth:
        operation["security"] = []
    if (rate_limited and not open_route) or (concurrency_limited and op not in UNLIMITED):
        statuses.add(429)
    responses = {code: body for code, body in operation["responses"].items() if not code.startswith(("4", "5"))}
    for status in sorted(statuses):
        responses[str(status)] = _error_response(op, status, meanings)
    operation["responses"] = responses
    for parameter in operation.get("parameters", []):
        if parameter["name"] == TIMEOUT_HEADER["name"]:
            parameter.update(TIMEOUT_HEADER)
        if parameter["name"] == "name" and parameter["in"] == "path":
            parameter["example"] = "pets"
        if parameter["name"] == "point_id":
            parameter["example"] = "cat"
    parameters = operation.get("parameters", [])
    if op in DEADLINE_OPS and not any(p["name"] == TIMEOUT_HEADER["name"] for p in parameters):
        operation["parameters"] = [
            *parameters,
            dict(TIMEOUT_HEADER),
        ]  # read by the deadline dependency, so FastAPI may not list it
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None and op in examples:
        body["examples"] = examples[op]


def _error_response(op: str, status: int, meanings: dict[int, str]) -> dict[str, Any]:
    if op in ("healthz", "readyz") and status == 503:
        meaning = "unhealthy: a batcher stopped" if op == "healthz" else "not ready: the body says the phase"
        return {"description": meaning, "content": {"application/json": {"schema": HEALTH_SCHEMA}}}
    return {"description": meanings[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
