"""The model's encoder as requests use it: preprocessed frames -> pooled states or token grids, through the
encoder's DynamicBatcher (shared by /embed, the world models and the streams)."""

from __future__ import annotations

import numpy as np

from service.batching import DynamicBatcher
from service.media.clips import ClipSpec, to_item


class Encoder:
    def __init__(self, batcher: DynamicBatcher, clip: ClipSpec, tokens_per_item: int) -> None:
        self.batcher = batcher
        self.clip = clip
        self._cost = tokens_per_item  # what one item weighs in a batch (max_batch_tokens)

    @property
    def window(self) -> int:
        """Frames one state is encoded from: the clip's length (1 for an image model)."""
        return self.clip.frames_per_clip if self.clip.is_clip else 1

    async def encode(
        self,
        pixels: list[np.ndarray],
        deadline: float | None = None,
        announced: bool = False,
        outputs: tuple[str, ...] | None = None,
    ) -> dict[str, np.ndarray]:
        """Preprocessed items ((3, H, W), or a clip for clip models) -> the encoder outputs asked for (None =
        all), stacked: pooled (N, D), tokens (N, T, D) and, for video encoders, frames (N, steps, D)."""
        items = [{"pixel_values": p} for p in pixels]
        results = await self.batcher.infer(items, deadline=deadline, cost=self._cost, announced=announced,
                                           outputs=outputs)
        return {name: np.stack([o[name] for o in results]) for name in results[0]}

    async def state(self, frames: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Frames (k, 3, H, W), oldest first -> the pooled state (D,) of the newest: its last `window` frames as
        one clip (fewer are padded by the clip rule)."""
        outputs = await self.encode([to_item(frames[-self.window:], self.clip)], deadline, outputs=("pooled",))
        return outputs["pooled"][0]

    async def states(self, frames: np.ndarray, dim: int, deadline: float | None = None) -> np.ndarray:
        """Frames (k, 3, H, W) -> the pooled state at every frame with a full clip behind it, (k - window + 1, D),
        all in one encoder request: a clip model's state at frame t is the clip of frames t - window + 1 .. t
        (how its predictor was trained: the clip shows the motion)."""
        window = self.window
        clips = [to_item(frames[t - window + 1:t + 1], self.clip) for t in range(window - 1, len(frames))]
        if not clips:
            return np.zeros((0, dim), np.float32)
        return (await self.encode(clips, deadline, outputs=("pooled",)))["pooled"]

    async def frame_tokens(self, frames: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Frames (n, 3, H, W) -> each frame's token grid (n, tokens, D), every frame encoded on its own as a clip
        of identical frames (how V-JEPA 2-AC's world model encodes observations)."""
        clips = [to_item(frame[None], self.clip) for frame in frames]
        return (await self.encode(clips, deadline, outputs=("tokens",)))["tokens"]

    async def clip_tokens(self, clip: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """One clip item in the encoder's layout -> its tokens (T', D)."""
        return (await self.encode([clip], deadline, outputs=("tokens",)))["tokens"][0]
