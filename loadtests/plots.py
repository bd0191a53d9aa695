"""PNG plots of a load test (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _phase_lines(ax, phases: list[dict]) -> None:
    for phase in phases[1:]:
        ax.axvline(phase["start_s"], color="grey", linestyle=":", linewidth=0.8)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def throughput(series: dict[str, np.ndarray], phases: list[dict], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.stackplot(series["t"], series["ok_rps"], series["overload_rps"], series["fail_rps"],
                 labels=["2xx", "429 (shed)", "failed"], colors=["tab:green", "tab:orange", "tab:red"], alpha=0.8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests / s")
    users = ax.twinx()
    users.plot(series["t"], series["users"], color="black", linewidth=1, label="users")
    users.set_ylabel("users")
    _phase_lines(ax, phases)
    ax.legend(loc="upper left")
    ax.set_title("Throughput by outcome, and users")
    return _save(fig, path)


def latency(series: dict[str, np.ndarray], phases: list[dict], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(9, 4))
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax.plot(series["t"], series[key], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("latency of 2xx replies (ms, log)")
    _phase_lines(ax, phases)
    ax.legend()
    ax.set_title("Latency percentiles over time")
    return _save(fig, path)


def failures(series: dict[str, np.ndarray], phases: list[dict], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(series["t"], series["failure_ratio"], color="tab:red", label="failure ratio (5xx, errors)")
    ax.plot(series["t"], series["overload_ratio"], color="tab:orange", label="429 ratio (shed load)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("seconds")
    ax.set_ylabel("share of requests")
    _phase_lines(ax, phases)
    ax.legend()
    ax.set_title("Failures and load shedding over time")
    return _save(fig, path)


def server_side(server: dict[str, dict[str, list[float]]], phases: list[dict], path: Path) -> str | None:
    if not server:
        return None
    fig, (fill_ax, wait_ax, depth_ax) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for key, rows in server.items():
        t = np.asarray(rows["t"])
        fill_ax.plot(t, rows["fill_mean"], marker=".", label=key)
        wait_ax.plot(t, rows["wait_mean_ms"], marker=".", label=f"{key} mean")
        wait_ax.plot(t, rows["wait_p95_ms"], linestyle="--", label=f"{key} p95")
        depth_ax.plot(t, rows["queue_depth"], label=key)
    fill_ax.set_ylabel("batch fill (mean)")
    fill_ax.set_ylim(0, 1.05)
    wait_ax.set_ylabel("queue wait (ms)")
    depth_ax.set_ylabel("queue depth (items)")
    depth_ax.set_xlabel("seconds")
    for ax in (fill_ax, wait_ax, depth_ax):
        _phase_lines(ax, phases)
        ax.legend(fontsize=7)
    fill_ax.set_title("Server side, per scrape interval (from /metrics)")
    return _save(fig, path)


def memory(t: np.ndarray, rss: np.ndarray, phases: list[dict], path: Path) -> str | None:
    if len(t) < 2:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(t, rss / 2**20)
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS (MiB)")
    _phase_lines(ax, phases)
    ax.set_title("Server resident memory")
    return _save(fig, path)


def steps(rows: list[dict], knee: dict, path: Path) -> str:
    users = [r["users"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(users, [r["ok_rps"] for r in rows], marker="o", color="tab:green", label="2xx / s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(users, [str(u) for u in users])
    ax.minorticks_off()
    ax.set_xlabel("users")
    ax.set_ylabel("2xx / s")
    lat = ax.twinx()
    lat.plot(users, [r["p95_ms"] for r in rows], marker="s", color="tab:purple", label="p95 ms")
    lat.set_ylabel("p95 (ms)")
    if knee:
        ax.axvline(knee["users"], color="black", linestyle="--", linewidth=1)
        ax.annotate(
            f"knee: {knee['users']} users", (knee["users"], knee["ok_rps"]), textcoords="offset points", xytext=(5, -15)
        )
    ax.set_title("Step test: throughput and p95 per step")
    fig.legend(loc="upper left", bbox_to_anchor=(0.1, 0.9))
    return _save(fig, path)
