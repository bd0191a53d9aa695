"""Train the demo JEPA world model on random-policy trajectories of models/demo/world.py.

    python -m models.demo.train                      # the shipped weights (make demo-train)
    python -m models.demo.train --reg none --max-steps 600 --out reports/ablation/none.safetensors
    python -m models.demo.train --smoke              # a few steps: proves the code path (CI)
    python -m models.demo.train --init W --max-steps 0 --out W2   # only the predictor stage, on W's encoder

Stage 1 trains encoder and predictor together. Objective, per batch of B segments of H+1 consecutive 2-frame
clips and H actions:
- z_k = encoder(clip_k), targets are z_k with the gradient stopped (or, with --target ema, a momentum encoder's);
- multi-step rollout loss: z^_0 = z_0, z^_{k+1} = predictor(z^_k, a_k), mean over k of |z^_k - sg(z_k)|^2,
  plus the teacher-forced one-step loss |predictor(z_k, a_k) - sg(z_{k+1})|^2;
- plus an anti-collapse regulariser on all z of the batch: SIGReg (default), VICReg, or none.
Frames are rendered on the fly from stored positions (cheap), so the data never fills memory.

Stage 2 (the predictor stage) freezes the encoder, embeds every training clip once with it in eval mode (the
embedding the service serves), and trains the predictor alone on those fixed states with the same rollout +
one-step loss, larger batches and a lower learning rate. Why a second stage: in stage 1 the predictor chases
targets that move with the encoder, and the cosine schedule that keeps the ball in the embedding ends before
long rollouts are learnt; on fixed states the predictor's long-horizon error keeps falling (docs/demo_world.md:
top-5 among 1,000 candidates at h = 8 went from 0.676 after the joint stage to 0.890 after 2,000 predictor
steps, the encoder and so the probes unchanged). The states fit in memory (4,000 x 32 x 128 floats = 66 MB).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.demo import world
from models.demo.model import DEFAULT_WEIGHTS, DEMO_MEAN, DEMO_STD, DemoModel, build_demo_model, save_demo_model
from models.demo.regularizers import sigreg, vicreg


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    seed: int = 0
    trajectories: int = 4000
    steps_per_trajectory: int = 32
    door_fraction: float = 0.5
    batch: int = 16
    horizon: int = 8
    reg: str = "sigreg"
    reg_weight: float = 0.05
    directions: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    final_lr_fraction: float = 0.05  # cosine decay from lr to lr * this at max_steps
    target: str = "stopgrad"  # "stopgrad": targets are the online embeddings, detached; "ema": a momentum encoder
    ema: float = 0.996
    one_step_weight: float = 1.0
    # training length is a step count (= DEMO_TRAIN_STEPS of make demo-train): the weights do not depend on machine load
    max_steps: int = 3000
    minutes: float | None = None  # optional wall-clock safety stop (None: run all max_steps)
    log_every: int = 50
    threads: int = 1  # on a busy 2-core machine, 2 torch threads ran 10x slower than 1 (barrier waits)
    # stage 2: the predictor alone on the frozen encoder's states (0 skips it)
    predictor_steps: int = 2000
    predictor_batch: int = 256
    predictor_horizon: int = 8
    predictor_lr: float = 1e-3
    predictor_warmup_steps: int = 100


def frames_to_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> normalised float (..., 3, H, W) as the service preprocesses images."""
    x = torch.from_numpy(frames).float().div_(255.0).sub_(torch.tensor(DEMO_MEAN)).div_(torch.tensor(DEMO_STD))
    return x.movedim(-1, -3)


