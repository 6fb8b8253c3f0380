"""Process-wide state per API connection, created on first use: settings, credentials, the APIM client.

Nothing here runs at import time, so importing `function_app` never touches the
network or fails on a bad setting; the first invocation for a connection builds
its runtime once and every later one (on the worker's single event loop) reuses it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from . import telemetry
from .apim import ApimClient, Timeouts
from .credentials import IDENTITY_CONNECTION_TIMEOUT, IDENTITY_READ_TIMEOUT, create_credential
from .errors import ConfigurationError
from .redaction import known_secrets
from .settings import Settings, check_connection_name, load_settings
from .tokens import FETCH_TIMEOUT_SECONDS, TokenSource

__all__ = ["Runtime", "RuntimeTimeouts", "build_runtime", "get_runtime", "reset_runtime", "settings_or_error",
           "use_timeouts"]


@dataclass(frozen=True)
class RuntimeTimeouts:
    """Every time limit of a runtime: the APIM client's, and each attempt at the identity endpoint."""

    apim: Timeouts = field(default_factory=Timeouts)
    identity_connect: float = IDENTITY_CONNECTION_TIMEOUT
    identity_read: float = IDENTITY_READ_TIMEOUT
    token_fetch: float = FETCH_TIMEOUT_SECONDS  # one whole fetch, retries and waits included


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass
class Runtime:
    settings: Settings
    client: ApimClient
    token_sources: dict[str | None, TokenSource]
    # The loop it runs on: its session, connections and token fetch in flight belong to that loop.
    loop: asyncio.AbstractEventLoop | None = field(default_factory=_running_loop)

    def token_source(self, method: str = "GET") -> TokenSource:
        return self.client.source_for(method)

    async def close(self) -> None:
        await self.client.close()
        for source in self.token_sources.values():
            await source.credential.close()


def build_runtime(settings: Settings, timeouts: RuntimeTimeouts | None = None) -> Runtime:
    """One connection's credentials (one per identity), token sources and APIM client."""
    timeouts = timeouts or RuntimeTimeouts()
    sources = {
        client_id: TokenSource(
            create_credential(client_id, settings.tenant_id, connection_timeout=timeouts.identity_connect,
                              read_timeout=timeouts.identity_read),
            settings.scope, client_id=client_id, connection=settings.connection, fetch_timeout=timeouts.token_fetch,
            identity_setting=settings.identity_setting_for("GET" if client_id == settings.client_id_for("GET")
                                                           else "POST"))
        for client_id in settings.client_ids
    }
    return Runtime(settings=settings, client=ApimClient(settings, sources, timeouts=timeouts.apim),
                   token_sources=sources)


_runtimes: dict[str | None, Runtime] = {}
_settings: dict[str | None, Settings | ConfigurationError] = {}
_timeouts = RuntimeTimeouts()


def use_timeouts(timeouts: RuntimeTimeouts) -> None:
    """The timeouts of the runtimes built from now on (tests shorten them; the defaults suit Azure)."""
    global _timeouts
    _timeouts = timeouts


def settings_or_error(connection: str | None = None) -> Settings | ConfigurationError:
    """A connection's settings, validated once per process; a bad setting is remembered and reported every call."""
    key = check_connection_name(connection)
    if key not in _settings:
        try:
            _settings[key] = load_settings(connection=key)
        except ConfigurationError as error:
            _settings[key] = error
    return _settings[key]


def get_runtime(connection: str | None = None) -> Runtime:
    """A connection's runtime; raises ConfigurationError naming each bad setting, or a loop other than its own.

    Call from the event loop (the one every call of the process runs on).
    """
    key = check_connection_name(connection)
    runtime = _runtimes.get(key)
    if runtime is not None:
        loop = _running_loop()
        if loop is not None and loop is not runtime.loop:
            raise _on_another_loop(runtime)
        return runtime
    settings = settings_or_error(key)
    if isinstance(settings, ConfigurationError):
        raise settings.with_traceback(None)  # the same object every time: don't let tracebacks pile up
    telemetry.configure()  # first: the pipelines take the tracer it settles on
    runtime = _runtimes[key] = build_runtime(settings, _timeouts)
    return runtime


def _on_another_loop(runtime: Runtime) -> ConfigurationError:
    # One session and one token cache per process is the point: a runtime per loop would fetch a token
    # and open a connection per asyncio.run(), and could not close them once that loop is closed.
    first = "is closed" if runtime.loop is None or runtime.loop.is_closed() else "is another one, still running"
    return ConfigurationError([
        f"API calls of this connection run on the event loop of its first call, and that loop {first} "
        "(asyncio.run() in a sync function, or a thread of its own?). Call api() from async functions "
        "(async def): the Functions worker runs them all on its one event loop."])


async def reset_runtime() -> None:
    """Close and forget every runtime and remembered settings (tests, demo, benchmarks)."""
    runtimes = list(_runtimes.values())
    _runtimes.clear()
    _settings.clear()
    known_secrets.clear()
    for runtime in runtimes:
        await runtime.close()
