"""Collections CRUD and points: PUT/GET/DELETE /collections/{name}, POST/DELETE .../points."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from starlette.convertors import StringConvertor, register_url_convertor

from service.api.deps import ReadyServicesDep
from service.api.inputs import check_count, check_upsert_size, to_media_items
from service.api.schemas import (
    COMMON_ERRORS,
    CollectionInfo,
    CreateCollection,
    DeletePoints,
    DeleteResult,
    Point,
    UpsertPoints,
    UpsertResult,
    error_responses,
)
from service.api.vectors import to_matrix
from service.errors import Conflict, ErrorCode, UnprocessableInput
from service.index import CollectionConfig
from service.index.backend import SearchableCollection as Collection
from service.index.store import COLLECTION_NAME, check_collection_name
from service.pipeline import check_metadata_size, check_space, embed_items, model_for_collection

# Checked at the edge (422, documented in the schema) and again by the store, which owns the rule.
CollectionName = Annotated[str, Path(pattern=COLLECTION_NAME.pattern, max_length=64)]

class PointIdConvertor(StringConvertor):
    """One or more characters of any kind, '/' and line breaks included."""

    regex = "(?s:.+)"


router = APIRouter(
    prefix="/collections", tags=["collections"], responses=error_responses(*COMMON_ERRORS, 404, 409, 507)
)


def collection_info(collection: Collection) -> CollectionInfo:
    c = collection.config
    return CollectionInfo(
        name=c.name, dim=c.dim, metric=c.metric, index=c.index, space_id=c.space_id, model=c.model,
        count=collection.count, memory_bytes=collection.memory_bytes,
        index_in_use=collection.index_in_use, tombstones=collection.tombstones, params=c.params,
    )


@router.get("", summary="List collections")
async def list_collections(services: ReadyServicesDep) -> list[CollectionInfo]:
    store = services.store
    return await services.storage(lambda: [collection_info(store.get(n)) for n in store.names()])


@router.put("/{name}", response_model=CollectionInfo, status_code=status.HTTP_201_CREATED,
            responses={200: {"model": CollectionInfo, "description": "already exists with the same configuration"}})
async def create_collection(
    name: CollectionName, body: CreateCollection, services: ReadyServicesDep, response: Response
) -> CollectionInfo:
    check_collection_name(name)
    dim, space_id = body.dim, body.space_id
    if body.model is not None:
        model = services.models.get(body.model)
        model_dim, model_space = model.manifest.output.dim, model.manifest.space_id
        if dim is not None and dim != model_dim:
            raise UnprocessableInput(
                f"dim {dim} differs from model {body.model!r} dim {model_dim}", code=ErrorCode.DIMENSION_MISMATCH
            )
        if space_id is not None and space_id != model_space:
            raise Conflict(
                f"space_id differs from model {body.model!r} space {model_space!r}", code=ErrorCode.SPACE_MISMATCH
            )
        dim, space_id = model_dim, model_space
    if dim is None:
        raise UnprocessableInput("give 'dim' or a 'model' to take it from", code=ErrorCode.VALIDATION_ERROR)
    params = body.params.model_dump(exclude_none=True) if body.params else {}
    config = CollectionConfig(
        name=name, dim=dim, metric=body.metric, index=body.index, space_id=space_id, model=body.model, params=params
    )
    collection, created = await services.storage(services.store.create, config)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await services.storage(collection_info, collection)


@router.get("/{name}", response_model=CollectionInfo)
async def get_collection(name: CollectionName, services: ReadyServicesDep) -> CollectionInfo:
    # A remote store (milvus) counts on the engine: off the event loop.
    return await services.storage(collection_info, await services.collection(name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def drop_collection(name: CollectionName, services: ReadyServicesDep) -> Response:
    await services.storage(services.store.drop, name)
    with contextlib.suppress(KeyError):  # never written to: no series to drop
        services.metrics.index_points.remove(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/points", response_model=UpsertResult)
async def upsert_points(name: CollectionName, body: UpsertPoints, services: ReadyServicesDep) -> UpsertResult:
    collection = await services.collection(name)
    limits = services.config.limits
    check_metadata_size(body.metadata or [], limits.max_metadata_bytes)
    if body.vectors is not None:
        # Precomputed vectors cost no decoding: bounded by count and raw bytes, not by max_request_items.
        check_upsert_size(len(body.ids), collection.config.dim, limits)
        check_space(collection, body.space_id)
        vectors = to_matrix(body.vectors)
    else:
        assert body.inputs is not None
        check_count(len(body.ids), limits, "points")
        model = model_for_collection(services, collection)
        items = to_media_items(body.inputs, limits, services.config.media)
        vectors = (await embed_items(services, model, items)).pooled
    metadata = body.metadata or [{} for _ in body.ids]
    upserted = await services.storage(services.store.upsert, name, body.ids, vectors, metadata)
    count = await services.storage(lambda: collection.count)  # a remote store (milvus) counts on the engine
    services.metrics.index_points.labels(collection=name).set(count)
    return UpsertResult(upserted=upserted, count=count)


@router.delete("/{name}/points", response_model=DeleteResult)
async def delete_points(name: CollectionName, body: DeletePoints, services: ReadyServicesDep) -> DeleteResult:
    collection = await services.collection(name)
    check_count(len(body.ids), services.config.limits, "ids")
    deleted = await services.storage(services.store.delete, name, body.ids)
    count = await services.storage(lambda: collection.count)
    services.metrics.index_points.labels(collection=name).set(count)
    return DeleteResult(deleted=deleted, count=count)


# Any text is a point id: '/' (sent as %2F, decoded before routing; jepa-serve-client index names points by their
# relative file path) and a newline (the `path` convertor's `.*` misses that) included. Registering a convertor
# is Starlette's documented way; it is idempotent.
register_url_convertor("point_id", PointIdConvertor())


@router.get("/{name}/points/{point_id:point_id}", response_model=Point)
async def get_point(name: CollectionName, point_id: str, services: ReadyServicesDep) -> Point:
    collection = await services.collection(name)
    vector, metadata = await services.storage(collection.get, point_id)  # a lock, or the engine
    return Point(id=point_id, vector=vector.tolist(), metadata=metadata)
