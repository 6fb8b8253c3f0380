"""App settings: one table, read and validated once per API connection, every problem named.

`SETTINGS` is the only list of settings: loading, the error messages, `health`'s
summary, the README's table (checked by a test) and the devstack's settings writer
all read it. The default connection's settings have the names in the table; a named
connection's are the same names behind its name and one underscore:
`INVENTORY_APIM_BASE_URL`, `INVENTORY_TIMER_SCHEDULE`.

Loading never raises anything but ConfigurationError, whatever the values; callers
decide when a bad setting matters (`health` reports it, the other functions fail with it).
"""

from __future__ import annotations

import ipaddress
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import yarl

from .errors import BadRequest, ConfigurationError
from .paths import build_url
from .redaction import redact_query

__all__ = [
    "LOOPBACK_HOSTS",
    "READ_METHODS",
    "SETTINGS",
    "InvalidValue",
    "Setting",
    "Settings",
    "TimerTarget",
    "check_connection_name",
    "is_loopback",
    "is_loopback_host",
    "load_settings",
    "setting_name",
]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Calls that only read: made with MANAGED_IDENTITY_CLIENT_ID; any other method may use the writer.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# App Service leaves a reference it could not resolve as its literal text, for either kind.
_UNRESOLVED_REFERENCE = re.compile(r"^\s*@Microsoft\.(KeyVault|AppConfiguration)\(", re.IGNORECASE)
_REFERENCE_FIXES = {
    "keyvault": ("Key Vault", "'@Microsoft.KeyVault(...)'",
                 "the secret. Grant the identity in keyVaultReferenceIdentity the 'Key Vault Secrets User' role and "
                 "check the secret URI."),
    "appconfiguration": ("App Configuration", "'@Microsoft.AppConfiguration(...)'",
                         "the key-value. Grant the identity in keyVaultReferenceIdentity the 'App Configuration Data "
                         "Reader' role and check the reference's Endpoint, Key and Label."),
}
_CANONICAL_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A DNS label as resolvers take it (RFC 1123; '_' too, as Azure's own names may have it): 1-63 characters.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_DOMAIN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Letters and digits only: the name and the setting it prefixes stay apart ("INVENTORY" + "_APIM_BASE_URL").
_CONNECTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}")


class InvalidValue(ValueError):
    """A parser's refusal: what is wrong with the value, in our words, never the value itself."""


@dataclass(frozen=True)
class TimerTarget:
    """What the timer calls: a path under the API and, when TIMER_API_PATH has one, a query."""

    path: str
    query: str = ""

    def __str__(self) -> str:
        """As logs, messages and `health` show it: query values redacted, as the dependency span shows them."""
        return redact_query(f"{self.path}?{self.query}") if self.query else self.path


# Spaces, controls and invisible characters (U+200B, U+FEFF, …): in a URL or an App ID URI they are
# copy-and-paste artefacts, and the value would fail only at call time, as a 404 or a refused token.
# Cs is a lone surrogate, which yarl would silently drop from a URL, calling another one.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def _check_visible(value: str) -> None:
    for position, character in enumerate(value, start=1):
        if unicodedata.category(character) in _INVISIBLE_CATEGORIES:
            raise InvalidValue(f"contains a space or an invisible character (U+{ord(character):04X} at position "
                               f"{position}): copy the value again.")


def _base_url(value: str) -> str:
    example = "e.g. https://contoso.azure-api.net/orders"
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise InvalidValue(f"must be an absolute https URL, {example} (Python's URL parser rejects it).") from None
    _check_visible(value)
    if port == 0:
        raise InvalidValue(f"must be an absolute https URL, {example} (its port is 0).")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        found = f"its scheme is {parts.scheme!r}" if parts.scheme not in ("", "https", "http") else (
            "it has no host" if parts.scheme else "it does not start with https://")
        raise InvalidValue(f"must be an absolute https URL, {example} ({found}).")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InvalidValue("must use https: bearer tokens are only sent over TLS (or to loopback).")
    if "@" in parts.netloc:
        raise InvalidValue(f"must not contain credentials (user info before '@'), {example}.")
    if "?" in value or "#" in value:
        raise InvalidValue(f"must not contain a query or a fragment, {example}.")
    if "\\" in value or any(unquote(unquote(segment)) in (".", "..") for segment in parts.path.split("/")):
        # A call to <base>/x must stay under the base: '..' (or %2e%2e) would let it climb out.
        raise InvalidValue(f"must not contain '.' or '..' segments (encoded or not) or backslashes, {example}.")
    if "//" in parts.path.rstrip("/"):
        raise InvalidValue(f"must not contain an empty path segment ('//'), {example}.")
    if any(unicodedata.category(character) == "Cc" for character in unquote(parts.path)):
        raise InvalidValue(f"must not contain a percent-encoded control character (such as %00), {example}.")
    _check_host(value)
    return value.rstrip("/")


