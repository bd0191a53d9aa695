"""POST /classify: top-k labels from a model's probe head, or a kNN vote over a labelled collection."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.inputs import check_count, to_media_items
from service.api.schemas import COMMON_ERRORS, ClassifyRequest, ClassifyResponse, LabelScore, error_responses
from service.errors import ErrorCode, NotFound, UnprocessableInput
from service.index.vote import check_label_field, vote_labels
from service.pipeline import check_space, embed_items, model_for_collection
from service.state import Services

router = APIRouter(tags=["search"], responses=error_responses(*COMMON_ERRORS, 404, 409))


@router.post("/classify", response_model=ClassifyResponse)
async def classify(
    body: ClassifyRequest, services: ReadyServicesDep, request_deadline: DeadlineDep
) -> ClassifyResponse:
    deadline = request_deadline.at(body.timeout_ms)
    if body.head is not None:
        return await _by_head(services, body, deadline)
    return await _by_neighbours(services, body, deadline)


async def _by_head(services: Services, body: ClassifyRequest, deadline: float | None) -> ClassifyResponse:
    model = services.models.resolve_model(body.model, services.config.models.default)
    head = model.heads.get(body.head or "")
    if head is None:
        raise NotFound(f"model {model.name!r} has no head {body.head!r}", {"heads": sorted(model.heads)},
                       code=ErrorCode.HEAD_NOT_FOUND)
    assert body.inputs is not None
    items = to_media_items(body.inputs, services.config.limits, services.config.media)
    if head.spec.features == "tokens":
        # an attentive head reads the token grid; the embedding cache keeps pooled vectors only
        embedded = await embed_items(services, model, items, deadline, use_cache=False, output="tokens")
        features = embedded.tokens  # (N, T, D)
    else:
        embedded = await embed_items(services, model, items, deadline)
        features = embedded.pooled  # (N, D)
    started = time.perf_counter()
    probabilities = await head.probabilities(features, deadline)
    ranked = head.top_k(probabilities, body.top_k)
    return ClassifyResponse(
        model=model.name, head=head.name, collection=None,
        labels=[[LabelScore(label=label, score=score) for label, score in zip(r.labels, r.scores, strict=True)]
                for r in ranked],
        held_out_accuracy=head.spec.held_out_accuracy,
        timings_ms={"decode": round(embedded.decode_ms, 3), "encode": round(embedded.inference_ms, 3),
                    "head": round((time.perf_counter() - started) * 1000, 3)},
    )


async def _by_neighbours(services: Services, body: ClassifyRequest, deadline: float | None) -> ClassifyResponse:
    limits = services.config.limits
    if body.k > limits.max_search_k:
        raise UnprocessableInput(f"k={body.k} exceeds the limit of {limits.max_search_k}", code=ErrorCode.K_TOO_LARGE)
    collection = await services.collection(body.collection or "")
    model_name = None
    timings: dict[str, float] = {}
    if body.inputs is not None:
        model = model_for_collection(services, collection)
        model_name = model.name
        items = to_media_items(body.inputs, limits, services.config.media)
        embedded = await embed_items(services, model, items, deadline)
        queries = embedded.pooled
        timings = {"decode": round(embedded.decode_ms, 3), "encode": round(embedded.inference_ms, 3)}
    else:
        check_space(collection, body.space_id)
        assert body.vectors is not None
        check_count(len(body.vectors), limits, "query vectors")
        try:
            queries = np.asarray(body.vectors, dtype=np.float32)
        except ValueError as exc:
            raise UnprocessableInput("query vectors must all have the same length",
                                     code=ErrorCode.DIMENSION_MISMATCH) from exc
    started = time.perf_counter()
    prepared = collection.prepare_vectors(queries)
    found = await services.storage(collection.search, prepared, body.k, (), body.filter, None)
    timings["search"] = round((time.perf_counter() - started) * 1000, 3)
    check_label_field(found, body.label_field)
    labels = []
    for hits in found:
        votes = vote_labels(hits, body.label_field, collection.config.metric, body.vote)[: body.top_k]
        labels.append([LabelScore(label=v.label, score=v.score, votes=v.votes) for v in votes])
    return ClassifyResponse(model=model_name, head=None, collection=collection.config.name, labels=labels,
                            timings_ms=timings)
