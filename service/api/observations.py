"""The world-model routers' edge: a request's media inputs -> the observation its model's world model asked for
(decoded by the pipeline), and what the responses report of that decoding (timings, the video sampling echo)."""

from __future__ import annotations

from collections.abc import Sequence

from service.api.inputs import frame_sampling, to_media_items
from service.api.schemas import MediaInput, SampledFrames, VideoSamplingOptions
from service.model_pool import ServedModel
from service.pipeline import observe
from service.state import Services
from service.world import Observation, ObservationNeed


async def observe_inputs(services: Services, model: ServedModel, inputs: Sequence[MediaInput], need: ObservationNeed,
                         options: VideoSamplingOptions | None = None) -> Observation:
    """Media inputs -> the observation `need` names; a video is sampled by the request's options (`options`)
    when the need says they apply."""
    sampling = None if need.video_frames is None else frame_sampling(options, default_frames=need.video_frames)
    items = to_media_items(inputs, services.config.limits, services.config.media, sampling)
    return await observe(services, model, items, need)


def with_decode(timings: dict[str, float], *observations: Observation | None) -> dict[str, float]:
    """The world model's timings, after the decoding of what it observed (when it observed media)."""
    seen = [o for o in observations if o is not None]
    decode = {"decode": round(sum(o.decode_ms for o in seen), 3)} if seen else {}
    return decode | timings


def sampling_echo(observation: Observation | None) -> list[SampledFrames | None] | None:
    """Per media input: the frames taken from a video (null for other inputs); None when no input was a video."""
    if observation is None or all(s is None for s in observation.sampled):
        return None
    return [None if s is None else SampledFrames.model_validate(s, from_attributes=True) for s in observation.sampled]