def clips_from_frames(frames: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, H, W) consecutive frames -> (B, F-1, 2, 3, H, W) clips (f_{t-1}, f_t)."""
    return torch.stack([frames[:, :-1], frames[:, 1:]], dim=2)


class SegmentSampler:
    """Random windows of H+2 frames (H+1 clips) and the H actions between those clips."""

    def __init__(self, data: world.Trajectories, horizon: int, seed: int) -> None:
        self.data, self.horizon = data, horizon
        self.rng = np.random.default_rng(seed + 1)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, steps = self.data.actions.shape[:2]
        h = self.horizon
        rows = self.rng.integers(0, n, batch)
        starts = self.rng.integers(0, steps - h, batch)  # frames s .. s+h+1
        idx = starts[:, None] + np.arange(h + 2)[None]  # (B, h+2)
        agent = self.data.agent[rows[:, None], idx]  # (B, h+2, 2)
        ball = self.data.ball[rows[:, None], idx]
        frames = world.render(agent.reshape(-1, 2), ball.reshape(-1, 2)).reshape(batch, h + 2, 64, 64, 3)
        # the clip ending at frame t is followed by action t (frame t -> t+1)
        actions = self.data.actions[rows[:, None], idx[:, 1:-1]]  # (B, h, 2)
        return clips_from_frames(frames_to_input(frames)), torch.from_numpy(actions)


def prediction_losses(
    predictor: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor, actions: torch.Tensor,
    one_step_weight: float,
) -> dict[str, torch.Tensor]:
    """states, targets (B, H+1, D), actions (B, H, A): action k leads from state k to state k + 1 ->
    the mean squared error of an H-step rollout from states[:, 0] against targets[:, 1:] ("rollout"), plus the
    teacher-forced one-step error of every states[:, k] against targets[:, k + 1] ("one_step", weighted)."""
    rollout, current = [], states[:, 0]
    for k in range(actions.shape[1]):
        current = predictor(current, actions[:, k])
        rollout.append(current)
    multi = (torch.stack(rollout, dim=1) - targets[:, 1:]).pow(2).mean()
    teacher_forced = predictor(states[:, :-1].flatten(0, 1), actions.flatten(0, 1))
    one_step = (teacher_forced - targets[:, 1:].flatten(0, 1)).pow(2).mean()
    return {"rollout": multi, "one_step": one_step_weight * one_step}


def jepa_losses(
    model: DemoModel,
    clips: torch.Tensor,
    actions: torch.Tensor,
    cfg: TrainConfig,
    target_encoder: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    b, k1 = clips.shape[:2]
    raw, _ = model.encoder.raw(clips.flatten(0, 1))  # (B*(H+1), D)
    z_flat = model.encoder.norm(raw)
    z = z_flat.view(b, k1, -1)  # (B, H+1, D)
    if target_encoder is None:
        target = z.detach()
    else:
        with torch.no_grad():
            target = target_encoder(clips.flatten(0, 1))[0].view(b, k1, -1)
    losses = prediction_losses(model.predictor, z, target, actions, cfg.one_step_weight)
    if cfg.reg == "sigreg":
        losses["sigreg"] = cfg.reg_weight * sigreg(z_flat, cfg.directions)
    elif cfg.reg == "vicreg":
        losses["vicreg"] = vicreg(z_flat)
    losses["loss"] = sum(losses.values())
    losses["raw_std"] = raw.detach().std(0).mean()
    return losses


def warmup_cosine(peak: float, warmup: int, total: int, floor_fraction: float, step: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to peak * floor_fraction at `total` (a function of the step only)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    floor = peak * floor_fraction
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Stage 1's schedule: warm-up, then cosine decay to lr * final_lr_fraction at max_steps."""
    return warmup_cosine(cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.final_lr_fraction, step)


