"""Load schedules as plain phases (no Locust import): the locustfile's shape follows them, the report cuts by them.

- constant: N users for the whole run (Locust's own -u/-r/-t); also used by the soak test.
- step: users rise through a list (e.g. 1,2,4,8,16,32), each held for the same time: where throughput stops
  growing while latency keeps climbing is the knee.
- spike: a base load, a sudden jump far past capacity, then the base load again: the service must shed
  the excess with 429 (never 5xx) and come back to its base latency.
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("constant", "step", "spike")


@dataclass(frozen=True)
class Phase:
    label: str
    start_s: float
    end_s: float  # float("inf") for an open-ended constant run
    users: int
    spawn_rate: float


@dataclass(frozen=True)
class Schedule:
    shape: str
    phases: tuple[Phase, ...]

    @property
    def duration_s(self) -> float:
        return self.phases[-1].end_s

    def at(self, t: float) -> Phase | None:
        """The phase running `t` seconds after the start; None once the schedule is over."""
        for phase in self.phases:
            if phase.start_s <= t < phase.end_s:
                return phase
        return None


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def constant(users: int, spawn_rate: float, duration_s: float | None) -> Schedule:
    end = float("inf") if not duration_s else float(duration_s)
    return Schedule("constant", (Phase(f"{users} users", 0.0, end, users, spawn_rate),))


def step(users: list[int], step_seconds: float) -> Schedule:
    if not users or any(u < 1 for u in users) or step_seconds <= 0:
        raise ValueError("step needs a list of user counts >= 1 and a step time > 0")
    # A fast spawn so each step reaches its users within its first second or two.
    phases = tuple(
        Phase(f"{u} users", i * step_seconds, (i + 1) * step_seconds, u, float(max(u, 10))) for i, u in enumerate(users)
    )
    return Schedule("step", phases)


def spike(base_users: int, peak_users: int, pre_s: float, spike_s: float, post_s: float) -> Schedule:
    if not 1 <= base_users < peak_users or min(pre_s, spike_s, post_s) <= 0:
        raise ValueError("spike needs 1 <= base < peak users and three positive phase times")
    rate = float(peak_users)  # the whole jump within about a second: that is what makes it a spike
    return Schedule("spike", (
        Phase("before", 0.0, pre_s, base_users, rate),
        Phase("spike", pre_s, pre_s + spike_s, peak_users, rate),
        Phase("after", pre_s + spike_s, pre_s + spike_s + post_s, base_users, rate),
    ))


def from_options(shape: str, *, users: int, spawn_rate: float, run_time_s: float | None,
                 steps: str, step_seconds: float, spike_users: str, spike_seconds: str) -> Schedule:
    if shape == "constant":
        return constant(users, spawn_rate, run_time_s)
    if shape == "step":
        return step(int_list(steps), step_seconds)
    if shape == "spike":
        base, peak = int_list(spike_users)
        pre, during, post = float_list(spike_seconds)
        return spike(base, peak, pre, during, post)
    raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
