"""Token and call telemetry, exported to Application Insights.

Names (documented in the README, used in KQL):

- span `apim.token.acquire`: one per request to the identity endpoint, with
  `token.client_id`, `token.audience`, `token.source` (`endpoint`), `token.outcome`,
  `token.expires_on` and, on failure, `token.error_type`. Never the token.
- HTTP dependency spans for APIM calls: `shared.tracing.DependencySpanPolicy` in the
  azure-core pipeline (see `shared.apim`).
- metrics `apim.token.acquisitions` (counter, cache hits included), `apim.token.duration`
  (ms, requests to the identity endpoint), `apim.call.duration` (ms) and
  `apim.call.failures` (counter).

Telemetry is configured once per process, and only when nothing else has: by the
Functions worker (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY), by the host app's own
set-up, else by `configure()` when APPLICATIONINSIGHTS_CONNECTION_STRING is set. The
distro's default set-up (the worker's or ours) is tuned to cost less for the same items.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, Status, StatusCode

from .redaction import PACKAGE_LOGGER, redact_library_logs
from .tracing import remote_parent

if TYPE_CHECKING:
    import azure.functions as func
    from azure.core.credentials import AccessTokenInfo

    from .errors import AppError

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "functions-apim-managed-identity"
TOKEN_SPAN = "apim.token.acquire"  # noqa: S105 - a span name

tracer = trace.get_tracer(INSTRUMENTATION_NAME)
_meter = metrics.get_meter(INSTRUMENTATION_NAME)
token_duration = _meter.create_histogram(
    "apim.token.duration", unit="ms", description="Time to get an access token from the identity endpoint.")
call_duration = _meter.create_histogram(
    "apim.call.duration", unit="ms", description="Time of a call to APIM, retries included.")
call_failures = _meter.create_counter(
    "apim.call.failures", unit="{call}", description="Calls to APIM that ended in an error, by error type.")

_configure_lock = threading.Lock()
_mode: str | None = None
_problem: str | None = None

# The Functions worker's switch, read as the worker reads it (azure_functions_worker.utils.common.is_true_like).
_WORKER_SWITCH = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
_TRUE_LIKE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE_LIKE = frozenset({"0", "false", "f", "no", "n"})
# The distro turns Live Metrics on and has no setting for it (up to 1.8 at least): this is the app's.
LIVE_METRICS_SETTING = "TELEMETRY_LIVE_METRICS"


def configure(environ: Mapping[str, str] | None = None) -> str:
    """Set up export once per process, unless something else has; returns who exports.

    "worker": the Functions worker's switch is on, so the worker configured Azure Monitor (we tune it).
    "existing": OpenTelemetry was already set up in this process (the host app's own
    `configure_azure_monitor()`, say): our spans and metrics use it, we configure nothing.
    "app": we configured Azure Monitor. "off": no APPLICATIONINSIGHTS_CONNECTION_STRING.
    "failed": configuring failed; reported once (a log line, and `health`), calls go on without export.
    """
    global _mode
    with _configure_lock:
        if _mode is None:
            redact_library_logs()  # before an exporter and its credential exist
            _mode = _configure(os.environ if environ is None else environ)
            if _mode != "off":
                _report_refused_telemetry_once()
        return _mode


def problem() -> str | None:
    """Why telemetry is not exported, when configuring it failed."""
    return _problem


def worker_exports(env: Mapping[str, str]) -> bool:
    return (env.get(_WORKER_SWITCH) or "").lower().strip() in _TRUE_LIKE


def already_configured() -> bool:
    """True when a real (SDK) tracer provider is set: someone in this process set OpenTelemetry up."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _configure(env: Mapping[str, str]) -> str:
    global _problem
    if worker_exports(env):
        _tune_default_set_up()
        return "worker"
    if already_configured():
        return "existing"
    if not env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return "off"
    try:
        _configure_azure_monitor(env)
    except Exception as exc:
        # Never the exception's text: it may quote the connection string.
        _problem = (f"Telemetry is not exported: configure_azure_monitor() failed with {type(exc).__name__}. "
                    "Check APPLICATIONINSIGHTS_CONNECTION_STRING (InstrumentationKey=<GUID>;IngestionEndpoint="
                    "https://…) and APPLICATIONINSIGHTS_AUTHENTICATION_STRING.")
        logger.error(_problem)
        return "failed"
    return "app"


def live_metrics_enabled(env: Mapping[str, str]) -> bool:
    """LIVE_METRICS_SETTING: unset keeps the distro's default (on); false-like turns Live Metrics off."""
    value = (env.get(LIVE_METRICS_SETTING) or "").lower().strip()
    if value and value not in _TRUE_LIKE | _FALSE_LIKE:
        logger.warning("%s is %r, neither true nor false: Live Metrics stays on.", LIVE_METRICS_SETTING, value)
    return value not in _FALSE_LIKE


