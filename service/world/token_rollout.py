"""V-JEPA 2-AC rollout: frames' token grids + end-effector poses + actions -> the next frames' tokens.

The exported predictor takes a fixed window of `context_frames` steps
(context (B, W*P, D), actions and poses (B, W, A)) and predicts, at every
step, the tokens of the step after it; attention is block-causal, so with
fewer real steps than W the later blocks are filled with zeros and the block
of the last real step is read. Rollout is autoregressive, as in the authors'
world model: the prediction is layer-normed (no affine) and appended, the pose
is advanced by the action (service/world/pose.py), and the window slides once
the history is longer than W (the export's history length; export a longer
one with `jepa-export vjepa2 --history` to avoid sliding).

All S sequences of one step go to the predictor batcher together: one CEM
iteration of S samples over H steps is H predictor batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import ErrorCode, UnprocessableInput
from service.world.pose import apply_action, pose_delta
from service.world.rollout import ActionConditioned

LAYER_NORM_EPS = 1e-5  # torch.nn.functional.layer_norm's default, which the authors' wrapper uses


def layer_norm(x: np.ndarray) -> np.ndarray:
    """Over the last axis, without affine parameters."""
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + LAYER_NORM_EPS)).astype(np.float32)


@dataclass(frozen=True)
class TokenState:
    """Observed history, oldest first: layer-normed tokens (n, P, D) and poses (n, A) of n frames."""

    tokens: np.ndarray
    poses: np.ndarray


@dataclass(frozen=True)
class TokenTrajectories:
    tokens: np.ndarray  # (S, H, P, D) predicted, layer-normed
    poses: np.ndarray  # (S, H, A) after each action


class TokenRollout(ActionConditioned):
    @property
    def tokens_per_frame(self) -> int:
        return self.spec.tokens_per_frame

    def frame_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Encoder tokens (n, P', D) of n frames (P' a multiple of P: the last P are the frame's) -> the
        layer-normed (n, P, D) the predictor works on."""
        return layer_norm(tokens[:, -self.tokens_per_frame:])

    def check_poses(self, poses: np.ndarray, frames: int) -> None:
        """One end-effector state per observation frame: poses (frames, proprio_dim), values checked before."""
        if poses.shape != (frames, self.spec.proprio_dim):
            raise UnprocessableInput(
                f"give one {self.spec.proprio_dim}-value end-effector state per observation frame ({frames}); "
                f"got shape {list(poses.shape)}",
                {"proprio_dim": self.spec.proprio_dim, "frames": frames}, code=ErrorCode.INVALID_PROPRIO,
            )

    def start_state(self, tokens: np.ndarray, poses: np.ndarray) -> TokenState:
        """tokens (n, P', D) of n encoded frames (see frame_tokens), poses (n, A) checked by check_poses."""
        poses = np.asarray(poses, np.float32)
        self.check_poses(poses, tokens.shape[0])
        return TokenState(self.frame_tokens(tokens), poses)

    async def trajectories(
        self, start: TokenState, actions: np.ndarray, deadline: float | None = None
    ) -> TokenTrajectories:
        """actions (S, H, A) -> predicted tokens and poses after each action, for all S sequences."""
        s, horizon, _ = actions.shape
        window, p = self.spec.context_frames, self.tokens_per_frame
        n = start.tokens.shape[0]
        tokens = np.broadcast_to(start.tokens, (s, *start.tokens.shape))
        poses = np.broadcast_to(start.poses, (s, *start.poses.shape))
        # actions between the observed frames are what moved the arm from one pose to the next
        taken = np.broadcast_to(pose_delta(start.poses[:-1], start.poses[1:]), (s, n - 1, actions.shape[2]))
        predicted, advanced = [], []
        for h in range(horizon):
            steps = np.concatenate([taken, actions[:, h:h + 1]], axis=1)[:, -window:]  # (S, w, A)
            w = steps.shape[1]
            context = np.zeros((s, window * p, tokens.shape[-1]), np.float32)
            context[:, :w * p] = tokens[:, -w:].reshape(s, w * p, -1)
            padded_actions = np.zeros((s, window, steps.shape[2]), np.float32)
            padded_actions[:, :w] = steps
            padded_poses = np.zeros_like(padded_actions)
            padded_poses[:, :w] = poses[:, -w:]
            items = [{"context": c, "actions": a, "states": q}
                     for c, a, q in zip(context, padded_actions, padded_poses, strict=True)]
            outputs = await self._batcher.infer(items, deadline=deadline)
            block = np.stack([o["predicted"][(w - 1) * p:w * p] for o in outputs])  # (S, P, D)
            nxt = layer_norm(block)
            pose = apply_action(poses[:, -1], actions[:, h])
            # keep only what the next window reads: the history would otherwise be copied whole at every step
            tokens = np.concatenate([tokens[:, 1 - window:] if window > 1 else tokens[:, :0], nxt[:, None]], axis=1)
            poses = np.concatenate([poses[:, 1 - window:] if window > 1 else poses[:, :0], pose[:, None]], axis=1)
            taken = steps[:, 1 - window:] if window > 1 else steps[:, :0]
            predicted.append(nxt)
            advanced.append(pose)
        return TokenTrajectories(np.stack(predicted, axis=1), np.stack(advanced, axis=1))

    async def teacher_forced(
        self, observed: TokenState, actions: np.ndarray, deadline: float | None = None
    ) -> np.ndarray:
        """Every observed frame after the first, predicted from the observed frames before it: observed n frames
        (tokens, poses), actions (n - 1, A), action t between frame t and t + 1 -> (n - 1, P, D) layer-normed.

        Frame t + 1 is predicted from the last W = context_frames observed frames up to t, as `trajectories`
        slides its window, but from what was observed rather than from its own predictions (teacher forcing, as
        the predictor was trained). The predictor is block-causal, so one window of W frames predicts the W frames
        after it at once: frames 1..W come from one item, each later frame t + 1 from the window t - W + 1..t
        read at its last block. All items go to the batcher together (one batch)."""
        n = observed.tokens.shape[0]
        window, p = self.spec.context_frames, self.tokens_per_frame
        if actions.shape[0] != n - 1:
            raise ValueError(f"{n} frames need {n - 1} actions; got {actions.shape[0]}")
        if n < 2:
            return np.zeros((0, p, observed.tokens.shape[-1]), np.float32)
        starts = [0, *range(1, n - window)]  # window start per item; item i > 0 predicts frame window + i
        items, reads = [], []
        for start in starts:
            w = min(window, n - 1 - start)  # real steps in this window
            context = np.zeros((window * p, observed.tokens.shape[-1]), np.float32)
            context[:w * p] = observed.tokens[start:start + w].reshape(w * p, -1)
            padded_actions = np.zeros((window, actions.shape[1]), np.float32)
            padded_actions[:w] = actions[start:start + w]
            padded_poses = np.zeros_like(padded_actions)
            padded_poses[:w] = observed.poses[start:start + w]
            items.append({"context": context, "actions": padded_actions, "states": padded_poses})
            reads.append(range(w) if start == 0 else range(w - 1, w))
        outputs = await self._batcher.infer(items, deadline=deadline)
        blocks = [o["predicted"][b * p:(b + 1) * p] for o, read in zip(outputs, reads, strict=True) for b in read]
        return layer_norm(np.stack(blocks))  # (n - 1, P, D)

    async def simulate(self, start: TokenState, actions: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """For the planner: (S, H, P*D) flattened predicted token grids."""
        out = await self.trajectories(start, actions, deadline)
        return out.tokens.reshape(*out.tokens.shape[:2], -1)
