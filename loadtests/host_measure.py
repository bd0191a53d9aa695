"""One measured point of the host benchmark and the window around it: CPU used by the measured processes, by
everything on the group's cores, by the load generator and by the bench itself, and where the threads ran."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from loadtests.host_cpuset import CoreGroup, PlacementProbe, busy_seconds, cpu_seconds, cpu_seconds_by_role

# Rows of the report
JEPA = "jepa-serve"
NAIVE = "naive"
DECODE = "decode"  # PIL decode at full size + resize + normalise, a process per core
DECODE_DRAFT = "decode-draft"  # the same with libjpeg's DCT scaling (Image.draft)
INPROCESS = "inprocess"  # decode + ONNX Runtime in one process at its best batch


@dataclass
class Measurement:
    row: str
    model: str
    payload: str  # e.g. '224x8' for HTTP rows; the image size ('224', '12mp') for decode rows
    cores: int
    repeat: int
    img_per_s: float
    req_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    server_cores: float | None = None  # CPU used by the measured server's processes per second of the window
    busy_cores: float | None = None  # CPU used by every process on the group's cores per second
    wrk_cores: float | None = None  # the load generator's CPU per second
    bench_cores: float | None = None  # this bench process (the placement probe) per second
    placement: dict = field(default_factory=dict)
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class Window:
    """Readings before and after a measured run: `seconds`, `server_cpu_s`, `busy_s`, `bench_cpu_s`, and the
    placement of the group's threads sampled throughout."""

    def __init__(self, group: CoreGroup, server_pids: Callable[[], list[int]] = list) -> None:
        self.group = group
        self.server_pids = server_pids
        self.probe = PlacementProbe(group)

    def __enter__(self) -> Window:
        self._pids = self.server_pids()
        self._server = cpu_seconds(self._pids)
        self._roles = cpu_seconds_by_role(self._pids)
        self._busy = busy_seconds(self.group.cpus)
        self._bench = _own_cpu()
        self._started = time.monotonic()
        self.probe.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.probe.__exit__(*exc)
        self.seconds = time.monotonic() - self._started
        self.server_cpu_s = cpu_seconds(self._pids) - self._server
        after = cpu_seconds_by_role(self._pids)
        self.role_cpu_s = {role: after[role] - self._roles.get(role, 0.0) for role in after}
        self.busy_s = busy_seconds(self.group.cpus) - self._busy
        self.bench_cpu_s = _own_cpu() - self._bench

    def fill(self, m: Measurement, server: bool) -> Measurement:
        m.busy_cores = self.busy_s / self.seconds
        m.bench_cores = self.bench_cpu_s / self.seconds
        m.server_cores = self.server_cpu_s / self.seconds if server else None
        if server and m.detail.get("requests"):
            m.detail["cpu_ms_per_request"] = {role: round(1000 * cpu / m.detail["requests"], 3)
                                              for role, cpu in sorted(self.role_cpu_s.items()) if cpu > 0}
        m.placement = self.probe.placement.as_dict()
        return m


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Summary:
    """The repeats of one row: median and range of img/s, medians of the rest."""

    row: str
    model: str
    payload: str
    cores: int
    img_per_s: float
    img_min: float
    img_max: float
    repeats: int
    req_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    server_cores: float | None
    busy_cores: float | None
    wrk_cores: float | None
    bench_cores: float | None
    confined: bool
    seen_on: list[int]
    detail: dict
    few_requests: bool = False  # some run completed under MIN_REQUESTS_PER_CONNECTION: its rate is biased low

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.row, self.model, self.payload, self.cores)


# A closed-loop window counts only the requests that finish inside it; with fewer than this many per connection the
# requests cut off at its start and end bias the rate low by a quarter or more.
MIN_REQUESTS_PER_CONNECTION = 4


def _few_requests(m: Measurement) -> bool:
    connections = m.detail.get("connections")
    return bool(connections) and m.detail.get("requests", 0) < MIN_REQUESTS_PER_CONNECTION * connections


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(measurements: list[Measurement]) -> list[Summary]:
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.row, m.model, m.payload, m.cores), []).append(m)
    out = []
    for (row, model, payload, cores), ms in groups.items():
        rates = [m.img_per_s for m in ms]
        median_run = sorted(ms, key=lambda m: m.img_per_s)[len(ms) // 2]
        out.append(Summary(
            row=row, model=model, payload=payload, cores=cores, img_per_s=statistics.median(rates),
            img_min=min(rates), img_max=max(rates), repeats=len(ms),
            req_per_s=_median([m.req_per_s for m in ms]), p50_ms=_median([m.p50_ms for m in ms]),
            p99_ms=_median([m.p99_ms for m in ms]), errors=sum(m.errors for m in ms),
            server_cores=_median([m.server_cores for m in ms]), busy_cores=_median([m.busy_cores for m in ms]),
            wrk_cores=_median([m.wrk_cores for m in ms]), bench_cores=_median([m.bench_cores for m in ms]),
            confined=all(m.placement.get("confined", False) for m in ms),
            seen_on=sorted({c for m in ms for c in m.placement.get("seen_on", [])}),
            detail=median_run.detail, few_requests=any(_few_requests(m) for m in ms),
        ))
    return out