def _configure_azure_monitor(env: Mapping[str, str]) -> None:
    # Imported here: it is the heaviest import of the app and only needed when exporting.
    from azure.monitor.opentelemetry import configure_azure_monitor

    # Azure Monitor's exporter drops metric exemplars, but the SDK's default filter ("trace_based")
    # still builds one for every measurement made in a sampled trace: four per call, for nothing.
    # An explicit OTEL_METRICS_EXEMPLAR_FILTER app setting wins.
    os.environ.setdefault("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
    # The exporter reads APPLICATIONINSIGHTS_AUTHENTICATION_STRING itself (Entra-authenticated ingestion).
    configure_azure_monitor(logger_name=PACKAGE_LOGGER, enable_live_metrics=live_metrics_enabled(env),
                            instrumentation_options=absent_instrumentations())
    _tune_default_set_up()


# The exporter's `_OTELRESOURCE_` metric: one more item in every trace export (a billed customMetrics
# row every few seconds per instance). It is the only item with all the resource attributes; every
# other item carries the cloud role and instance. Off unless OTEL_RESOURCE_ATTRIBUTES is set (then it
# is where they show) or this setting is; Java's exporter sends it on AKS only.
RESOURCE_METRIC_SWITCH = "APPLICATIONINSIGHTS_OPENTELEMETRY_RESOURCE_METRIC_DISABLED"


def _tune_default_set_up() -> None:
    """The distro's default set-up, ours or the worker's, made cheaper: the same items, but for the resource metric.

    Not for a set-up of the host app's own ("existing"): that one is theirs to tune.
    """
    if RESOURCE_METRIC_SWITCH not in os.environ and not os.environ.get("OTEL_RESOURCE_ATTRIBUTES"):
        os.environ[RESOURCE_METRIC_SWITCH] = "true"  # the exporter reads it at every export
    _use_faster_sampler(trace.get_tracer_provider())


# The distro's instrumentations of libraries found by module name. Before instrumenting one, the distro
# reads package metadata to check the library's version: for a library that is not even installed, that
# is cold-start time for nothing (measured, benchmarks/). Those are switched off up front; an installed
# one is left to the distro, and OTEL_PYTHON_DISABLED_INSTRUMENTATIONS still switches off any of them.
INSTRUMENTED_MODULES = {"django": "django", "fastapi": "fastapi", "flask": "flask", "httpx": "httpx",
                        "psycopg2": "psycopg2", "requests": "requests", "urllib3": "urllib3"}


def absent_instrumentations() -> dict[str, dict[str, bool]]:
    """The distro's `instrumentation_options` that switch off instrumentations of libraries not installed."""
    return {name: {"enabled": False} for name, module in INSTRUMENTED_MODULES.items()
            if importlib.util.find_spec(module) is None}


def _use_faster_sampler(provider: Any) -> None:
    """The distro's default sampler, same decisions, for less per span (shared.sampling); before any span of ours.

    A tracer keeps the sampler it was made with, and the provider hands out the same tracer every
    time: when the worker configured export before `function_app` was imported, ours is that old.
    """
    from . import sampling  # with the distro's own modules: imported only once it is configured

    sampler = getattr(provider, "sampler", None)
    if sampler is not None:
        provider.sampler = sampling.faster(sampler)
        if getattr(tracer, "sampler", None) is sampler:
            setattr(tracer, "sampler", provider.sampler)  # noqa: B010 - not on the API's Tracer type


# --- ingestion refusing the app's telemetry ------------------------------------------------

# The exporter's module logger: it logs every 401/403 from ingestion there, and offers no hook.
_EXPORTER_LOGGER = "azure.monitor.opentelemetry.exporter.export._base"
_REFUSALS = {"'Unauthorized'": (401, "is not authenticated: set APPLICATIONINSIGHTS_AUTHENTICATION_STRING "
                                     "to 'ClientId=<identity client id>;Authorization=AAD'"),
             "'Forbidden'": (403, "comes from an identity without the Monitoring Metrics Publisher role on the "
                                  "Application Insights resource: assign it to the identity in "
                                  "APPLICATIONINSIGHTS_AUTHENTICATION_STRING")}


class _RefusedTelemetryReporter(logging.Handler):
    """Says once, in the app's own log, that ingestion refuses its telemetry. The exporter
    retries in the background and calls are unaffected, so without this the telemetry
    would go missing with only the exporter's repeated errors to show for it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._reported = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._reported:
            return
        message = record.getMessage()
        refusal = next((r for marker, r in _REFUSALS.items() if marker in message), None)
        if refusal is None:
            return
        self._reported = True
        status, cause = refusal
        logger.error("Application Insights refuses this app's telemetry (HTTP %d): it %s. Calls are not "
                     "affected; the exporter keeps retrying. Logged once.", status, cause)


def _report_refused_telemetry_once() -> None:
    exporter_logger = logging.getLogger(_EXPORTER_LOGGER)
    if not any(isinstance(h, _RefusedTelemetryReporter) for h in exporter_logger.handlers):
        exporter_logger.addHandler(_RefusedTelemetryReporter())


def flush(timeout_millis: int = 10_000) -> None:
    """Export what is buffered (spans, metrics, logs); used before a short-lived process exits."""
    for provider in _providers():
        force_flush = getattr(provider, "force_flush", None)
        if force_flush:
            force_flush(timeout_millis)


def shutdown() -> None:
    """Flush and stop the exporters (before a short-lived process, or the stand-in, goes away)."""
    flush()
    for provider in _providers():
        stop = getattr(provider, "shutdown", None)
        if stop:
            stop()
    _stop_live_metrics()


def _stop_live_metrics() -> None:
    # The distro's Live Metrics runs a meter provider of its own, out of reach of the global
    # ones: without this its pings go on after shutdown, to an endpoint that may be gone.
    # The distro has no public call for it, hence the private module, guarded.
    try:
        from azure.monitor.opentelemetry.exporter._quickpulse._live_metrics import shutdown_live_metrics
    except ImportError:
        return
    shutdown_live_metrics()


def _providers() -> tuple[Any, ...]:
    return trace.get_tracer_provider(), metrics.get_meter_provider(), get_logger_provider()


def invocation(context: func.Context | None) -> AbstractContextManager[None]:
    """Make the invocation's trace context current, so our spans join the host's trace."""
    if _mode is None:
        configure()
    trace_context = getattr(context, "trace_context", None)
    parent = getattr(trace_context, "trace_parent", None)
    if not parent:
        return nullcontext()
    return _Attached(remote_parent(parent, getattr(trace_context, "trace_state", None) or None))


class _Attached:
    """`context` current inside the block (a class, not @contextmanager: this runs on every call)."""

    __slots__ = ("context", "token")

    def __init__(self, context: otel_context.Context) -> None:
        self.context = context

    def __enter__(self) -> None:
        self.token = otel_context.attach(self.context)

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self.token)


def _token_attributes(client_id: str, scope: str, source: str) -> dict[str, str]:
    # The audience is the scope's resource: `api://contoso-orders` for `api://contoso-orders/.default`.
    return {"token.client_id": client_id, "token.audience": scope.removesuffix("/.default"), "token.source": source}


def _expiry_text(expires_on: int) -> str:
    try:
        return datetime.fromtimestamp(expires_on, UTC).isoformat()
    except (OverflowError, OSError, ValueError):  # an expiry out of datetime's range must not fail the call
        return str(expires_on)


def record_token(client_id: str, scope: str, *, source: str) -> None:
    """A token served from the cache: counted, no span (this runs on every call; see `_AcquisitionCounts`)."""
    _acquisitions.add(client_id, scope, source, "success")


class _AcquisitionCounts:
    """`apim.token.acquisitions`, counted in process and read by the SDK when it collects metrics.

    A cache hit happens on every call. A synchronous counter's add() looks up its attribute
    set and aggregates each time; this is one dict increment, and the observable counter
    reports the same totals once per export interval. Added to from the event loop's thread.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, str], int] = {}

    def add(self, client_id: str, scope: str, source: str, outcome: str) -> None:
        key = (client_id, scope, source, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1

    def observe(self, _options: CallbackOptions) -> list[Observation]:
        counts = self._counts.copy()  # one step under the GIL, while the event loop may be adding
        return [Observation(count, {**_token_attributes(client_id, scope, source), "token.outcome": outcome})
                for (client_id, scope, source, outcome), count in counts.items()]


_acquisitions = _AcquisitionCounts()
token_acquisitions = _meter.create_observable_counter(
    "apim.token.acquisitions", callbacks=[_acquisitions.observe], unit="{acquisition}",
    description="Access tokens handed out, by source and outcome.")


class TokenSpan:
    """The span of one request to the identity endpoint; records the metrics when it ends."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.outcome = "failure"

    def set_outcome(self, outcome: str, token: AccessTokenInfo) -> None:
        self.outcome = outcome
        self.span.set_attributes({"token.outcome": outcome, "token.expires_on": _expiry_text(token.expires_on)})

    def set_failure(self, error: AppError) -> None:
        self.outcome = "failure"
        # Not "error.type": the Azure Monitor exporter drops that standard name from a span's properties.
        self.span.set_attributes({"token.outcome": "failure", "token.error_type": type(error).__name__})
        self.span.set_status(Status(StatusCode.ERROR, error.message))


@contextmanager
def token_span(client_id: str, scope: str) -> Iterator[TokenSpan]:
    attributes = _token_attributes(client_id, scope, "endpoint")
    started = time.perf_counter()
    with tracer.start_as_current_span(TOKEN_SPAN, attributes=attributes, record_exception=False,
                                      set_status_on_exception=False) as span:
        recorder = TokenSpan(span)
        try:
            yield recorder
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            _acquisitions.add(client_id, scope, "endpoint", recorder.outcome)
            token_duration.record(elapsed_ms, {**attributes, "token.outcome": recorder.outcome})


def record_call(method: str, status: int | None, elapsed_ms: float, error: AppError | None = None) -> None:
    attributes: dict[str, Any] = {"http.request.method": method}
    if status is not None:
        attributes["http.response.status_code"] = status
    call_duration.record(elapsed_ms, attributes)
    if error is not None:
        call_failures.add(1, {**attributes, "error.type": type(error).__name__})
