"""Run the workflow: its Recurrence trigger on schedule or on demand, its Http actions for real.

The HTTP action's `ManagedServiceIdentity` authentication gets its token the way Logic Apps
Standard does on App Service: from the managed-identity endpoint (`IDENTITY_ENDPOINT`, header
`X-IDENTITY-HEADER`, api-version 2019-08-01), with the audience as `resource`, exactly as
written, and a user-assigned identity named by its resource ID (`mi_res_id`). Consumption gets
its tokens inside the Logic Apps service; that exchange is not public.

Each run is recorded (status, each action's status code, duration) without secrets: inputs
named in `runtimeConfiguration.secureData` are not kept, a securestring parameter's value is
never shown, and the key and the token are scrubbed from whatever else is kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp

from devstack.logicapp.definition import SYSTEM_ASSIGNED, HttpAction, Workflow

IDENTITY_API_VERSION = "2019-08-01"
# Logic Apps' limit for an outbound HTTP request (Consumption: 120 s, then the action times out).
HTTP_TIMEOUT_SECONDS = 120
MAX_RECORDED_RUNS = 200
MAX_RECORDED_BODY = 16 * 1024
REDACTED = "[redacted]"
SECURE_PARAMETER = "[securestring]"
SECURED = {"secured": True, "reason": "runtimeConfiguration.secureData"}

_log = logging.getLogger(__name__)


class RunParameterError(ValueError):
    """Parameter values for a run that the definition does not declare, or of the wrong type."""


def bind_parameters(workflow: Workflow, values: Mapping[str, Any]) -> dict[str, str]:
    """Each declared parameter's value: given, else its default. As ARM checks a deployment,
    an undeclared name, a missing value or a non-string is an error."""
    problems = [f"parameter '{name}' is not declared in {workflow.file}" for name in values
                if name not in workflow.parameters]
    problems += [f"parameter '{name}' must be a string" for name, value in values.items()
                 if name in workflow.parameters and not isinstance(value, str)]
    bound: dict[str, str] = {}
    for name, parameter in workflow.parameters.items():
        value = values.get(name, parameter.default)
        if value is None:
            problems.append(f"parameter '{name}' ({parameter.type}) has no value and no defaultValue")
        elif isinstance(value, str):
            bound[name] = value
    if problems:
        raise RunParameterError("; ".join(problems))
    return bound


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _code(status: int) -> str:
    """The action's `code` as Logic Apps shows it: the status name, e.g. OK, Forbidden."""
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return str(status)


class _TokenFailure(Exception):
    """The managed-identity endpoint gave no token; `answer` is what it said."""

    def __init__(self, status: int | None, answer: Any) -> None:
        super().__init__(str(status))
        self.status = status
        self.answer = answer


