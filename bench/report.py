"""Results, and the issue targets they are held against.

Every number is a median over rounds unless it says otherwise. A missed target is reported
as BELOW and never fails the run: timings on a shared 2-core machine inform, they do not gate.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.wrk import WrkResult

APP = "taskmanager"
BASELINE = "baseline"
TIMES = "\u00d7"  # the multiplication sign of "0.55x"


NAN = float("nan")


def median(values: Iterable[float]) -> float:
    """Median of what was measured (NaN marks a run that measured nothing)."""
    data = [value for value in values if value == value]
    return statistics.median(data) if data else NAN


@dataclass(frozen=True, slots=True)
class Measured:
    """One wrk run, reduced to what the report shows."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers and socket errors

    @classmethod
    def of(cls, result: WrkResult) -> Measured:
        answered = result.requests > 0  # else wrk's percentiles are zeros, not latencies
        return cls(
            rps=result.rps,
            p50_ms=result.p50_ms if answered else NAN,
            p99_ms=result.p99_ms if answered else NAN,
            requests=result.requests,
            errors=result.error_responses + result.socket_errors,
        )


@dataclass(slots=True)
class Comparison:
    """A route on one backend: the app and the baseline, one measurement each per round."""

    backend: str
    scenario: str
    title: str
    connections: int
    app: list[Measured] = field(default_factory=list)
    baseline: list[Measured] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [a.rps / b.rps for a, b in zip(self.app, self.baseline, strict=False) if b.rps]

    @property
    def ratio(self) -> float:
        """Median of the per-round throughput ratios: drift between rounds cancels out."""
        return median(self.ratios())

    @property
    def ratio_of_medians(self) -> float:
        base = self.median(BASELINE, "rps")
        return self.median(APP, "rps") / base if base else NAN

    def median(self, server: str, metric: str) -> float:
        runs = self.app if server == APP else self.baseline
        return median(getattr(run, metric) for run in runs)

    def errors(self) -> int:
        return sum(run.errors for run in [*self.app, *self.baseline])


@dataclass(slots=True)
class LargeList:
    """A list page (total included) with one filter at two table sizes."""

    backend: str
    filter: str
    query: str
    connections: int
    runs: dict[str, dict[str, list[Measured]]] = field(default_factory=dict)  # server -> size

    def add(self, server: str, size: str, measured: Measured) -> None:
        self.runs.setdefault(server, {}).setdefault(size, []).append(measured)

    def p50(self, server: str, size: str) -> float:
        return median(run.p50_ms for run in self.runs.get(server, {}).get(size, []))

    def growth(self, server: str) -> float:
        """Cost of a page at 1 M rows over its cost at 10 k rows (median latency)."""
        small = self.p50(server, "10k")
        return self.p50(server, "1m") / small if small else NAN

    def errors(self) -> int:
        return sum(run.errors for sizes in self.runs.values() for r in sizes.values() for run in r)


@dataclass(frozen=True, slots=True)
class Overload:
    backend: str
    scenario: str
    server: str
    connections: int
    seconds: float
    goodput: float  # 2xx answers per second
    ok_p50_ms: float | None
    ok_p99_ms: float | None
    shed: int  # 503 answers
    shed_p99_ms: float | None
    other_errors: int  # non-2xx answers other than 503
    socket_errors: int  # connect, read, write errors and timeouts


@dataclass(frozen=True, slots=True)
class Memory:
    backend: str
    server: str
    requests: int
    seconds: float
    rps: float
    rss_start_mib: float
    rss_end_mib: float
    peak_mib: float
    errors: int


@dataclass(frozen=True, slots=True)
class LoginMemory:
    backend: str
    server: str
    concurrency: int
    logins: int
    rss_before_mib: float
    peak_mib: float
    errors: int


@dataclass(frozen=True, slots=True)
class ColdStart:
    backend: str
    server: str
    runs: list[float]

    @property
    def median(self) -> float:
        return median(self.runs)


@dataclass(frozen=True, slots=True)
class Target:
    """One bar from an issue. A value of None or NaN means the run could not measure it."""

    issue: int
    what: str
    backend: str
    value: float | None
    bar: float
    unit: str
    comparison: str  # ">=", "<=" or "<"

    @property
    def verdict(self) -> str:
        if self.value is None or self.value != self.value:
            return "n/a"
        ok = {
            ">=": self.value >= self.bar,
            "<=": self.value <= self.bar,
            "<": self.value < self.bar,
        }[self.comparison]
        return "meets" if ok else "BELOW"


def at_least(issue: int, what: str, backend: str, value: float | None, bar: float) -> Target:
    return Target(issue, what, backend, value, bar, TIMES, ">=")


