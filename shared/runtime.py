"""Process-wide state, created on first use: settings, credentials, the APIM client.

Nothing here runs at import time, so importing `function_app` never touches the
network or fails on a bad setting; the first invocation builds it once and
every later one (on the worker's single event loop) reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.apim import ApimClient
from shared.credentials import create_credential
from shared.errors import ConfigurationError
from shared.redaction import redact_library_logs
from shared.settings import Settings, load_settings
from shared.tokens import TokenSource


@dataclass
class Runtime:
    settings: Settings
    client: ApimClient
    token_sources: dict[str | None, TokenSource]

    def token_source(self, method: str = "GET") -> TokenSource:
        return self.client.source_for(method)

    async def close(self) -> None:
        await self.client.close()
        for source in self.token_sources.values():
            await source.credential.close()


_runtime: Runtime | None = None
_settings: Settings | ConfigurationError | None = None


def settings_or_error() -> Settings | ConfigurationError:
    """Settings, validated once per process; a bad setting is remembered and reported on every call."""
    global _settings
    if _settings is None:
        try:
            _settings = load_settings()
        except ConfigurationError as error:
            _settings = error
    return _settings


def get_runtime() -> Runtime:
    """The runtime; raises ConfigurationError naming each bad setting. Call from the event loop."""
    global _runtime
    if _runtime is None:
        settings = settings_or_error()
        if isinstance(settings, ConfigurationError):
            raise settings.with_traceback(None)  # the same object every time: don't let tracebacks pile up
        sources = {
            client_id: TokenSource(create_credential(client_id, settings.tenant_id), settings.scope,
                                   client_id=client_id)
            for client_id in settings.client_ids
        }
        redact_library_logs(secrets=(settings.subscription_key,))  # after the credentials imported their modules
        _runtime = Runtime(settings=settings, client=ApimClient(settings, sources), token_sources=sources)
    return _runtime


async def reset_runtime() -> None:
    """Close and forget the runtime and remembered settings (tests, demo, benchmarks)."""
    global _runtime, _settings
    runtime, _runtime, _settings = _runtime, None, None
    if runtime is not None:
        await runtime.close()
