"""Evaluate the demo world model and write docs/demo_world.md with PNG figures.

    python -m evaluation            # make demo-eval

Every figure in the report is measured here, on held-out trajectories (seeds
never used in training):
- linear-probe R^2 of agent and ball positions from the served embedding
  (the exported ONNX encoder, run by ONNX Runtime);
- per ablation row (prediction loss alone / + VICReg / + SIGReg, same short
  budget, plus the shipped model): un-normalised embedding std, entropy
  effective rank, probe R^2 and rollout retrieval at h = 1;
- rollout retrieval: top-1 / top-5 of the true future state among 1,000
  candidates at h = 1, 4, 8, 16 (served ONNX predictor rolled with the true
  actions), against copying the last state; on a random pool and on a hard
  pool that holds every other state of the same trajectory;
- surprise: AUROC of the per-step surprise score (the served predictor's z-scored error) for steps that break
  the world's physics (teleports, walking through the wall, a vanishing ball) against normal steps;
- probe heads: room classifiers (the agent's room, the ball's, and whether the ball is in the agent's room: linear,
  MLP and attentive heads) trained by `jepa-export probe` on frozen features, their held-out accuracy and their
  accuracy through POST /classify on fresh frames;
- planning: success rate (agent within 4 px of the goal at the end) over
  episodes with the goal in the same room and through the door, model
  predictive control with POST /plan of the served app (in process), against
  random actions; milliseconds per /plan call.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.episodes import plan_episodes, wait_until_ready
from evaluation.metrics import (
    Encoder,
    clip_array,
    cost_landscape,
    effective_rank,
    predictor_fn,
    probe_r2,
    rollout_retrieval,
)
from evaluation.probe import evaluate_probes
from evaluation.report import path_figure, stack_rows, strip, write_markdown
from evaluation.surprise import evaluate_surprise
from models.demo import world

HELD_OUT_SEED = 777
# /plan options of the planning evaluation (general /plan options; see service/api/schemas.py PlanRequest)
PLAN_ARGS = {"horizon": 16, "samples": 64, "iterations": 3, "action_repeat": 4, "cost": "all_steps", "subspace": "auto"}
EXECUTE = 2
DOCS = Path("docs")
ABLATION = Path("reports/ablation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=300, help="held-out trajectories (32 steps each)")
    parser.add_argument("--episodes", type=int, default=50, help="planning episodes per kind (same room, door)")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--ablation", type=Path, default=ABLATION)
    parser.add_argument("--samples", type=int, default=PLAN_ARGS["samples"])
    parser.add_argument("--iterations", type=int, default=PLAN_ARGS["iterations"])
    parser.add_argument("--horizon", type=int, default=PLAN_ARGS["horizon"])
    parser.add_argument("--action-repeat", type=int, default=PLAN_ARGS["action_repeat"])
    parser.add_argument("--cost", choices=("final", "all_steps"), default=PLAN_ARGS["cost"])
    parser.add_argument(
        "--subspace",
        choices=("auto", "full", "controllable", "action_readout", "readout_and_controllable"),
        default=PLAN_ARGS["subspace"],
    )
    parser.add_argument("--execute", type=int, default=EXECUTE, help="actions executed per /plan call (then replan)")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from an existing demo_world.json")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="measure only this section and update it in the "
                        "existing demo_world.json / .md (the other sections are kept as they are)")
    parser.add_argument("--probe-train", type=int, default=2000, help="labelled frames the probe heads are trained on")
    parser.add_argument("--probe-test", type=int, default=500, help="fresh frames classified through POST /classify")
    parser.add_argument(
        "--surprise-trajectories", type=int, default=200, help="held-out trajectory pairs per violation kind"
    )
    args = parser.parse_args(argv)
    if args.markdown_only:
        write_markdown(args.docs / "demo_world.md", json.loads((args.docs / "demo_world.json").read_text()))
        return 0
    if args.only:
        return update_section(args.only, args)

    import torch

    torch.set_num_threads(2)
    from export.demo import export_demo
    from export.pipeline import ExportOptions

    started = time.perf_counter()
    report_load = {"start": [round(x, 2) for x in os.getloadavg()]}
    figures = args.docs / "demo_world"
    figures.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        entry = export_demo(ExportOptions(out=repo, fp16=False), log=lambda _: None)
        manifest = json.loads((entry / "manifest.json").read_text())

        data = world.generate_trajectories(HELD_OUT_SEED, args.trajectories)
        frames = data.frames()  # (N, 33, 64, 64, 3)
        clips = clip_array(frames)  # (N, 32, 2, 3, 64, 64)
        n, t_len = clips.shape[:2]
        served = Encoder(onnx_path=entry / "encoder.onnx")
        z = served(clips.reshape(-1, *clips.shape[2:])).reshape(n, t_len, -1)
        agent = data.agent[:, 1:].reshape(-1, 2)
        ball = data.ball[:, 1:].reshape(-1, 2)
        train_rows = np.repeat(np.arange(n) < int(n * 0.7), t_len)
        flat = z.reshape(n * t_len, -1)
        report["probe"] = {"agent": probe_r2(flat, agent, train_rows), "ball": probe_r2(flat, ball, train_rows)}
        print("probe R2", report["probe"], flush=True)
        actions = data.actions[:, 1:]  # action after clip t (frame t+1 -> t+2): (N, 31, 2)
        predict = predictor_fn(onnx_path=entry / "predictor.onnx")
        one = predict(z[:, :-1].reshape(-1, z.shape[-1]), actions.reshape(-1, actions.shape[-1])).reshape(
            z[:, 1:].shape
        )
        report["one_step_mse"] = {"model": float(((one - z[:, 1:]) ** 2).mean()),
                                  "copy_last": float(((z[:, :-1] - z[:, 1:]) ** 2).mean()),
                                  "embedding_variance": float(z.var(axis=(0, 1)).mean())}
        print("one-step", report["one_step_mse"], flush=True)
        report["retrieval"] = rollout_retrieval(z, actions, predict)
        print("retrieval", json.dumps(report["retrieval"]), flush=True)

        # ablation rows: same metrics for each short run, plus the shipped model
        rows = []
        candidates = [("prediction loss only", args.ablation / "none.safetensors"),
                      ("+ VICReg", args.ablation / "vicreg.safetensors"),
                      ("+ SIGReg", args.ablation / "sigreg.safetensors"),
                      ("shipped (+ SIGReg, full budget, then the predictor stage)", None)]
        sub = slice(0, min(n, 150))
        for label, path in candidates:
            if path is not None and not path.exists():
                continue
            from models.demo import DEFAULT_WEIGHTS

            enc = Encoder(weights=path or DEFAULT_WEIGHTS)
            c = clips[sub].reshape(-1, *clips.shape[2:])
            zz = enc(c)
            raw = enc(c, raw=True)
            m = zz.shape[0] // t_len
            tr = np.repeat(np.arange(m) < int(m * 0.7), t_len)
            rr = rollout_retrieval(
                zz.reshape(m, t_len, -1), actions[sub], predictor_fn(weights=path or DEFAULT_WEIGHTS), horizons=(1, 8)
            )
            log = json.loads((path or DEFAULT_WEIGHTS).with_suffix(".json").read_text())
            rows.append({
                "label": label, "steps": log["steps"], "minutes": round(log["wall_seconds"] / 60, 1),
                "raw_std": float(raw.std(0).mean()), "std": float(zz.std(0).mean()),
                "erank": effective_rank(zz), "agent_r2": probe_r2(zz, agent[: len(zz)], tr),
                "ball_r2": probe_r2(zz, ball[: len(zz)], tr),
                "top5_h1": rr[1]["model"][1], "top5_h8": rr[8]["model"][1],
            })
            print("ablation", rows[-1], flush=True)
        report["ablation"] = rows

        report["surprise"] = run_section("surprise", entry, args)
        report["probe_heads"] = run_section("probe_heads", entry, args)

        planning_aids = {name: np.load(entry / f"{name}.npy") for name in ("controllable", "action_readout")
                         if (entry / f"{name}.npy").exists()}
        report["cost_landscape"] = cost_landscape(served, planning_aids)
        print("cost landscape", json.dumps(report["cost_landscape"]), flush=True)

        # figures: sample frames, rollout strip (true vs nearest to predicted)
        strip([frames[i, 8] for i in range(6)]).save(figures / "samples.png")
        i0, t0, h = 3, 4, 8
        state = z[i0, t0]
        nearest = []
        bank = flat
        for k in range(h):
            state = predict(state[None], actions[i0, t0 + k][None])[0]
            idx = int(((bank - state) ** 2).sum(1).argmin())
            nearest.append(frames[idx // t_len, idx % t_len + 1])
        true = [frames[i0, t0 + 1 + k + 1] for k in range(h)]
        stack_rows([strip(true), strip(nearest)]).save(figures / "rollout.png")

        # planning through the served app
        from fastapi.testclient import TestClient

        from service.app import create_app
        from service.settings import Settings

        # one ORT thread: on a busy 2-core machine two threads per op wait on each other (measured 5x slower)
        settings = Settings(model_repository=repo, data_dir=repo / "data", max_queue_delay_ms=0.5, intra_op_threads=1)
        plan_args = {"horizon": args.horizon, "samples": args.samples, "iterations": args.iterations,
                     "action_repeat": args.action_repeat, "cost": args.cost, "subspace": args.subspace}
        report["planning"] = {"args": plan_args, "execute": args.execute}
        paths = []
        with TestClient(create_app(settings.config)) as client:
            wait_until_ready(client)
            for kind, steps in (("same_room", 24), ("through_door", 40)):
                ok, rnd, dists, times, example, subspace_used = plan_episodes(
                    client, args.episodes, kind, steps, plan_args, args.execute, seed=99
                )
                report["planning"][kind] = {
                    "episodes": args.episodes, "steps": steps, "success": ok / args.episodes,
                    "random_success": rnd / args.episodes, "median_final_px": float(np.median(dists)),
                    "ms_per_plan_median": float(np.median(times)), "ms_per_plan_p90": float(np.percentile(times, 90)),
                    "subspace": subspace_used,
                }
                print(kind, report["planning"][kind], flush=True)
                paths.append(path_figure(example[0], example[1]))
        Image.fromarray(np.concatenate([np.asarray(p) for p in paths], axis=1)).save(figures / "plan.png")
        report["manifest"] = {"space_id": manifest["space_id"], "planning": manifest.get("planning")}
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average"] = {**report_load, "end": [round(x, 2) for x in os.getloadavg()]}
    report["date"] = dt.date.today().isoformat()
    report["machine"] = (
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    (args.docs / "demo_world.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    write_markdown(args.docs / "demo_world.md", report)
    print(f"wrote {args.docs / 'demo_world.md'} in {report['seconds']} s")
    return 0


def run_section(name: str, entry: Path, args: argparse.Namespace) -> dict:
    """One section measured on its own, with when, where and under what load it ran."""
    started = time.perf_counter()
    load = [round(x, 2) for x in os.getloadavg()]
    result = SECTIONS[name](entry, args)
    result["run"] = {
        "command": f"python -m evaluation --only {name}", "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "load_average": {"start": load, "end": [round(x, 2) for x in os.getloadavg()]},
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result


def update_section(name: str, args: argparse.Namespace) -> int:
    """Measure one section and rewrite demo_world.json / .md with it; every other figure stays as it was."""
    import torch

    torch.set_num_threads(2)
    from export.demo import export_demo
    from export.pipeline import ExportOptions

    report = json.loads((args.docs / "demo_world.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        entry = export_demo(ExportOptions(out=Path(tmp), fp16=False), log=lambda _: None)
        report[name] = run_section(name, entry, args)
    (args.docs / "demo_world.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    write_markdown(args.docs / "demo_world.md", report)
    print(f"updated the {name} section of {args.docs / 'demo_world.md'} in {report[name]['run']['seconds']} s")
    return 0


def _surprise(entry: Path, args: argparse.Namespace) -> dict:
    return evaluate_surprise(entry, args.surprise_trajectories, args.docs / "demo_world" / "surprise.png")


def _probe(entry: Path, args: argparse.Namespace) -> dict:
    return evaluate_probes(entry, args.probe_train, args.probe_test)


SECTIONS = {"surprise": _surprise, "probe_heads": _probe}


if __name__ == "__main__":
    raise SystemExit(main())
