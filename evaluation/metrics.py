"""Measurements of the demo world model: encoders and predictors to evaluate, linear probes, effective rank,
rollout retrieval and the planning cost landscape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.demo import DEMO_MEAN, DEMO_STD, world


def clip_array(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, F, 64, 64, 3) -> normalised float32 clips (N, F-1, 2, 3, 64, 64), clip t = (f_{t-1}, f_t)."""
    x = (frames.astype(np.float32) / 255.0 - np.asarray(DEMO_MEAN, np.float32)) / np.asarray(DEMO_STD, np.float32)
    x = x.transpose(0, 1, 4, 2, 3)
    return np.ascontiguousarray(np.stack([x[:, :-1], x[:, 1:]], axis=2))


class Encoder:
    """Embeds clips with ONNX Runtime (the served graph) or, for ablation weights, PyTorch."""

    def __init__(self, onnx_path: Path | None = None, weights: Path | None = None) -> None:
        self.session = self.torch_model = None
        if onnx_path is not None:
            import onnxruntime as ort

            self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        else:
            from models.demo import load_demo_model

            self.torch_model = load_demo_model(weights)

    def _feed(self, clips: np.ndarray) -> np.ndarray:
        """Normalised clips -> what the served graph takes: the uint8 pixels they came from for a graph that
        normalises them itself (export/pixels.py), else themselves."""
        if self.session.get_inputs()[0].type != "tensor(uint8)":
            return clips
        from export.pixels import to_pixels

        return to_pixels(clips, DEMO_MEAN, DEMO_STD, "NTCHW")

    def __call__(self, clips: np.ndarray, raw: bool = False) -> np.ndarray:
        out = []
        for start in range(0, len(clips), 256):
            batch = clips[start:start + 256]
            if self.session is not None and not raw:
                out.append(self.session.run(["pooled"], {"pixel_values": self._feed(batch)})[0])
            else:
                import torch

                with torch.inference_mode():
                    x = torch.from_numpy(batch)
                    enc = self.torch_model.encoder
                    out.append((enc.raw(x)[0] if raw else enc(x)[0]).numpy())
        return np.concatenate(out)