def _check_host(value: str) -> None:
    """The host as a call will use it: parsed by yarl (as aiohttp does), then resolved (IDNA, 1-63 per label).

    After `_check_visible`, which has refused the lone surrogates that yarl would silently drop.
    """
    problem = "its host is not a valid DNS name or IP address (labels of 1-63 letters, digits or '-')"
    try:
        host = yarl.URL(value).raw_host or ""
    except ValueError:  # UnicodeError is one: a host yarl refuses (one with U+200B, say)
        raise InvalidValue(f"must be an absolute https URL, e.g. https://contoso.azure-api.net/orders ({problem})."
                           ) from None
    if _is_ip_address(host):
        return
    try:
        ascii_host = host.encode("idna").decode("ascii")  # what the resolver sends (socket.getaddrinfo)
    except UnicodeError:  # an empty label ('a..b'), or one longer than 63
        ascii_host = ""
    labels = ascii_host.removesuffix(".").split(".")
    if not ascii_host or len(ascii_host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise InvalidValue(f"must be an absolute https URL, e.g. https://contoso.azure-api.net/orders ({problem}).")


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)  # an IPv6 literal may carry a zone ('%eth0'), which this accepts
    except ValueError:
        return False
    return True


def _app_id_uri(value: str) -> str:
    example = "e.g. api://contoso-orders"
    _check_visible(value)
    uri = value.rstrip("/")
    if uri.lower().endswith("/.default"):
        raise InvalidValue(f"must not end with '/.default' (the app adds it), {example}.")
    if _CANONICAL_GUID.fullmatch(uri):
        return uri
    scheme, _, rest = uri.partition("://")
    if scheme.lower() not in ("api", "https") or not rest.strip("/"):
        raise InvalidValue(f"must be an Application ID URI (api://<name> or https://<host>/…) or a client ID, "
                           f"{example}.")
    return uri


def _guid(value: str) -> str:
    if _CANONICAL_GUID.fullmatch(value):
        # Lower case: the same identity written in another case is the same identity (one token source).
        return value.lower()
    found = "that is a resource ID: use the identity's client ID" if value.startswith("/subscriptions/") else (
        "the value set is not one in canonical form")
    raise InvalidValue(f"must be a GUID such as 00000000-0000-0000-0000-000000000000 ({found}).")


def _tenant(value: str) -> str:
    """A tenant ID, or one of its domains (contoso.onmicrosoft.com), as `az login --tenant` and azure-identity take."""
    if _CANONICAL_GUID.fullmatch(value):
        return value.lower()
    labels = value.lower().split(".")
    if len(labels) > 1 and all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        return value.lower()
    raise InvalidValue("must be a GUID such as 00000000-0000-0000-0000-000000000000 (the tenant ID), or one of "
                       "the tenant's domains, such as contoso.onmicrosoft.com.")


def _subscription_key(value: str) -> str:
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise InvalidValue("contains spaces or non-printable characters: paste the key alone.")
    if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
        # `az apim subscription … --query primaryKey` prints JSON: the key in quotes. `-o tsv` prints the key.
        raise InvalidValue("is in quotes: set the key alone (with `az … --query primaryKey`, add `-o tsv`).")
    return value


def _timer_target(value: str) -> TimerTarget:
    _check_visible(value)
    path, _, query = value.partition("?")
    if not path.startswith("/"):
        raise InvalidValue("must be a path under the API that starts with '/', e.g. /status.")
    try:
        # The same checks a caller's path gets: what the timer sends can never leave the API either.
        build_url("https://settings.invalid/api", path, query, base_setting="{APIM_BASE_URL}", proxy_route=None)
    except BadRequest as error:
        raise InvalidValue(f"must be a path under the API, e.g. /status or /items?top=10: {error.message}") from None
    return TimerTarget(path=path, query=query)


