"""POST /search: nearest neighbours by vector(s), by media, or by a stored point's id."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.inputs import check_count, to_media_items
from service.api.schemas import COMMON_ERRORS, Hit, SearchRequest, SearchResponse, VectorArray, error_responses
from service.api.vectors import to_matrix
from service.errors import ErrorCode, UnprocessableInput
from service.pipeline import check_space, embed_items, model_for_collection

router = APIRouter(tags=["search"], responses=error_responses(*COMMON_ERRORS, 404, 409))


@router.post("/search", response_model=SearchResponse)
async def search(body: SearchRequest, services: ReadyServicesDep, deadline: DeadlineDep) -> SearchResponse:
    limits = services.config.limits
    if body.k > limits.max_search_k:
        raise UnprocessableInput(f"k={body.k} exceeds the limit of {limits.max_search_k}", code=ErrorCode.K_TOO_LARGE)
    collection = await services.collection(body.collection)
    exclude: list[str | None] = []
    if body.id is not None:
        vector, _ = await services.storage(collection.get, body.id)  # the collection's read lock, or the engine
        queries = vector[None, :]
        exclude = [body.id]
    elif body.input is not None:
        model = model_for_collection(services, collection)
        items = to_media_items([body.input], limits, services.config.media)
        queries = (await embed_items(services, model, items, deadline.at(body.timeout_ms))).pooled
    else:
        check_space(collection, body.space_id)
        raw = [body.vector] if body.vector is not None else body.vectors
        assert raw is not None
        check_count(raw.shape[0] if isinstance(raw, VectorArray) else len(raw), limits, "query vectors")
        queries = to_matrix(raw, "query vectors")
    prepared = collection.prepare_vectors(queries)
    params = body.params.model_dump(exclude_none=True) if body.params else None
    found = await services.storage(collection.search, prepared, body.k, exclude, body.filter, params)
    results = [[Hit(id=h.id, score=h.score, metadata=h.metadata) for h in hits] for hits in found]
    return SearchResponse(
        hits=results[0] if len(results) == 1 else None, results=results, metric=collection.config.metric
    )
