"""POST /embed: images, clips and videos (base64 JSON or multipart files) -> pooled embeddings (+ tokens, frames)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from service.api.deps import DeadlineDep, ReadyServicesDep
from service.api.encoding import NPY, encode_array, npy_response
from service.api.errors import body_validation_error
from service.api.inputs import check_count, frame_sampling, to_media_items
from service.api.schemas import (
    COMMON_ERRORS,
    EmbedOptions,
    EmbedRequest,
    EmbedResponse,
    SampledFrames,
    error_responses,
)
from service.errors import ErrorCode, PayloadTooLarge, UnprocessableInput, UnsupportedMediaType
from service.media.payload import MediaItem, RawImage, RawVideo
from service.media.video import looks_like_video
from service.model_pool import ServedModel
from service.pipeline import embed_items, l2_normalize
from service.state import Services

router = APIRouter(tags=["embed"], responses=error_responses(*COMMON_ERRORS, 404))

def form_fields(options: type[BaseModel]) -> dict[str, dict]:
    """The options model's fields as form fields: a form cannot send null, so an optional field is its
    non-null schema (an absent field is the default)."""
    fields = {}
    for name, schema in options.model_json_schema()["properties"].items():
        variants = [v for v in schema.get("anyOf", [schema]) if v.get("type") != "null"]
        fields[name] = {
            **variants[0],
            **{k: schema[k] for k in ("description", "default") if schema.get(k) is not None},
        }
    return fields


MULTIPART_DOC = {
    "requestBody": {
        "content": {
            # Inlined: the route reads its body itself (JSON or multipart), so FastAPI would not list the model.
            "application/json": {"schema": {
                k: v for k, v in EmbedRequest.model_json_schema(ref_template="#/components/schemas/{model}").items()
                if k != "$defs"
            }},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                                  "description": "images or videos, one input each (at least one)"},
                        **form_fields(EmbedOptions),  # the same fields, parsed by EmbedOptions in _parse_multipart
                    },
                    "required": ["files"],
                }
            },
        },
        "required": True,
    }
}


async def _parse_multipart(request: Request, services: Services) -> tuple[EmbedOptions, list[MediaItem]]:
    limits, media = services.config.limits, services.config.media
    form = await request.form(max_files=limits.max_request_items + 1, max_fields=16)
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not files:
        raise UnprocessableInput("multipart body has no 'files' part: send at least one file",
                                 code=ErrorCode.VALIDATION_ERROR)
    check_count(len(files), limits)
    fields = {k: v for k, v in form.items() if k in EmbedOptions.model_fields and isinstance(v, str)}
    try:
        options = EmbedOptions.model_validate(fields)
    except ValidationError as exc:
        raise body_validation_error(exc) from exc
    sampling = frame_sampling(options)
    limit = max(media.image.max_bytes, media.video.max_bytes)
    items: list[MediaItem] = []
    for index, upload in enumerate(files):
        data = await upload.read(limit + 1)
        # Videos are told from images by their container's magic number; a file the client names a video (by
        # its content type or extension) is decoded as one too, so a still image sent as a video is refused (415).
        video = looks_like_video(data) or declared_video(upload)
        allowed = media.video.max_bytes if video else media.image.max_bytes
        if len(data) > allowed:
            raise PayloadTooLarge(f"file {index} ({upload.filename!r}) exceeds {allowed} bytes",
                                  {"index": index, "max_bytes": allowed})
        items.append(RawVideo(data, sampling) if video else RawImage(data))
    return options, items


@router.post("/embed", response_model=EmbedResponse, openapi_extra=MULTIPART_DOC,
             summary="Embed images with a served context encoder")
async def embed(request: Request, services: ReadyServicesDep, deadline: DeadlineDep) -> EmbedResponse | Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        options, items = await _parse_multipart(request, services)
    elif content_type in ("application/json", ""):
        try:
            req = EmbedRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise body_validation_error(exc) from exc
        items = to_media_items(req.inputs, services.config.limits, services.config.media, frame_sampling(req))
        options = req
    else:
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not accepted", {"accepted": ["application/json", "multipart/form-data"]}
        )
    model = services.models.resolve_model(options.model, services.config.models.default)
    check_output(model, options.output)
    result = await embed_items(
        services,
        model,
        items,
        deadline.at(options.timeout_ms),
        use_cache=options.output == "pooled",
        output=options.output,
    )
    pooled = l2_normalize(result.pooled) if options.normalize else result.pooled
    tokens = result.tokens if options.output == "tokens" else None
    frames = result.frames if options.output == "frames" else None
    timings = {"decode": round(result.decode_ms, 3), "inference": round(result.inference_ms, 3)}
    if NPY in request.headers.get("accept", ""):
        # One array per response: the token grid if asked for, else the pooled vectors.
        return npy_response(next(a for a in (tokens, frames, pooled) if a is not None), options.dtype, {
            "x-model": model.name, "x-space-id": model.manifest.space_id})
    return EmbedResponse(
        model=model.name,
        space_id=model.manifest.space_id,
        dim=int(pooled.shape[1]),
        embeddings=encode_array(pooled, options.encoding, options.dtype),
        tokens=None if tokens is None else encode_array(tokens, options.encoding, options.dtype),
        frames=None if frames is None else encode_array(frames, options.encoding, options.dtype),
        timings_ms=timings,
        cached=result.cached,
        sampling=_echo(result.sampled),
    )


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")


def declared_video(upload: UploadFile) -> bool:
    """The client says the file is a video: a video/* content type or a video file name."""
    content_type = (upload.content_type or "").lower()
    return content_type.startswith("video/") or (upload.filename or "").lower().endswith(VIDEO_SUFFIXES)


def check_output(model: ServedModel, output: str) -> None:
    """Refuse an output the model's encoder does not have before anything is decoded or queued: it would fail
    inside a batch shared with other callers."""
    if output == "frames" and "frames" not in model.encoder.engine.output_names:
        raise UnprocessableInput(f"model {model.name!r} has no per-frame output; ask for 'pooled' or 'tokens'",
                                 code=ErrorCode.NO_FRAMES_OUTPUT)


def _echo(sampled) -> list[SampledFrames | None] | None:
    if not sampled or all(s is None for s in sampled):
        return None
    return [None if s is None else SampledFrames.model_validate(s, from_attributes=True) for s in sampled]
