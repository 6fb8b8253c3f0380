"""Start the stand-in services on loopback ports and describe them.

`DevStack` runs every service on one event loop in a background thread, so the
real *sync* Azure clients (which block) can be used from the caller's thread
while the stand-ins keep serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from devstack.config import StackConfig, load_config
from devstack.serverlog import SERVER_LOGGER
from devstack.state import StackState
from devstack.statelock import StateDirLock
from devstack.tls import LocalTls

LOOPBACK = "127.0.0.1"
INSTRUMENTATION_KEY = "00000000-0000-4000-8000-00000000d5a1"
# Served over HTTPS: azure-core sends the exporter's bearer token over HTTPS only.
TLS_SERVICES = frozenset({"ingestion"})


class StackAlreadyRunning(RuntimeError):
    """Another devstack holds the lock on this state directory."""


class PortUnavailable(OSError):
    """A fixed port cannot be listened on: another program (or devstack) has it."""

    def __init__(self, service: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {LOOPBACK}:{port} for '{service}': {reason}")
        self.service, self.port, self.reason = service, port, reason


def _app_factories() -> dict[str, Callable[[StackState], web.Application]]:
    # Imported here so that `import devstack` stays cheap.
    from devstack import apim, backend, control, identity, ingestion

    return {
        "identity": identity.create_app,
        "apim": apim.create_app,
        "backend": backend.create_app,
        "ingestion": ingestion.create_app,
        "control": control.create_app,
    }


def _bind(service: str, port: int) -> socket.socket:
    """A listening socket on `port` (0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sys.platform == "win32":
        # On Windows SO_REUSEADDR would let a second process bind a port already in use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
    else:
        # A restart can then reuse its ports at once (TIME_WAIT); a live listener still refuses.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(service, port, exc.strerror or str(exc)) from exc
    sock.setblocking(False)
    return sock


def _bind_all(names: list[str], ports: Mapping[str, int]) -> dict[str, socket.socket]:
    unknown = sorted(set(ports) - set(names))
    if unknown:
        raise ValueError(f"no service named {', '.join(unknown)}; the services are: {', '.join(names)}")
    sockets: dict[str, socket.socket] = {}
    try:
        for name in names:
            sockets[name] = _bind(name, ports.get(name, 0))
    except BaseException:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


def describe(state: StackState, urls: dict[str, str]) -> dict[str, Any]:
    """The `endpoints.json` document: everything a client needs to use the stack."""
    config = state.config
    identity, ingestion = urls["identity"], urls["ingestion"]
    tenant = config.tenant_id
    return {
        "tenant_id": tenant,
        "identity_endpoint": f"{identity}/msi/token",
        "identity_header": state.identity_header,
        "imds_endpoint": identity,
        "authority_host": identity,
        "openid_config_url": f"{identity}/{tenant}/v2.0/.well-known/openid-configuration",
        "openid_config_url_v1": f"{identity}/{tenant}/.well-known/openid-configuration",
        "jwks_uri": f"{identity}/{tenant}/discovery/v2.0/keys",
        "apim_gateway_url": urls["apim"],
        "apim_base_url": f"{urls['apim']}/{config.api_path}",
        "subscription_key": state.subscription_key,
        "api_app_id_uri": config.api.app_id_uri,
        "api_client_id": config.api.client_id,
        "api_roles": {"read": config.api.read_role, "write": config.api.write_role},
        # Further APIs behind the same gateway, by the app's connection name for them.
        "apis": {
            extra.name: {
                "apim_base_url": f"{urls['apim']}/{extra.api_path}",
                "api_app_id_uri": extra.app.app_id_uri,
                "api_client_id": extra.app.client_id,
                "api_roles": {"read": extra.app.read_role, "write": extra.app.write_role},
            }
            for extra in config.extra_apis
        },
        "backend_url": urls["backend"],
        # The Orders API's serviceUrl: the sample backend (infra/sample-backend/policy.xml).
        "sample_backend_url": f"{urls['backend']}/{config.sample_backend.api_path}" if config.sample_backend else None,
        "ingestion_endpoint": ingestion,
        "ca_bundle": str(state.tls.bundle) if state.tls else None,
        "connection_string": (
            f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={ingestion}/;LiveEndpoint={ingestion}/"
        ),
        "control_url": urls["control"],
        "identities": {
            name: {
                "client_id": i.client_id,
                "principal_id": i.principal_id,
                "resource_id": i.resource_id,
                "roles": list(i.roles),
                "system_assigned": i.system_assigned,
                "azure_roles": list(i.azure_roles),
            }
            for name, i in config.identities.items()
        },
    }


class DevStack:
    """All stand-in services, started and stopped together.

    Use as a context manager, or call `start()` / `stop()`. `endpoints` holds the
    `endpoints.json` document once started.

    `ports` maps service names to ports; a service it leaves out (and every service
    when it is None, as in tests, which run side by side) gets a free port. With a
    `state_dir`, the identity header and subscription key are kept there across
    restarts, so that settings written for one run stay valid for the next.
    """

    def __init__(self, config: StackConfig | None = None, state_dir: Path | str | None = None,
                 ports: Mapping[str, int] | None = None, *, run_schedules: bool = False,
                 tls: bool = False) -> None:
        self.state = StackState.create(config or load_config())
        self.state_dir = Path(state_dir) if state_dir else None
        self.ports = dict(ports or {})
        # The Logic App's Recurrence trigger fires on its schedule only when asked (`up` asks):
        # in tests and the demo a run starts only when they start it.
        self.run_schedules = run_schedules
        self.tls = tls  # APIM over HTTPS too, with the stack's local CA (endpoints["ca_bundle"] trusts it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._lock: StateDirLock | None = None
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def endpoints(self) -> dict[str, Any]:
        return self.state.endpoints

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> dict[str, Any]:
        if self.state_dir:
            self._acquire_state_dir()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="devstack", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start_services(), loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        if self.state_dir:
            self._write_endpoints()
        return self.endpoints

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._stop_services(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread:
                self._thread.join(timeout=30)
            loop.close()
        self._release_state_dir()

    def add_endpoints(self, section: str, value: Any) -> None:
        """Add a section to the endpoints (and endpoints.json), e.g. the functions host started after the stack."""
        self.state.endpoints[section] = value
        if self.state_dir and self._lock is not None:
            self._write_endpoints()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the stack's loop from another thread."""
        assert self._loop is not None, "stack is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    async def _start_services(self) -> None:
        from devstack import logicapp

        # Read first: a definition the runner refuses stops the start before any service runs.
        workflow = logicapp.load_workflow(self.state.config.logic_app_workflow)
        factories = _app_factories()
        sockets = _bind_all(list(factories), self.ports)
        tls = self._local_tls()
        served_over_tls = TLS_SERVICES | ({"apim"} if self.tls else set())
        urls = {name: f"{'https' if name in served_over_tls else 'http'}://{LOOPBACK}:{sock.getsockname()[1]}"
                for name, sock in sockets.items()}
        self.state.endpoints.update(describe(self.state, urls))
        server_context = tls.server_context()
        for name, factory in factories.items():
            runner = web.AppRunner(factory(self.state), access_log=None, shutdown_timeout=1, logger=SERVER_LOGGER)
            await runner.setup()
            context = server_context if name in served_over_tls else None
            await web.SockSite(runner, sockets[name], ssl_context=context).start()
            self._runners.append(runner)
        await logicapp.start(self.state, workflow, schedule=self.run_schedules)

    def _local_tls(self) -> LocalTls:
        """The CA and certificate: kept in the state dir, else in a directory removed at stop."""
        if self.state_dir is not None:
            directory = self.state_dir / "tls"
        else:
            self._tls_dir = tempfile.TemporaryDirectory(prefix="devstack-tls-")
            directory = Path(self._tls_dir.name)
        self.state.tls = LocalTls(directory)
        return self.state.tls

    async def _stop_services(self) -> None:
        from devstack import logicapp

        await logicapp.stop(self.state)
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    def _write_endpoints(self) -> None:
        # Write then rename, so a reader polling for the file never sees half of it.
        assert self.state_dir is not None
        path = self.state_dir / "endpoints.json"
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.endpoints, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, path)

    def _acquire_state_dir(self) -> None:
        assert self.state_dir is not None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = StateDirLock(self.state_dir)
        if not lock.acquire():
            raise StackAlreadyRunning(
                f"a devstack is already running with state dir '{self.state_dir}' (pid {lock.owner()}). "
                "Stop it (Ctrl+C in its terminal) or pass another --state-dir."
            )
        self._lock = lock
        self._keep_secrets()

    def _keep_secrets(self) -> None:
        """Reuse the identity header and subscription key of the last run in this state dir."""
        assert self.state_dir is not None
        path = self.state_dir / "secrets.json"
        state = self.state
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            header, key = kept["identity_header"], kept["subscription_key"]
        except (OSError, ValueError, KeyError, TypeError):
            header = key = None  # first run, or an unreadable file: keep this run's fresh values
        if isinstance(header, str) and header and isinstance(key, str) and key:
            state.identity_header = header
            if not state.config.subscription_key:  # a key from the config always wins
                state.subscription_key = key
            return
        document = {"identity_header": state.identity_header, "subscription_key": state.subscription_key}
        partial = path.with_suffix(".json.partial")
        # Owner-only: the values are valid only for this loopback stand-in, but still keys.
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            f.write(json.dumps(document, indent=2) + "\n")
        os.replace(partial, path)

    def _release_state_dir(self) -> None:
        if self._lock is None or self.state_dir is None:
            return
        (self.state_dir / "endpoints.json").unlink(missing_ok=True)
        self._lock.release()
        self._lock = None
