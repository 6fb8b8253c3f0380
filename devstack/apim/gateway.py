"""One request through the gateway, in APIM's order.

Built-in steps first: match an operation (else 404), check the subscription key
(else 401). Then the operation's composed policy: inbound, backend (where
forward-request calls the backend), outbound. A failure anywhere answers with
that failure's status and body and runs the on-error section. return-response
ends the pipeline there with the response it built (outbound does not run).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiDict
from yarl import URL

from devstack.apim.errors import (
    INTERNAL_SERVER_ERROR,
    INVALID_SUBSCRIPTION_KEY,
    MISSING_SUBSCRIPTION_KEY,
    RESOURCE_NOT_FOUND,
    PolicyFailure,
    error_body,
    error_response,
)
from devstack.apim.expressions import Expression, ExpressionEvaluationError
from devstack.apim.jwt_validation import TokenRejected, extract_token, rules_for, validate
from devstack.apim.openid import MetadataSource
from devstack.apim.statements import (
    AuthenticationManagedIdentity,
    Choose,
    ForwardRequest,
    ReturnResponse,
    SetBody,
    SetHeader,
    SetQueryParameter,
    SetStatus,
    SetVariable,
    Statement,
    ValidateAzureAdToken,
    ValidateJwt,
    Value,
)

if TYPE_CHECKING:
    from devstack.apim.api import Api, Route

# How a statement runs: registry.ELEMENTS maps each element to one of the Gateway methods below.
Handler = Callable[["Gateway", Any, str, "Exchange"], Awaitable[None]]
# A token of the APIM service's own managed identity (by client ID) for a resource (authentication-managed-identity).
ManagedIdentityToken = Callable[[str, str], Awaitable[str]]


class ManagedIdentityUnavailable(Exception):
    """The APIM service's managed identity got no token; the message says why (never a token)."""

log = logging.getLogger(__name__)

# Never forwarded: they describe one connection, not the message.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "host", "content-length"}
# set-header joins several values with commas, except for headers whose values may hold commas or dates.
_NOT_CONCATENATED = {"user-agent", "www-authenticate", "proxy-authenticate", "cookie", "set-cookie", "warning",
                     "date", "expires", "if-modified-since", "if-unmodified-since", "last-modified", "retry-after"}
_REQUEST_SECTIONS = ("inbound", "backend")


@dataclass
class Message:
    """The response being built: the backend's, APIM's own error, or return-response's."""

    status: int
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    body: bytes = b""
    reason: str | None = None


class _Returned(Exception):
    """return-response: stop the pipeline and answer with this message."""

    def __init__(self, message: Message) -> None:
        super().__init__("return-response")
        self.message = message


@dataclass
class Exchange:
    """One request in the pipeline; what a policy expression calls `context`."""

    request_id: str
    method: str
    route: Route
    headers: CIMultiDict[str]  # the request headers as they will be forwarded
    query: MultiDict[str]
    body: bytes
    client_ip: str = ""
    variables: dict[str, Any] = field(default_factory=dict)
    response: Message | None = None

    @property
    def operation_id(self) -> str:
        return self.route.operation.name

    @property
    def matched_parameters(self) -> Mapping[str, str]:
        return self.route.parameters