class WorkflowRunner:
    """One deployed workflow: its definition, the deployment's parameter values, its run history."""

    def __init__(self, workflow: Workflow, parameters: Mapping[str, str], *, name: str,
                 identity_endpoint: str, identity_header: str) -> None:
        self.workflow = workflow
        self.name = name
        self.parameters = bind_parameters(workflow, parameters)
        self._identity_endpoint = identity_endpoint
        self._identity_header = identity_header
        self._runs: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_RUNS)
        self._session: aiohttp.ClientSession | None = None
        self._schedule: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[dict[str, Any]]] = set()

    # --- life cycle ------------------------------------------------------------------------

    async def start(self, *, schedule: bool) -> None:
        # No proxies from the environment: every target is on loopback.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS))
        if schedule:
            self._schedule = asyncio.create_task(self._recur(), name=f"{self.name} recurrence")

    async def close(self) -> None:
        tasks = [task for task in (self._schedule, *self._in_flight) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def scheduled(self) -> bool:
        return self._schedule is not None and not self._schedule.done()

    async def _recur(self) -> None:
        """Fire every period, the first time one period after the start. (Azure fires a
        Recurrence without startTime at once when it is deployed; here starting the stack never
        adds calls to what a test or a user counts.) Missed recurrences are not made up: the
        trigger waits for the next one, as Logic Apps does."""
        loop = asyncio.get_running_loop()
        period = self.workflow.trigger.seconds
        due = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            task = asyncio.create_task(self.run(fired_by="schedule"))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            due += period
            now = loop.time()
            if due < now:
                due += math.ceil((now - due) / period) * period

    # --- runs ------------------------------------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        """Recorded runs, oldest first (the last MAX_RECORDED_RUNS)."""
        return list(self._runs)

    def forget_runs(self) -> None:
        self._runs.clear()

    def describe(self) -> dict[str, Any]:
        trigger = self.workflow.trigger
        return {
            "name": self.name,
            "definition": str(self.workflow.file),
            "trigger": {"name": trigger.name, "type": "Recurrence", "frequency": trigger.frequency,
                        "interval": trigger.interval},
            "scheduled": self.scheduled,
            "actions": [action.name for action in self.workflow.actions],
            "parameters": {name: SECURE_PARAMETER if self.workflow.parameters[name].secure else value
                           for name, value in self.parameters.items()},
        }

    async def run(self, *, fired_by: str = "manual", parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Fire the trigger once and run every action; return the run's record (also kept).

        `parameters` replaces some of the deployment's values for this run only (as a
        redeployment with other values would); RunParameterError if the definition does not
        declare them.
        """
        values = bind_parameters(self.workflow, {**self.parameters, **(parameters or {})})
        secrets = {values[name] for name, p in self.workflow.parameters.items() if p.secure and values[name]}
        secrets.add(self._identity_header)  # in case an identity endpoint quotes it back
        started, started_at = time.perf_counter(), _now()
        trigger = self.workflow.trigger
        results = await asyncio.gather(*(self._run_action(action, values, secrets)
                                         for action in self.workflow.actions))
        failed = [r for r in results if r["status"] != "Succeeded"]
        record: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "workflow": self.name,
            "trigger": {"name": trigger.name, "type": "Recurrence", "fired_by": fired_by},
            "status": "Failed" if failed else "Succeeded",
            "start_time": started_at,
            "end_time": _now(),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "actions": {r["name"]: r for r in results},
        }
        if failed:
            record["error"] = {"code": "ActionFailed", "message": "An action failed. No dependent actions succeeded."}
        record = _scrub(record, secrets)
        self._runs.append(record)
        summary = ", ".join(f"{r['name']} {r['status_code'] or r['code']}" for r in results)
        _log.info("workflow %s run %s %s in %.0f ms: %s", self.name, record["id"], record["status"],
                  record["duration_ms"], summary)
        return record

    async def _run_action(self, action: HttpAction, values: Mapping[str, str], secrets: set[str]) -> dict[str, Any]:
        started, started_at = time.perf_counter(), _now()
        record: dict[str, Any] = {"name": action.name, "type": "Http", "start_time": started_at,
                                  "inputs": SECURED if action.secure_inputs else self._inputs(action, values)}
        try:
            outputs = await self._call(action, values, secrets)
        except _TokenFailure as failure:
            record.update(status="Failed", code="ManagedIdentityTokenFailure", status_code=None, error={
                "code": "ManagedIdentityTokenFailure",
                "message": "The managed-identity endpoint gave no token for this identity and audience; "
                           f"it answered HTTP {failure.status}.",
                "identity_endpoint_answer": failure.answer,
            })
        except (aiohttp.ClientError, TimeoutError) as exc:
            record.update(status="Failed", code="HttpRequestFailed", status_code=None, error={
                "code": "HttpRequestFailed", "message": f"The request failed: {type(exc).__name__}: {exc}"})
        else:
            status = outputs["statusCode"]
            # An Http action fails on any 4xx or 5xx answer; its outputs keep that answer.
            record.update(status="Succeeded" if status < 400 else "Failed", code=_code(status), status_code=status,
                          outputs=SECURED if action.secure_outputs else outputs)
        record["end_time"] = _now()
        record["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return record

    def _inputs(self, action: HttpAction, values: Mapping[str, str]) -> dict[str, Any]:
        """What the run history shows as the action's inputs: never a securestring's value,
        never the Authorization header (Logic Apps does not show it either)."""
        secure = {name for name, p in self.workflow.parameters.items() if p.secure}

        def shown(template: Any) -> Any:
            return SECURE_PARAMETER if secure & set(template.parameters) else template.evaluate(values)

        inputs: dict[str, Any] = {"method": shown(action.method), "uri": shown(action.uri),
                                  "headers": {name: shown(value) for name, value in action.headers}}
        if action.authentication is not None:
            inputs["authentication"] = {"type": "ManagedServiceIdentity",
                                        "identity": shown(action.authentication.identity),
                                        "audience": shown(action.authentication.audience)}
        return inputs

    async def _call(self, action: HttpAction, values: Mapping[str, str], secrets: set[str]) -> dict[str, Any]:
        assert self._session is not None, "the runner is not started"
        headers = {name: str(value.evaluate(values)) for name, value in action.headers}
        if action.authentication is not None:
            token = await self._token(str(action.authentication.identity.evaluate(values)),
                                      str(action.authentication.audience.evaluate(values)))
            secrets.add(token)
            headers["Authorization"] = f"Bearer {token}"
        async with self._session.request(str(action.method.evaluate(values)), str(action.uri.evaluate(values)),
                                         headers=headers, allow_redirects=False) as response:
            limit = _read_limit(secrets)
            raw = await _read_at_most(response, limit)
            return {"statusCode": response.status,
                    "headers": {name: value for name, value in response.headers.items()},
                    "body": _body(raw, response.content_type, secrets, cut=len(raw) >= limit)}

    async def _token(self, identity: str, audience: str) -> str:
        assert self._session is not None
        query = {"api-version": IDENTITY_API_VERSION, "resource": audience}
        if identity.lower() != SYSTEM_ASSIGNED.lower():
            query["mi_res_id"] = identity
        async with self._session.get(self._identity_endpoint, params=query,
                                     headers={"X-IDENTITY-HEADER": self._identity_header}) as response:
            raw = await _read_at_most(response, _read_limit({self._identity_header}))
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = _bounded_text(raw, {self._identity_header})
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if response.status != 200 or not isinstance(token, str) or not token:
                raise _TokenFailure(response.status, answer)
            return token


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first `limit` bytes of the body: what is recorded is bounded, whatever the answer."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _read_limit(secrets: set[str]) -> int:
    """Enough bytes that a secret starting within the recorded part is read whole, so it can be scrubbed."""
    return MAX_RECORDED_BODY + max((len(secret.encode()) for secret in secrets), default=0) + 1


def _bounded_text(raw: bytes, secrets: set[str], *, cut: bool = False) -> str:
    """The body as recorded: secrets scrubbed first, then cut (cutting first could leave part of one)."""
    text = _scrub(raw.decode("utf-8", "replace"), secrets)
    return text[:MAX_RECORDED_BODY] + "…" if cut or len(text) > MAX_RECORDED_BODY else text


def _body(raw: bytes, content_type: str, secrets: set[str], *, cut: bool) -> Any:
    if cut or len(raw) > MAX_RECORDED_BODY:
        return _bounded_text(raw, secrets, cut=cut)
    text = raw.decode("utf-8", "replace")
    if content_type.endswith("json"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _scrub(node: Any, secrets: set[str]) -> Any:
    """The record with every secret value (securestring parameters, the token) replaced."""
    if isinstance(node, str):
        for secret in secrets:
            node = node.replace(secret, REDACTED)
        return node
    if isinstance(node, dict):
        return {_scrub(key, secrets): _scrub(value, secrets) for key, value in node.items()}
    if isinstance(node, list):
        return [_scrub(value, secrets) for value in node]
    return node