def at_most(
    issue: int, what: str, backend: str, value: float | None, bar: float, unit: str
) -> Target:
    return Target(issue, what, backend, value, bar, unit, "<=")


def under(
    issue: int, what: str, backend: str, value: float | None, bar: float, unit: str
) -> Target:
    return Target(issue, what, backend, value, bar, unit, "<")


@dataclass(slots=True)
class Report:
    machine: dict[str, object]
    settings: dict[str, object]
    started: str = ""
    finished: str = ""
    load_average: dict[str, list[float]] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    large: list[LargeList] = field(default_factory=list)
    overload: list[Overload] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)
    login_memory: list[LoginMemory] = field(default_factory=list)
    cold_start: list[ColdStart] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def targets(self) -> list[Target]:
        """Issue 13's "What it must show" and issue 8 item 3, for what this run measured."""
        targets: list[Target] = []
        for c in self.comparisons:
            p99 = c.median(APP, "p99_ms")
            if c.scenario == "get":
                targets.append(at_least(13, f"{c.title} vs bare", c.backend, c.ratio, 0.55))
                targets.append(
                    at_most(13, f"{c.title} p99, -c{c.connections}", c.backend, p99, 50, " ms")
                )
            elif c.scenario in ("create", "update", "list", "cursor"):
                targets.append(at_least(13, f"{c.title} vs bare", c.backend, c.ratio, 0.35))
                targets.append(
                    at_most(13, f"{c.title} p99, -c{c.connections}", c.backend, p99, 100, " ms")
                )
        for large in self.large:
            what = f"list page 1M vs 10k rows, filter {large.filter}"
            targets.append(at_most(13, what, large.backend, large.growth(APP), 1.2, TIMES))
        for m in self.memory:
            if m.server == APP:
                what = f"RSS after {m.requests:,} requests"
                targets.append(under(13, what, m.backend, m.rss_end_mib, 120, " MiB"))
        for lm in self.login_memory:
            if lm.server == APP:
                what = f"peak RSS, {lm.concurrency} concurrent logins"
                targets.append(under(13, what, lm.backend, lm.peak_mib, 300, " MiB"))
        for cs in self.cold_start:
            if cs.server == APP:
                targets.append(
                    under(13, "cold start to first 200", cs.backend, cs.median, 1.5, " s")
                )
        return targets + self._overload_targets()

    def _overload_targets(self) -> list[Target]:
        targets: list[Target] = []
        groups: dict[tuple[str, str], dict[int, Overload]] = {}
        for o in self.overload:
            if o.server == APP:
                groups.setdefault((o.backend, o.scenario), {})[o.connections] = o
        for (backend, scenario), by_conns in groups.items():
            low, high = min(by_conns), max(by_conns)
            if low != high:
                base = by_conns[low].goodput
                ratio = by_conns[high].goodput / base if base else None
                what = f"{scenario} goodput at {high} vs {low} conns"
                targets.append(at_least(8, what, backend, ratio, 0.8))
            levels = "/".join(str(n) for n in sorted(by_conns))
            worst = [o.ok_p99_ms for o in by_conns.values() if o.ok_p99_ms is not None]
            what = f"{scenario} 2xx p99, worst of {levels} conns"
            targets.append(under(8, what, backend, max(worst) if worst else None, 250, " ms"))
            shed = [o.shed_p99_ms for o in by_conns.values() if o.shed_p99_ms is not None]
            what = f"{scenario} 503 p99 (fast shedding; n/a: no 503)"
            targets.append(under(8, what, backend, max(shed) if shed else None, 50, " ms"))
        return targets

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["derived"] = {
            "comparisons": [
                {
                    "backend": c.backend,
                    "scenario": c.scenario,
                    "ratio": c.ratio,
                    "ratios": c.ratios(),
                    "ratio_of_medians": c.ratio_of_medians,
                    "app": {m: c.median(APP, m) for m in ("rps", "p50_ms", "p99_ms")},
                    "baseline": {m: c.median(BASELINE, m) for m in ("rps", "p50_ms", "p99_ms")},
                }
                for c in self.comparisons
            ],
            "large": [
                {
                    "backend": large.backend,
                    "filter": large.filter,
                    "growth": large.growth(APP),
                    "baseline_growth": large.growth(BASELINE),
                }
                for large in self.large
            ],
            "cold_start": [
                {"backend": c.backend, "server": c.server, "median_s": c.median}
                for c in self.cold_start
            ],
        }
        data["targets"] = [{**asdict(t), "verdict": t.verdict} for t in self.targets()]
        return data
