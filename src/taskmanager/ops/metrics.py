"""Prometheus metrics: one registry per app, multiprocess-aware.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``taskmanager serve --workers N`` sets it), every
worker writes its samples to files there and ``/metrics`` aggregates them, so a scrape
sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "<unmatched>"

# Seconds; API requests are mostly well under 100 ms, exports and uploads take longer.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _pool_stats(app_state: Any) -> Iterator[tuple[str, str, float, float, float]]:
    """(engine, kind, size, checked_out, overflow) for each pool of the app's database."""
    database = getattr(app_state, "database", None)
    if database is None:
        return
    engines = {"write": database.write_engine}
    if database.read_engine is not database.write_engine:
        engines["read"] = database.read_engine
    for name, engine in engines.items():
        pool = engine.pool
        size = getattr(pool, "size", None)
        checked_out = getattr(pool, "checkedout", None)
        overflow = getattr(pool, "overflow", None)
        yield (
            name,
            type(pool).__name__,
            float(size()) if callable(size) else 1.0,
            float(checked_out()) if callable(checked_out) else 0.0,
            max(0.0, float(overflow())) if callable(overflow) else 0.0,
        )


class _PoolCollector(Collector):
    """Reads the pools at scrape time (single-process mode)."""

    def __init__(self, app_state: Any) -> None:
        self._state = app_state

    def collect(self) -> Iterable[Metric]:
        size = GaugeMetricFamily(
            "taskmanager_db_pool_size", "Configured connections in the pool", labels=["engine"]
        )
        used = GaugeMetricFamily(
            "taskmanager_db_pool_checked_out",
            "Connections currently checked out of the pool",
            labels=["engine"],
        )
        overflow = GaugeMetricFamily(
            "taskmanager_db_pool_overflow", "Connections beyond the pool size", labels=["engine"]
        )
        for engine, _kind, pool_size, checked_out, extra in _pool_stats(self._state):
            size.add_metric([engine], pool_size)
            used.add_metric([engine], checked_out)
            overflow.add_metric([engine], extra)
        yield from (size, used, overflow)


class Metrics:
    """The HTTP and pool metrics of one app."""

    def __init__(self, app_state: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        self.requests = Counter(
            "taskmanager_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "taskmanager_http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "taskmanager_http_requests_in_flight",
            "HTTP requests being served",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # Read from the database at each scrape (``ops.router``): the same everywhere, so
        # the scrape of any process shows the whole deployment's outbox and deliveries.
        self.events_pending = Gauge(
            "taskmanager_events_pending",
            "Events committed but not yet published (numbered) by a dispatcher",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.events_published = Gauge(
            "taskmanager_events_last_published_seq",
            "The sequence number of the newest published event (grows by one per event)",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.webhook_deliveries = Gauge(
            "taskmanager_webhook_deliveries",
            "Webhook delivery attempts in the delivery log, by status",
            ["status"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        # labels() takes a lock and builds a tuple; one lookup per label set is enough.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        if self.multiprocess:
            # Each worker publishes its own pools; the scrape sums the live workers.
            self._pool_gauges = {
                name: Gauge(
                    f"taskmanager_db_pool_{name}",
                    help_,
                    ["engine"],
                    registry=self.registry,
                    multiprocess_mode="livesum",
                )
                for name, help_ in (
                    ("size", "Configured connections in the pool"),
                    ("checked_out", "Connections currently checked out of the pool"),
                    ("overflow", "Connections beyond the pool size"),
                )
            }
        else:
            self.registry.register(_PoolCollector(app_state))
        self._state = app_state

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            labels = (route, method, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def sample_pools(self) -> None:
        """Publish this worker's pool use (multiprocess mode; called periodically)."""
        if not self.multiprocess:
            return
        for engine, _kind, size, checked_out, overflow in _pool_stats(self._state):
            self._pool_gauges["size"].labels(engine).set(size)
            self._pool_gauges["checked_out"].labels(engine).set(checked_out)
            self._pool_gauges["overflow"].labels(engine).set(overflow)

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def mark_process_dead(self) -> None:
        """Drop this worker's live gauges from the shared directory (at shutdown)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
