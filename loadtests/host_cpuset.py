"""Confining a benchmarked process (and every thread and child it makes) to a set of CPU cores.

`taskset` alone is not enough: ONNX Runtime sets its own pool threads' affinity, and a "1-core" server
quietly used both cores. A cpuset cgroup is enforced by the kernel: a thread of the group can never run
elsewhere, whatever affinity it asks for. The group is entered before the command starts any thread: the
command runs through `sh -c 'echo $$ > cgroup.procs && exec ...'`, so the shell joins and then becomes the
command. Without root or without a cpuset controller the groups fall back to `taskset` and say so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.server import server_processes

ENTER_AND_EXEC = 'echo $$ > "$0" && exec "$@"'


def cpu_list(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def parse_cpu_list(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5] (the kernel's list format)."""
    cpus: list[int] = []
    for part in filter(None, text.strip().split(",")):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, options) of every mount."""
    rows = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4:
            rows.append((parts[1], parts[2], set(parts[3].split(","))))
    return rows


@dataclass(frozen=True)
class Confiner:
    """How groups are made here: 'cgroup-v1', 'cgroup-v2' or 'taskset' (with why no cgroup)."""

    kind: str
    root: Path | None = None
    reason: str = ""

    @property
    def enforced(self) -> bool:
        return self.kind.startswith("cgroup")

    def describe(self) -> str:
        if self.enforced:
            return f"cpuset cgroup ({self.kind}, {self.root})"
        return f"taskset only ({self.reason}): threads that set their own affinity may escape"


def _find_cpuset() -> Confiner:
    """The cpuset controller's hierarchy: a v1 `cpuset` mount, else a v2 mount offering `cpuset`."""
    if os.geteuid() != 0:
        return Confiner("taskset", reason="not root: cannot create cgroups")
    mounts = _mounts()
    for point, fstype, options in mounts:
        if fstype == "cgroup" and "cpuset" in options and os.access(point, os.W_OK):
            return Confiner("cgroup-v1", Path(point))
    for point, fstype, _ in mounts:
        controllers = Path(point) / "cgroup.controllers"
        if fstype == "cgroup2" and controllers.exists() and "cpuset" in controllers.read_text().split():
            return Confiner("cgroup-v2", Path(point))
    return Confiner("taskset", reason="no cpuset cgroup controller is mounted")


def detect_confiner() -> Confiner:
    """A cpuset hierarchy in which a group can actually be made (a read-only mount in a container, or a v2
    parent that holds processes itself, cannot), else taskset with the reason."""
    confiner = _find_cpuset()
    if confiner.enforced:
        try:
            CoreGroup(confiner, "probe", sorted(os.sched_getaffinity(0))[:1]).close()
        except OSError as exc:
            return Confiner("taskset", reason=f"cannot create a cpuset group under {confiner.root}: {exc}")
    return confiner


class CoreGroup:
    """One group of cores; `command()` wraps a command line so that it runs inside, `pids()` lists who is in it.

    Use as a context manager: on exit every process still inside is killed (they are the bench's own children)
    and the cgroup is removed.
    """

    def __init__(self, confiner: Confiner, name: str, cpus: list[int]) -> None:
        self.confiner = confiner
        self.cpus = sorted(cpus)
        self.path: Path | None = None
        self.roots: list[int] = []  # taskset groups: the processes launched in it, whose descendants are the group
        self._enabled_cpuset_in: Path | None = None
        if confiner.enforced:
            assert confiner.root is not None
            self.path = confiner.root / f"jepa-bench-{os.getpid()}-{name}"
            try:
                self._create()
            except OSError:
                self.close()  # a half-made group (made, but its CPUs refused) is removed
                raise

    def _create(self) -> None:
        assert self.path is not None
        assert self.confiner.root is not None
        if self.confiner.kind == "cgroup-v2":
            control = self.confiner.root / "cgroup.subtree_control"
            if "cpuset" not in control.read_text().split():
                control.write_text("+cpuset")
                self._enabled_cpuset_in = control
        self.path.mkdir()
        (self.path / "cpuset.cpus").write_text(cpu_list(self.cpus))
        mems = self.confiner.root / ("cpuset.mems" if self.confiner.kind == "cgroup-v1" else "cpuset.mems.effective")
        (self.path / "cpuset.mems").write_text(mems.read_text().strip() or "0")

    def command(self, argv: list[str]) -> list[str]:
        if self.path is not None:
            return ["sh", "-c", ENTER_AND_EXEC, str(self.path / "cgroup.procs"), *argv]
        if shutil.which("taskset"):
            return ["taskset", "-c", cpu_list(self.cpus), *argv]
        return argv

    def pids(self) -> list[int]:
        if self.path is not None:
            with contextlib.suppress(OSError):
                return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            return []
        return sorted({pid for root in self.roots if Path(f"/proc/{root}").exists() for pid in server_processes(root)})

    def started(self, pid: int) -> None:
        """Record a process launched through `command()` (how a taskset group knows its members)."""
        self.roots.append(pid)

    def __enter__(self) -> CoreGroup:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        if self.path is None or not self.path.exists():
            return
        for _ in range(50):  # processes just killed leave the group when they are reaped
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            self.path.rmdir()
        if self._enabled_cpuset_in is not None:
            with contextlib.suppress(OSError):  # busy if another group uses it: leave it then
                self._enabled_cpuset_in.write_text("-cpuset")