class Gateway:
    def __init__(self, api: Api, *, service_url: str, subscription_key: str, entra_config_url: str,
                 keys: MetadataSource, session: Callable[[], aiohttp.ClientSession],
                 handlers: Mapping[type, Handler], managed_identity: ManagedIdentityToken | None = None) -> None:
        self.api = api
        self.managed_identity = managed_identity
        self.handlers = handlers  # statement type -> the method that runs it (registry.handlers())
        self.service_url = service_url.rstrip("/")  # the API's serviceUrl in Azure
        self.subscription_key = subscription_key
        self.entra_config_url = entra_config_url
        self.keys = keys
        self.session = session

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = self.api.route(request.method, request.rel_url.raw_path)
        if route is None:
            return error_response(404, RESOURCE_NOT_FOUND)
        denied = self._check_subscription(request)
        if denied is not None:
            return denied
        exchange = Exchange(
            request_id=str(uuid.uuid4()), method=request.method, route=route,
            headers=CIMultiDict(request.headers), query=MultiDict(request.query), body=await request.read(),
            client_ip=request.remote or "",
        )
        policy = route.operation.policy
        try:
            for section in ("inbound", "backend", "outbound"):
                for statement in policy[section]:
                    await self._apply(statement, section, exchange)
        except _Returned as returned:
            exchange.response = returned.message
        except PolicyFailure as failure:
            exchange.response = self._error(failure, exchange)
            try:
                for statement in policy["on-error"]:
                    await self._apply(statement, "on-error", exchange)
            except _Returned as returned:
                exchange.response = returned.message
            except PolicyFailure as again:
                exchange.response = self._error(again, exchange)
        # No forward-request in the effective policy: APIM answers 200 with an empty body.
        response = exchange.response or Message(status=200)
        return web.Response(status=response.status, reason=response.reason, headers=response.headers,
                            body=response.body)

    def _check_subscription(self, request: web.Request) -> web.Response | None:
        if not self.api.subscription_required:
            return None
        # APIM reads the query parameter only when the header is absent.
        key = request.headers.get(self.api.subscription_header) or request.query.get(self.api.subscription_query)
        if key and secrets.compare_digest(key.encode(), self.subscription_key.encode()):
            return None
        realm = f"{request.url.origin()}/{self.api.path}"
        challenge = f'AzureApiManagementKey realm="{realm}",name="{self.api.subscription_header}",type="header"'
        message = INVALID_SUBSCRIPTION_KEY if key else MISSING_SUBSCRIPTION_KEY
        return error_response(401, message, headers={"WWW-Authenticate": challenge})

    def _error(self, failure: PolicyFailure, exchange: Exchange) -> Message:
        activity_id = exchange.request_id if failure.with_activity_id else None
        return Message(status=failure.status, headers=CIMultiDict({"Content-Type": "application/json"}),
                       body=error_body(failure.status, failure.message, activity_id))

    async def _apply(self, statement: Statement, section: str, exchange: Exchange) -> None:
        handler = self.handlers.get(type(statement))
        if handler is None:  # the registry's test makes this unreachable; <base /> is gone after compose()
            raise AssertionError(f"no handler for {statement!r}")
        try:
            await handler(self, statement, section, exchange)
        except ExpressionEvaluationError as exc:
            log.warning("policy expression failed: %s", exc)
            raise PolicyFailure(500, INTERNAL_SERVER_ERROR, reason="ExpressionValueEvaluationFailure",
                                source=type(statement).__name__, with_activity_id=True) from exc

    # -- one method per statement type (registry.ELEMENTS says which) --

    async def set_variable(self, statement: SetVariable, section: str, exchange: Exchange) -> None:
        exchange.variables[statement.name] = self._evaluate_any(statement.value, exchange)

    async def set_status(self, statement: SetStatus, section: str, exchange: Exchange) -> None:
        response = self._response(exchange)
        response.status, response.reason = statement.code, statement.reason

    async def set_body(self, statement: SetBody, section: str, exchange: Exchange) -> None:
        body = _utf8(self._evaluate(statement.value, exchange))
        if section in _REQUEST_SECTIONS:
            exchange.body = body
        else:
            self._response(exchange).body = body

    async def choose(self, statement: Choose, section: str, exchange: Exchange) -> None:
        for when in statement.whens:
            if self._condition(when.condition, exchange):
                branch = when.statements
                break
        else:
            branch = statement.otherwise
        for nested in branch:
            await self._apply(nested, section, exchange)

    async def return_response(self, statement: ReturnResponse, section: str, exchange: Exchange) -> None:
        # Its set-status, set-header and set-body build a new response, as they would in outbound.
        exchange.response = Message(status=200)
        for nested in statement.statements:
            await self._apply(nested, "outbound", exchange)
        raise _Returned(exchange.response)

    async def authenticate_with_managed_identity(self, statement: AuthenticationManagedIdentity, section: str,
                                                 exchange: Exchange) -> None:
        try:
            if self.managed_identity is None:
                raise ManagedIdentityUnavailable("this gateway has no managed identity")
            token = await self.managed_identity(statement.resource, statement.client_id)
        except ManagedIdentityUnavailable as exc:
            log.warning("authentication-managed-identity got no token for %s: %s", statement.resource, exc)
            if statement.ignore_error:
                return
            raise PolicyFailure(500, INTERNAL_SERVER_ERROR, reason="ManagedIdentityTokenFailure",
                                source="authentication-managed-identity", with_activity_id=True) from None
        if statement.output_variable:
            exchange.variables[statement.output_variable] = token
        else:  # replaces whatever Authorization the caller sent
            exchange.headers["Authorization"] = f"Bearer {token}"

    async def set_header(self, statement: SetHeader, section: str, exchange: Exchange) -> None:
        target = exchange.headers if section in _REQUEST_SECTIONS else self._response(exchange).headers
        values = [self._evaluate(v, exchange) for v in statement.values]
        _set(target, statement.name, statement.exists_action, values,
             concatenate=statement.name.lower() not in _NOT_CONCATENATED)

    async def set_query_parameter(self, statement: SetQueryParameter, section: str, exchange: Exchange) -> None:
        values = [self._evaluate(v, exchange) for v in statement.values]
        _set(exchange.query, statement.name, statement.exists_action, values, concatenate=False)

    async def validate_token(self, statement: ValidateJwt | ValidateAzureAdToken, section: str,
                             exchange: Exchange) -> None:
        source = "validate-jwt" if isinstance(statement, ValidateJwt) else "validate-azure-ad-token"
        rules = rules_for(statement, self.entra_config_url)
        try:
            token = extract_token(statement, rules, exchange.headers, exchange.query, exchange)
            jwt = await validate(token, rules, self.keys)
        except TokenRejected as rejected:
            # The reason helps whoever debugs a 401/403; the token itself is never logged.
            log.info("%s rejected %s %s: %s %s", source, exchange.method, exchange.route.path,
                     rejected.reason, rejected.message)
            raise PolicyFailure(statement.failed_status, statement.failed_message or rejected.message,
                                reason=rejected.reason, source=source) from None
        if statement.output_variable:
            exchange.variables[statement.output_variable] = jwt

    async def forward_request(self, statement: ForwardRequest, section: str, exchange: Exchange) -> None:
        url = URL(self.service_url + exchange.route.path, encoded=True)
        if exchange.query:
            url = url.with_query(exchange.query)
        headers = CIMultiDict((k, v) for k, v in exchange.headers.items() if k.lower() not in _HOP_BY_HOP)
        _add_forwarded_for(headers, exchange.client_ip)
        try:
            async with asyncio.timeout(statement.timeout):  # APIM's timeout covers the response headers
                response = await self.session().request(
                    exchange.method, url, headers=headers, data=exchange.body or None,
                    allow_redirects=statement.follow_redirects,
                    # Forward what the caller sent, and nothing the HTTP client would add on its own.
                    skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
                )
            async with response:
                body = await response.read()
        except TimeoutError:
            log.warning("backend sent no response headers within forward-request's %ss", statement.timeout)
            raise PolicyFailure(500, INTERNAL_SERVER_ERROR, reason="Timeout", source="forward-request",
                                with_activity_id=True) from None
        except aiohttp.ClientError as exc:
            log.warning("backend request failed: %r", exc)
            raise PolicyFailure(500, INTERNAL_SERVER_ERROR, reason="BackendConnectionFailure",
                                source="forward-request", with_activity_id=True) from None
        passed = CIMultiDict((k, v) for k, v in response.headers.items()
                             if k.lower() not in _HOP_BY_HOP | {"date", "server"})
        exchange.response = Message(status=response.status, headers=passed, body=body)

    @staticmethod
    def _response(exchange: Exchange) -> Message:
        if exchange.response is None:
            exchange.response = Message(status=200)
        return exchange.response

    @staticmethod
    def _evaluate_any(value: Value, exchange: Exchange) -> Any:
        return value.evaluate(exchange) if isinstance(value, Expression) else value

    @classmethod
    def _evaluate(cls, value: Value, exchange: Exchange) -> str:
        result = cls._evaluate_any(value, exchange)
        if not isinstance(result, str):  # C# would not compile a non-string where a string goes
            raise ExpressionEvaluationError(f"{getattr(value, 'source', value)!r} did not give a string")
        return result

    @staticmethod
    def _condition(condition: Expression, exchange: Exchange) -> bool:
        result = condition.evaluate(exchange)
        if not isinstance(result, bool):
            raise ExpressionEvaluationError(f"condition {condition.source!r} did not give true or false")
        return result


def _utf8(text: str) -> bytes:
    """As .NET's UTF-8 encoder: a lone surrogate becomes U+FFFD rather than an error."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _add_forwarded_for(headers: CIMultiDict[str], client_ip: str) -> None:
    """APIM appends the caller's address to X-Forwarded-For on what it forwards to the backend."""
    if not client_ip:
        return
    earlier = ", ".join(headers.getall("X-Forwarded-For", []))
    headers.popall("X-Forwarded-For", None)
    headers["X-Forwarded-For"] = f"{earlier}, {client_ip}" if earlier else client_ip


def _set(target: MultiDict[str], name: str, action: str, values: list[str], *, concatenate: bool) -> None:
    """set-header / set-query-parameter semantics for exists-action."""
    exists = name in target
    if action == "delete":
        target.popall(name, None)
        return
    if action == "skip" and exists:
        return
    if action == "append" and exists:
        values = [*target.getall(name), *values]
    target.popall(name, None)
    if concatenate:
        target[name] = ",".join(values)
    else:
        for value in values:
            target.add(name, value)
