"""The server's Prometheus metrics (prometheus-client) and their exposition.

Every process of `datalab serve --workers N` records into files under PROMETHEUS_MULTIPROC_DIR (see
`metrics_dir`); a scrape answered by any of them reads all the files, so it sees every process.
Labels never hold what a client chose freely: routes are templates (`/v1/files/{uid}`), methods
outside the standard ones are `other`, stage names outside the pipeline's are `unknown`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

from datalab.domain_errors import DomainError
from datalab.errors import ApiError
from datalab.operations.metrics_dir import metrics_dir

STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_DURATION = Histogram(
    "datalab_http_request_duration_seconds",
    "Time from a request's arrival to the last byte of its response, by route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
HTTP_RECEIVED = Counter(
    "datalab_http_received_bytes", "Request body bytes received, by route template.", ["method", "route"]
)
HTTP_SENT = Counter(
    "datalab_http_sent_bytes", "Response body bytes sent, by route template.", ["method", "route"]
)
HTTP_IN_PROGRESS = Gauge(
    "datalab_http_requests_in_progress",
    "Requests being answered now, in all server processes.",
    multiprocess_mode="livesum",
)
REFUSED_EARLY = Counter(
    "datalab_http_refused_early",
    "Requests the HTTP server refused with 503 before the app ran (too many connections, or the request "
    "gate full), by reason.",
    ["reason"],
)
LOGINS = Counter(
    "datalab_logins",
    "Sign-in attempts by channel (api: POST /v1/login, datacenter: the sign-in page) and result "
    "(success, or the error code of the refusal).",
    ["channel", "result"],
)
STAGE_DURATION = Histogram(
    "datalab_pipeline_stage_duration_seconds",
    "Time a pipeline stage ran, by stage and outcome (success, failure).",
    ["stage", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
STAGE_FAILURES = Counter(
    "datalab_pipeline_stage_failures",
    "Pipeline stage runs that raised an error (each is retried until its last attempt).",
    ["stage"],
)

WEBHOOK_ATTEMPTS = Counter(
    "datalab_webhook_attempts",
    "Webhook delivery attempts by event type and outcome (delivered; retrying: no 2xx, tried again "
    "later; failed: no 2xx and no retry left).",
    ["event", "outcome"],
)
WEBHOOK_DURATION = Histogram(
    "datalab_webhook_attempt_duration_seconds",
    "Time a webhook receiver took to answer (or the attempt to fail), by outcome.",
    ["outcome"],
)
_WEBHOOK_OUTCOMES = {"delivered": "delivered", "pending": "retrying", "failed": "failed"}


def method_label(method: str) -> str:
    """The method as a label: one of the standard methods, else `other`."""
    return method if method in STANDARD_METHODS else "other"


def observe_request(
    *, method: str, route: str, status: str, seconds: float, received: int, sent: int
) -> None:
    """Record one answered request."""
    label = method_label(method)
    HTTP_DURATION.labels(label, route, status).observe(seconds)
    if received:
        HTTP_RECEIVED.labels(label, route).inc(received)
    if sent:
        HTTP_SENT.labels(label, route).inc(sent)


@contextmanager
def login_attempt(channel: Literal["api", "datacenter"]) -> Iterator[None]:
    """Count the sign-in attempt the block makes: `success`, or the code of the error refusing it."""
    try:
        yield
    except (ApiError, DomainError) as error:
        LOGINS.labels(channel, error.code).inc()
        raise
    LOGINS.labels(channel, "success").inc()


def observe_stage(*, stage: str, failed: bool, seconds: float) -> None:
    """Record one run of a pipeline stage."""
    STAGE_DURATION.labels(stage, "failure" if failed else "success").observe(seconds)
    if failed:
        STAGE_FAILURES.labels(stage).inc()


def observe_webhook_attempt(*, event: str, state: str, seconds: float) -> None:
    """Record one attempt at a webhook delivery, by the state it left the delivery in."""
    outcome = _WEBHOOK_OUTCOMES.get(state, "superseded")
    WEBHOOK_ATTEMPTS.labels(event, outcome).inc()
    WEBHOOK_DURATION.labels(outcome).observe(seconds)


def process_exited() -> None:
    """Drop this process's live gauges from the shared directory (its counters and histograms stay)."""
    directory = metrics_dir()
    if directory is not None:
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


class _SizedFiles(multiprocess.MultiProcessCollector):
    """prometheus-client's collector of the processes' files, without a file its process is still creating.

    A process creates its file and sizes it a moment later: read in between, the empty file failed the
    whole scrape, every metric with it (prometheus/client_python#1199). It holds nothing yet.
    """

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path=path)  # type: ignore[no-untyped-call]
        self._directory = path

    def collect(self) -> Iterable[Metric]:
        files = [path for path in glob.glob(os.path.join(self._directory, "*.db")) if _has_bytes(path)]
        metrics: Iterable[Metric] = self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return metrics


def _has_bytes(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except FileNotFoundError:
        # a live gauge's file, deleted as its process ended
        return False


class _ThisProcess(Collector):
    """The in-memory metrics of this process, when it keeps no shared directory."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(accept: str | None, extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The metrics of every server process and of `extra` collectors, in the format `accept` asks for."""
    registry = CollectorRegistry()
    directory = metrics_dir()
    if directory is not None:
        _SizedFiles(registry, path=str(directory))
    else:
        registry.register(_ThisProcess())
    for collector in extra:
        registry.register(collector)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