def stat_fields(path: Path) -> list[str]:
    """/proc/.../stat from field 3 (state) on: the command name, in parentheses, may hold spaces."""
    text = path.read_text()
    return text[text.rindex(")") + 2:].split()


# Indexes into stat_fields (the man page's field number minus 3).
UTIME, STIME, PROCESSOR = 11, 12, 36


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat_fields(Path(f"/proc/{pid}/stat"))
            ticks += int(fields[UTIME]) + int(fields[STIME])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds_by_role(pids: list[int]) -> dict[str, float]:
    """User + system CPU time of these processes split by role: each process's main thread apart from its other
    threads, processes named alike (`jepa-front-0`, `jepa-front-1`) added up. For jepa-serve: the fronts' event
    loops (HTTP, validation, the core link), the fronts' other threads (decoding), the core's event loop
    (batching, the fronts' messages) and the core's other threads (engine workers, ONNX Runtime's pool)."""
    seconds: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            name = Path(f"/proc/{pid}/comm").read_text().strip().rstrip("0123456789").rstrip("-")
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = stat_fields(task / "stat")
                    role = f"{name} {'loop' if task.name == str(pid) else 'threads'}"
                    seconds[role] = seconds.get(role, 0.0) + (int(fields[UTIME]) + int(fields[STIME])) / tick
    return seconds


def busy_seconds(cpus: list[int]) -> float:
    """Time these CPUs spent not idle since boot (all processes), from /proc/stat, in seconds."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            numbers = [int(v) for v in values]
            total += sum(numbers[:8]) - numbers[3] - numbers[4]  # minus idle and iowait; guest is in user already
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Placement:
    """Where a group's threads were seen running while it was sampled, and the affinity they had."""

    cpus: list[int]
    seen: set[int] = field(default_factory=set)
    allowed: set[int] = field(default_factory=set)
    threads: set[int] = field(default_factory=set)
    samples: int = 0

    @property
    def confined(self) -> bool:
        return bool(self.threads) and self.seen <= set(self.cpus) and self.allowed <= set(self.cpus)

    def as_dict(self) -> dict:
        return {"cpus": self.cpus, "seen_on": sorted(self.seen), "affinity_union": sorted(self.allowed),
                "threads": len(self.threads), "samples": self.samples, "confined": self.confined}


class PlacementProbe:
    """Samples, every `interval_s` on a thread of its own, the CPU each thread of the group last ran on
    (field 39 of /proc/<pid>/task/<tid>/stat) and its affinity: the evidence the confinement held."""

    def __init__(self, group: CoreGroup, interval_s: float = 0.2) -> None:
        self.group = group
        self.interval_s = interval_s
        self.placement = Placement(group.cpus)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="placement-probe", daemon=True)

    def __enter__(self) -> PlacementProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for pid in self.group.pids():
            tasks: list[Path] = []
            with contextlib.suppress(OSError):  # the process may have just exited
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            for task in tasks:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    tid = int(task.name)
                    self.placement.seen.add(int(stat_fields(task / "stat")[PROCESSOR]))
                    self.placement.allowed.update(os.sched_getaffinity(tid))
                    self.placement.threads.add(tid)
        self.placement.samples += 1