# What the timer extension takes: NCRONTAB with or without its seconds field, or a TimeSpan (hh:mm:ss, [d.]).
_CRON_FIELD = re.compile(r"[0-9A-Za-z*?/,-]+")
_TIME_SPAN = re.compile(r"(\d+\.)?\d{1,2}:\d{2}(:\d{2})?")


def _schedule(value: str) -> str:
    """Checked for its shape only, as the host reads it; the host refuses the timer function if it cannot."""
    fields = value.split()
    if _TIME_SPAN.fullmatch(value) or (len(fields) in (5, 6) and all(map(_CRON_FIELD.fullmatch, fields))):
        return value
    found = "a field has characters NCRONTAB does not use" if len(fields) in (5, 6) else f"it has {len(fields)} fields"
    raise InvalidValue("must be an NCRONTAB expression of six fields ({second} {minute} {hour} {day} {month} "
                       f"{{day-of-week}}), e.g. 0 */5 * * * * for every five minutes ({found}).")


@dataclass(frozen=True)
class Setting:
    """One app setting of a connection: its default name, what it fills, how it is read."""

    name: str  # the default connection's name; a named connection's is setting_name(name, connection)
    field: str | None  # the Settings attribute; None: read by the Functions host, not by the app
    parse: Callable[[str], Any]  # the value, normalised; raises InvalidValue
    required: str  # "yes", "no" or "for the timer", as the README's table says
    example: str
    meaning: str
    secret: bool = False
    unset: str = "not set"  # what health shows when it is not set; {NAME} names another of the connection's


SETTINGS: tuple[Setting, ...] = (
    Setting("APIM_BASE_URL", "apim_base_url", _base_url, "yes", "https://contoso.azure-api.net/orders",
            "the API's base URL on the APIM gateway"),
    Setting("API_APP_ID_URI", "api_app_id_uri", _app_id_uri, "yes", "api://contoso-orders",
            "the Application ID URI of the API's app registration"),
    Setting("APIM_SUBSCRIPTION_KEY", "subscription_key", _subscription_key, "no", "(a Key Vault reference)",
            "the APIM subscription key", secret=True),
    Setting("MANAGED_IDENTITY_CLIENT_ID", "client_id", _guid, "no", "0b7c6e3a-1f2d-4a5b-9c8d-7e6f5a4b3c21",
            "the client ID of the identity for calls", unset="not set (system-assigned or developer credential)"),
    Setting("MANAGED_IDENTITY_WRITE_CLIENT_ID", "write_client_id", _guid, "no",
            "1c8d7f4b-2e3f-4b6c-8d9e-8f7a6b5c4d32", "the client ID of the identity for writes",
            unset="not set (uses {MANAGED_IDENTITY_CLIENT_ID})"),
    Setting("AZURE_TENANT_ID", "tenant_id", _tenant, "no", "8b0e1f7a-3c2d-4e5f-9a1b-2c3d4e5f6a7b",
            "the tenant hint for the developer credential"),
    Setting("TIMER_SCHEDULE", "timer_schedule", _schedule, "for the timer", "0 */5 * * * *",
            "the timer's NCRONTAB schedule (read by the Functions host)",
            unset="not set (the host does not run a registered timer without it)"),
    Setting("TIMER_API_PATH", "timer_target", _timer_target, "for the timer", "/status",
            "the path under the API that the timer GETs"),
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}
_SETTING_REFERENCE = re.compile(r"\{([A-Z_]+)\}")


def check_connection_name(connection: str | None) -> str | None:
    """The connection's name as its settings spell it (upper case); None is the default connection."""
    if connection is None:
        return None
    if not isinstance(connection, str) or not _CONNECTION_NAME.fullmatch(connection):
        raise ValueError(f"A connection name is 1-32 letters and digits, starting with a letter: {connection!r}.")
    if connection.upper() == "HEALTH":
        # Its proxy's route, apim-health/{*path}, would also match the default connection's health route.
        raise ValueError("'health' cannot name a connection: its proxy would answer /api/apim-health too.")
    return connection.upper()


def setting_name(name: str, connection: str | None = None) -> str:
    """The app setting `name` (a default name, e.g. APIM_BASE_URL) of `connection`."""
    prefix = check_connection_name(connection)
    return name if prefix is None else f"{prefix}_{name}"