def predictor_fn(onnx_path: Path | None = None, weights: Path | None = None):
    if onnx_path is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        return lambda s, a: session.run(
            ["next_state"], {"state": s.astype(np.float32), "action": a.astype(np.float32)}
        )[0]
    import torch

    from models.demo import load_demo_model

    model = load_demo_model(weights)

    def run(s: np.ndarray, a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model.predictor(
                torch.from_numpy(s.astype(np.float32)), torch.from_numpy(a.astype(np.float32))
            ).numpy()

    return run


def probe_r2(z: np.ndarray, y: np.ndarray, train: np.ndarray, ridge: float = 1e-3) -> float:
    """Ridge linear probe fitted on `train` rows, R^2 (uniform average over targets) on the rest."""
    x = np.c_[z, np.ones(len(z))]
    a = x[train].T @ x[train] + ridge * len(z) * np.eye(x.shape[1])
    w = np.linalg.solve(a, x[train].T @ y[train])
    pred, true = x[~train] @ w, y[~train]
    r2 = 1 - ((pred - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)
    return float(r2.mean())


def effective_rank(z: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values of the centred embeddings (Roy & Vetterli)."""
    s = np.linalg.svd(z - z.mean(0), compute_uv=False)
    p = s / max(s.sum(), 1e-12)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def retrieval(pred: np.ndarray, bank: np.ndarray, target: np.ndarray, pools: list[np.ndarray]) -> tuple[float, float]:
    """pred (Q, D), bank (M, D), target (Q,) bank rows, pools: per query candidate rows (incl. target)
    -> top-1, top-5."""
    top1 = top5 = 0
    for q, pool in enumerate(pools):
        d = ((bank[pool] - pred[q]) ** 2).sum(1)
        rank = int((d < d[np.where(pool == target[q])[0][0]]).sum())
        top1 += rank < 1
        top5 += rank < 5
    return top1 / len(pools), top5 / len(pools)


def rollout_retrieval(z: np.ndarray, actions: np.ndarray, predict, horizons=(1, 4, 8, 16), pool_size=1000, seed=0):
    """z (N, T, D) held-out clip embeddings, actions (N, T-1, A) between them.

    For each h: queries (trajectory i, start t), the predictor rolled h steps
    from z[i, t] with the true actions; candidates: the true z[i, t+h] among
    `pool_size` states (random pool; hard pool = every other state of the same
    trajectory + random others).
    """
    rng = np.random.default_rng(seed)
    n, t_len, d = z.shape
    bank = z.reshape(-1, d)
    results = {}
    for h in horizons:
        q = min(pool_size, n * (t_len - h))
        rows = rng.integers(0, n, q)
        starts = rng.integers(0, t_len - h, q)
        state = z[rows, starts]
        for k in range(h):
            state = predict(state, actions[rows, starts + k])
        target = rows * t_len + starts + h
        random_pools, hard_pools = [], []
        for i in range(q):
            others = rng.choice(len(bank), pool_size, replace=False)
            others = others[others != target[i]][: pool_size - 1]
            random_pools.append(np.r_[target[i], others])
            same = rows[i] * t_len + np.arange(t_len)
            same = same[same != target[i]]
            rest = others[(others // t_len) != rows[i]][: pool_size - 1 - len(same)]
            hard_pools.append(np.r_[target[i], same, rest])
        copy_last = z[rows, starts]
        results[h] = {
            "model": retrieval(state, bank, target, random_pools),
            "copy_last": retrieval(copy_last, bank, target, random_pools),
            "model_hard": retrieval(state, bank, target, hard_pools),
            "copy_last_hard": retrieval(copy_last, bank, target, hard_pools),
        }
    return results


def cost_landscape(encode, matrices: dict[str, np.ndarray], goals: int = 8, seed: int = 5) -> dict:
    """Mean planning cost (mean square of M (z - goal)) of states binned by the agent's distance to the goal.

    Goal: a single image (the ball somewhere else); states: 2-frame clips with the agent on a 4-px grid and a
    moving ball at random. A cost a planner can follow grows with the distance in every bin.
    """
    rng = np.random.default_rng(seed)
    grid = np.array([(x, y) for x in range(world.AGENT_LO, world.AGENT_HI + 1, 4)
                     for y in range(world.AGENT_LO, world.AGENT_HI + 1, 4)], float)
    grid = grid[~world.blocked(grid)]
    edges = [0, 4, 8, 12, 16, 24, 32, 48, 90]
    sums = {name: np.zeros(len(edges) - 1) for name in matrices}
    counts = np.zeros(len(edges) - 1)
    for _ in range(goals):
        goal = world.random_free_positions(rng, 1)[0]
        goal_frame = world.render(goal[None], rng.uniform(world.BALL_LO, world.BALL_HI, (1, 2)))
        g = encode(clip_array(np.stack([goal_frame, goal_frame], 1))[:, 0])[0]
        ball = rng.uniform(world.BALL_LO, world.BALL_HI, (len(grid), 2))
        frames = np.stack([world.render(grid, ball), world.render(grid, ball + 1.5)], 1)
        z = encode(clip_array(frames)[:, 0])
        which = np.digitize(np.linalg.norm(grid - goal, axis=1), edges) - 1
        counts += np.bincount(which, minlength=len(edges) - 1)[: len(edges) - 1]
        for name, m in matrices.items():
            cost = (((z - g) @ m.T) ** 2).mean(axis=1)
            sums[name] += np.bincount(which, weights=cost, minlength=len(edges) - 1)[: len(edges) - 1]
    return {"bins_px": edges, **{name: (sums[name] / np.maximum(counts, 1)).tolist() for name in matrices}}
