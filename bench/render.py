"""The report three ways: a table on stdout, JSON, and Markdown for the README."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import summary
from bench.report import APP, BASELINE, TIMES, Report, Target


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    bold: int | None = None  # the column that carries the headline number


def columns(names: str) -> tuple[str, ...]:
    return tuple(names.split(", "))


def num(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def ms(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def mib(value: float) -> str:
    return f"{value:,.0f} MiB"


def rps(value: float) -> str:
    return "—" if value != value else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def errors(count: int) -> str:
    return "0" if count == 0 else f"{count:,} (!)"


def _routes(r: Report) -> Table:
    rounds = len(r.comparisons[0].app) if r.comparisons else 0
    return Table(
        f"Routes vs the bare baseline (median of {rounds} alternating rounds; "
        "ratio = median of the per-round req/s ratios)",
        columns(
            "backend, route, conns, req/s, p50, p99, bare req/s, bare p50, bare p99, ratio, errors"
        ),
        [
            (
                c.backend,
                c.title,
                str(c.connections),
                rps(c.median(APP, "rps")),
                ms(c.median(APP, "p50_ms")),
                ms(c.median(APP, "p99_ms")),
                rps(c.median(BASELINE, "rps")),
                ms(c.median(BASELINE, "p50_ms")),
                ms(c.median(BASELINE, "p99_ms")),
                num(c.ratio),
                errors(c.errors()),
            )
            for c in r.comparisons
        ],
        bold=9,
    )


def _large(r: Report) -> Table:
    conns = r.large[0].connections if r.large else 0
    return Table(
        f"List page with its total at 10k and 1M rows (p50 latency at -c{conns})",
        columns("backend, filter, 10k, 1M, 1M/10k, bare 10k, bare 1M, bare 1M/10k, errors"),
        [
            (
                g.backend,
                g.query or "none",
                ms(g.p50(APP, "10k")),
                ms(g.p50(APP, "1m")),
                num(g.growth(APP)) + TIMES,
                ms(g.p50(BASELINE, "10k")),
                ms(g.p50(BASELINE, "1m")),
                num(g.growth(BASELINE)) + TIMES,
                errors(g.errors()),
            )
            for g in r.large
        ],
        bold=4,
    )


def _overload(r: Report) -> Table:
    return Table(
        "Overload (goodput = 2xx answers/s; p50/p99 of the 2xx answers and p99 of the 503s)",
        columns(
            "backend, route, conns, server, goodput, 2xx p50, 2xx p99, 503s, 503 p99, "
            "other non-2xx, socket errors"
        ),
        [
            (
                o.backend,
                o.scenario,
                f"{o.connections:,}",
                o.server,
                rps(o.goodput),
                ms(o.ok_p50_ms),
                ms(o.ok_p99_ms),
                f"{o.shed:,}",
                ms(o.shed_p99_ms),
                f"{o.other_errors:,}",
                f"{o.socket_errors:,}",
            )
            for o in r.overload
        ],
        bold=4,
    )


def _memory(r: Report) -> Table:
    return Table(
        "Memory of a fresh server after a mixed load (85 % GET by id, 5 % each list, "
        "create, update)",
        columns("backend, server, requests, req/s, RSS at start, RSS after, peak (HWM), errors"),
        [
            (
                m.backend,
                m.server,
                f"{m.requests:,}",
                rps(m.rps),
                mib(m.rss_start_mib),
                mib(m.rss_end_mib),
                mib(m.peak_mib),
                errors(m.errors),
            )
            for m in r.memory
        ],
        bold=5,
    )


def _logins(r: Report) -> Table:
    return Table(
        "Memory during concurrent logins (logins = answered within the run)",
        ("backend", "server", "concurrent", "logins", "RSS before", "peak (HWM)", "errors"),
        [
            (
                m.backend,
                m.server,
                str(m.concurrency),
                f"{m.logins:,}",
                mib(m.rss_before_mib),
                mib(m.peak_mib),
                errors(m.errors),
            )
            for m in r.login_memory
        ],
        bold=5,
    )


def _cold(r: Report) -> Table:
    return Table(
        "Cold start: exec to the first 200 from /health",
        ("backend", "server", "median", "min", "max", "runs"),
        [
            (
                c.backend,
                c.server,
                f"{c.median:.2f} s",
                f"{min(c.runs):.2f} s",
                f"{max(c.runs):.2f} s",
                str(len(c.runs)),
            )
            for c in r.cold_start
        ],
        bold=2,
    )


def _bar(t: Target) -> str:
    return f"{t.comparison} {num(t.bar)}{t.unit}"


def _targets(r: Report) -> Table:
    return Table(
        "Targets (issue 13 'What it must show', issue 8 item 3)",
        ("issue", "target", "backend", "measured", "bar", "verdict"),
        [
            (
                f"#{t.issue}",
                t.what,
                t.backend,
                "—" if t.value is None else num(t.value) + t.unit,
                _bar(t),
                t.verdict,
            )
            for t in r.targets()
        ],
        bold=5,
    )


SECTIONS: tuple[Callable[[Report], Table], ...] = (
    _routes,
    _large,
    _overload,
    _memory,
    _logins,
    _cold,
    _targets,
)


def tables(report: Report) -> list[Table]:
    return [table for table in (section(report) for section in SECTIONS) if table.rows]


def _load(report: Report) -> str:
    parts = [
        f"{when} {' '.join(f'{v:.1f}' for v in values)}"
        for when, values in report.load_average.items()
    ]
    return f"load average (1/5/15 min): {'; '.join(parts)}" if parts else ""


def text(report: Report) -> str:
    lines = [f"Machine: {summary(report.machine)}", _load(report), ""]
    for table in tables(report):
        widths = [max(map(len, column)) for column in zip(table.header, *table.rows, strict=True)]
        lines.append(table.title)
        for row in (table.header, tuple("-" * w for w in widths), *table.rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        lines.append("")
    lines.extend(f"problem: {problem}" for problem in report.problems)
    return "\n".join(lines)


def markdown(report: Report) -> str:
    lines = [f"Measured on {summary(report.machine)}; {_load(report)}.", ""]
    for table in tables(report):
        lines += [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |"]
        lines.append("|" + "|".join("---" for _ in table.header) + "|")
        for row in table.rows:
            cells = [
                f"**{cell}**" if i == table.bold and cell != "—" else cell.replace("|", "\\|")
                for i, cell in enumerate(row)
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if report.problems:
        lines.append("Problems during the run:")
        lines.extend(f"- {problem}" for problem in report.problems)
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """NaN (nothing measured) as JSON null, which strict JSON readers accept."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write(report: Report, directory: Path, stamp: str, extra_json: Path | None) -> list[Path]:
    """``<stamp>.json``, ``latest.json`` and ``latest.md`` in ``directory`` (and ``extra_json``)."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(_finite(report.as_json()), indent=2, default=str, allow_nan=False)
    outputs = [
        (directory / f"{stamp}.json", payload),
        (directory / "latest.json", payload),
        (directory / "latest.md", markdown(report)),
    ]
    if extra_json is not None:
        outputs.append((extra_json, payload))
    for path, content in outputs:
        path.write_text(content + "\n")
    return [path for path, _ in outputs]