ROUTE_PREFIX = "apim"


def routes(connection: str | None = None) -> dict[str, str]:
    """The routes (under /api/) of a connection's blueprint: the proxy and health."""
    name = check_connection_name(connection)
    stem = ROUTE_PREFIX + (f"-{name.lower()}" if name else "")
    return {"proxy": f"{stem}/{{*path}}", "health": f"{stem}-health"}


@dataclass(frozen=True)
class Settings:
    apim_base_url: str
    api_app_id_uri: str
    subscription_key: str | None = None
    client_id: str | None = None
    write_client_id: str | None = None
    tenant_id: str | None = None
    timer_target: TimerTarget | None = None
    timer_schedule: str | None = None  # read by the Functions host (%TIMER_SCHEDULE%); checked and shown here
    connection: str | None = None  # the connection's name (upper case); None: the default connection

    @property
    def scope(self) -> str:
        return f"{self.api_app_id_uri}/.default"

    def name(self, default_name: str) -> str:
        """The full name of one of this connection's settings, for messages: name("APIM_BASE_URL")."""
        return setting_name(default_name, self.connection)

    def route(self, kind: str) -> str:
        """This connection's route, for messages: route("health") is "/api/apim-health" for the default one."""
        return "/api/" + routes(self.connection)[kind].removesuffix("/{*path}")

    def client_id_for(self, method: str) -> str | None:
        """The identity for a call: the writer for anything but a read, when one is set."""
        if method.upper() in READ_METHODS:
            return self.client_id
        return self.write_client_id or self.client_id

    @property
    def client_ids(self) -> set[str | None]:
        """Every identity the calls use (None: the default identity), each once."""
        return {self.client_id_for("GET"), self.client_id_for("POST")}

    def identity_setting_for(self, method: str) -> str:
        """The app setting that names the identity for `method`."""
        default = "MANAGED_IDENTITY_CLIENT_ID" if method.upper() in READ_METHODS else "MANAGED_IDENTITY_WRITE_CLIENT_ID"
        return self.name(default)

    def timer(self) -> TimerTarget:
        """What the timer calls; ConfigurationError naming the setting when it is not set."""
        if self.timer_target is None:
            name = self.name("TIMER_API_PATH")
            raise ConfigurationError([f"{name} is not set: {_BY_NAME['TIMER_API_PATH'].meaning}, e.g. /status."])
        return self.timer_target

    def summary(self) -> dict[str, object]:
        """What `health` shows: no secret values, only whether they are set."""
        shown: dict[str, object] = {}
        for setting in SETTINGS:
            if setting.field is None:
                continue
            value = getattr(self, setting.field)
            if setting.secret:
                text = "set" if value else "not set"
            else:
                text = str(value) if value else _SETTING_REFERENCE.sub(lambda m: self.name(m[1]), setting.unset)
            shown[self.name(setting.name)] = text
        return shown


def is_loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """localhost (a trailing dot or not), or any loopback address: 127.0.0.0/8, ::1 however it is written."""
    host = host.lower().removesuffix(".")
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None, connection: str | None = None) -> Settings:
    """Validate one connection's settings, raising ConfigurationError that lists every problem."""
    env = os.environ if environ is None else environ
    prefix = check_connection_name(connection)
    problems: list[str] = []
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        name = setting_name(setting.name, prefix)
        raw = env.get(name)
        value = raw.strip() if isinstance(raw, str) else ""
        if reference := _UNRESOLVED_REFERENCE.match(value):
            service, text, fix = _REFERENCE_FIXES[reference[1].lower()]
            problems.append(f"{name} is an unresolved {service} reference (the literal {text} text): "
                            f"the Function App could not read {fix}")
            continue
        if not value:
            if setting.required == "yes":
                problems.append(f"{name} is not set: {setting.meaning}, e.g. {setting.example}.")
            continue
        try:
            parsed = setting.parse(value)
        except InvalidValue as refusal:
            problems.append(f"{name} {_SETTING_REFERENCE.sub(lambda m: setting_name(m[1], prefix), str(refusal))}")
            continue
        if setting.field is not None:
            values[setting.field] = parsed
    if problems:
        raise ConfigurationError(problems)
    return Settings(**values, connection=prefix)