def embed_trajectories(encoder: torch.nn.Module, data: world.Trajectories, log=print, chunk: int = 100) -> torch.Tensor:
    """Every clip of every trajectory through the encoder in eval mode -> (N, T, D), as the service embeds them."""
    encoder.eval()
    out, started = [], time.perf_counter()
    n = data.actions.shape[0]
    with torch.inference_mode():
        for first in range(0, n, chunk):
            rows = slice(first, first + chunk)
            agent, ball = data.agent[rows], data.ball[rows]
            frames = world.render(agent.reshape(-1, 2), ball.reshape(-1, 2)).reshape(*agent.shape[:2], 64, 64, 3)
            clips = clips_from_frames(frames_to_input(frames))  # (n, T, 2, 3, 64, 64)
            out.append(encoder(clips.flatten(0, 1))[0].view(*clips.shape[:2], -1))
            if (first // chunk) % 10 == 9:
                log(f"embedded {first + chunk}/{n} trajectories ({time.perf_counter() - started:.0f} s)")
    return torch.cat(out)


def predictor_losses(
    predictor: torch.nn.Module, states: torch.Tensor, actions: torch.Tensor, rows: np.ndarray, starts: np.ndarray,
    horizon: int, one_step_weight: float,
) -> dict[str, torch.Tensor]:
    """Rollout of `horizon` steps from each (row, start) with the true actions, plus the teacher-forced one-step
    loss, against the fixed states (N, T, D); action t leads from clip t to clip t + 1."""
    idx = starts[:, None] + np.arange(horizon + 1)[None]  # (B, H+1)
    target = states[rows[:, None], idx]  # (B, H+1, D)
    taken = actions[rows[:, None], idx[:, :-1]]  # (B, H, A)
    losses = prediction_losses(predictor, target, target, taken, one_step_weight)
    losses["loss"] = losses["rollout"] + losses["one_step"]
    return losses


def train_predictor(model: DemoModel, data: world.Trajectories, cfg: TrainConfig, log=print) -> list[dict]:
    """Stage 2: the predictor alone on the frozen encoder's states; returns the loss history."""
    started = time.perf_counter()
    states = embed_trajectories(model.encoder, data, log)
    log(f"predictor stage: {states.shape[0]} x {states.shape[1]} states embedded "
        f"({time.perf_counter() - started:.0f} s); {cfg.predictor_steps} steps of batch {cfg.predictor_batch}")
    # clip t ends at frame t + 1; the action after it moves frame t + 1 to t + 2
    actions = torch.from_numpy(data.actions[:, 1:].astype(np.float32))
    predictor = model.predictor.train()
    opt = torch.optim.AdamW(predictor.parameters(), lr=cfg.predictor_lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed + 2)
    n, t_len = states.shape[:2]
    history = []
    for step in range(cfg.predictor_steps):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(cfg.predictor_lr, cfg.predictor_warmup_steps, cfg.predictor_steps,
                                        cfg.final_lr_fraction, step)
        rows = rng.integers(0, n, cfg.predictor_batch)
        starts = rng.integers(0, t_len - cfg.predictor_horizon, cfg.predictor_batch)
        losses = predictor_losses(predictor, states, actions, rows, starts, cfg.predictor_horizon,
                                  cfg.one_step_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(predictor.parameters(), 1.0)
        opt.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == 1 or done == cfg.predictor_steps:
            row = {"step": done, "seconds": round(time.perf_counter() - started, 1),
                   "lr": round(opt.param_groups[0]["lr"], 6)}
            row |= {k: round(float(v.detach()), 5) for k, v in losses.items()}
            history.append(row)
            log(json.dumps(row))
    predictor.eval()
    return history


def train(cfg: TrainConfig, out: Path, log=print, init: Path | None = None) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    load_start = os.getloadavg()
    data = world.generate_trajectories(cfg.seed, cfg.trajectories, cfg.steps_per_trajectory, cfg.door_fraction)
    crossing = float(data.crosses_door().mean())
    log(f"data: {cfg.trajectories} trajectories x {cfg.steps_per_trajectory} steps, "
        f"{crossing:.0%} cross the door ({time.perf_counter() - started:.1f} s)")
    if init is not None:  # continue from earlier weights (a second stage); the optimiser starts afresh
        from models.demo.model import load_demo_model

        model = load_demo_model(init)
        log(f"continuing from {init}")
    else:
        model = build_demo_model(cfg.seed)
    model.encoder.train()
    model.predictor.train()
    target_encoder = None
    if cfg.target == "ema":  # a momentum copy of the encoder makes the targets (BYOL / I-JEPA style)
        target_encoder = copy.deepcopy(model.encoder).train()
        target_encoder.requires_grad_(False)
    params = [*model.encoder.parameters(), *model.predictor.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = SegmentSampler(data, cfg.horizon, cfg.seed)
    deadline = None if cfg.minutes is None else started + cfg.minutes * 60
    history = []
    step = 0
    while step < cfg.max_steps and (deadline is None or time.perf_counter() < deadline):
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        clips, actions = sampler.sample(cfg.batch)
        losses = jepa_losses(model, clips, actions, cfg, target_encoder)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if target_encoder is not None:
            with torch.no_grad():
                for t, o in zip(target_encoder.state_dict().values(), model.encoder.state_dict().values(), strict=True):
                    if t.dtype.is_floating_point:
                        t.lerp_(o, 1.0 - cfg.ema)
                    else:
                        t.copy_(o)
        step += 1
        if step % cfg.log_every == 0 or step == 1 or step == cfg.max_steps:
            row = {
                "step": step,
                "seconds": round(time.perf_counter() - started, 1),
                "lr": round(learning_rate(cfg, step - 1), 6),
            }
            row |= {k: round(float(v.detach()), 5) for k, v in losses.items()}
            history.append(row)
            log(json.dumps(row))
    model.encoder.eval()
    model.predictor.eval()
    stage_one_seconds = time.perf_counter() - started
    predictor_history = train_predictor(model, data, cfg, log) if cfg.predictor_steps > 0 else []
    wall = time.perf_counter() - started
    summary = {
        "config": cfg.__dict__,
        "steps": step,
        "predictor_steps": cfg.predictor_steps,
        "wall_seconds": round(wall, 1),
        "stage_one_seconds": round(stage_one_seconds, 1),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "date": dt.date.today().isoformat(),
        "crosses_door": round(crossing, 3),
        "history": history,
        "predictor_history": predictor_history,
    }
    if init is not None and init.with_suffix(".json").exists():
        earlier = json.loads(init.with_suffix(".json").read_text())
        keep = ("config", "steps", "predictor_steps", "wall_seconds", "date", "history", "predictor_history")
        summary["stages"] = [*earlier.get("stages", [{k: earlier.get(k) for k in keep}]), {k: summary[k] for k in keep}]
        summary["steps_total"] = sum(stage["steps"] for stage in summary["stages"])
        summary["predictor_steps_total"] = sum(stage["predictor_steps"] or 0 for stage in summary["stages"])
        summary["wall_seconds_total"] = round(sum(stage["wall_seconds"] for stage in summary["stages"]), 1)
    save_demo_model(model, out, {"train_config": json.dumps(cfg.__dict__), "steps": str(step)})
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"trained {step} steps in {wall / 60:.1f} min -> {out}")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.demo.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    p.add_argument(
        "--out", type=Path, default=DEFAULT_WEIGHTS, help="safetensors file to write (+ a .json log beside it)"
    )
    p.add_argument("--reg", choices=("sigreg", "vicreg", "none"), default=d.reg, help="anti-collapse regulariser")
    p.add_argument("--reg-weight", type=float, default=d.reg_weight, help="SIGReg weight")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="training steps (the LR schedule ends here)")
    p.add_argument("--minutes", type=float, default=d.minutes, help="optional wall-clock safety stop (default: none)")
    p.add_argument("--target", choices=("stopgrad", "ema"), default=d.target, help="prediction targets")
    p.add_argument("--ema", type=float, default=d.ema, help="EMA target momentum")
    p.add_argument("--one-step-weight", type=float, default=d.one_step_weight, help="weight of the teacher-forced loss")
    p.add_argument("--door-fraction", type=float, default=d.door_fraction, help="share of door-seeking trajectories")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--final-lr-fraction", type=float, default=d.final_lr_fraction)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--horizon", type=int, default=d.horizon, help="rollout steps in the loss")
    p.add_argument("--trajectories", type=int, default=d.trajectories)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--predictor-steps", type=int, default=d.predictor_steps,
                   help="steps of the predictor stage on the frozen encoder's states (0: none)")
    p.add_argument("--predictor-batch", type=int, default=d.predictor_batch)
    p.add_argument("--predictor-horizon", type=int, default=d.predictor_horizon, help="rollout steps in its loss")
    p.add_argument("--predictor-lr", type=float, default=d.predictor_lr)
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (with --max-steps 0: only the predictor stage)")
    p.add_argument("--smoke", action="store_true", help="3 steps on tiny data: proves the code path")
    args = p.parse_args(argv)
    cfg = TrainConfig(
        seed=args.seed, trajectories=args.trajectories, batch=args.batch, horizon=args.horizon, reg=args.reg,
        reg_weight=args.reg_weight, lr=args.lr, minutes=args.minutes, max_steps=args.max_steps, threads=args.threads,
        target=args.target, ema=args.ema, one_step_weight=args.one_step_weight, door_fraction=args.door_fraction,
        warmup_steps=args.warmup_steps, final_lr_fraction=args.final_lr_fraction, log_every=args.log_every,
        predictor_steps=args.predictor_steps, predictor_batch=args.predictor_batch,
        predictor_horizon=args.predictor_horizon, predictor_lr=args.predictor_lr,
    )
    if args.smoke:
        cfg = TrainConfig(
            **{
                **cfg.__dict__,
                "trajectories": 8,
                "batch": 4,
                "horizon": 3,
                "max_steps": min(cfg.max_steps, 3),  # --max-steps 0 / --predictor-steps 0 still skip a stage
                "warmup_steps": 1,
                "predictor_steps": min(cfg.predictor_steps, 3),
                "predictor_batch": 4,
                "predictor_warmup_steps": 1,
                "log_every": 1,
            }
        )
    train(cfg, args.out, init=args.init)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
