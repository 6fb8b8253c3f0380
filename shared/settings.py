"""App settings (the README's table): read and validated once, every problem named.

`load_settings()` never raises on import paths; callers decide when a bad
setting matters (the `health` function reports it, the others fail with it).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import ConfigurationError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_KEY_VAULT_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\(", re.IGNORECASE)


# Calls that only read: made with MANAGED_IDENTITY_CLIENT_ID; any other method may use the writer.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Settings:
    apim_base_url: str
    api_app_id_uri: str
    subscription_key: str | None = None
    client_id: str | None = None
    write_client_id: str | None = None
    tenant_id: str | None = None
    timer_api_path: str | None = None

    @property
    def scope(self) -> str:
        return f"{self.api_app_id_uri}/.default"

    def client_id_for(self, method: str) -> str | None:
        """The identity for a call: the writer for anything but a read, when one is set."""
        if method.upper() in READ_METHODS:
            return self.client_id
        return self.write_client_id or self.client_id

    @property
    def client_ids(self) -> set[str | None]:
        """Every identity the calls use (None: the default identity), each once."""
        return {self.client_id_for("GET"), self.client_id_for("POST")}

    @staticmethod
    def identity_setting_for(method: str) -> str:
        """The app setting that names the identity for `method`."""
        return "MANAGED_IDENTITY_CLIENT_ID" if method.upper() in READ_METHODS else "MANAGED_IDENTITY_WRITE_CLIENT_ID"

    def summary(self) -> dict[str, object]:
        """What `health` shows: no secret values, only whether they are set."""
        return {
            "APIM_BASE_URL": self.apim_base_url,
            "API_APP_ID_URI": self.api_app_id_uri,
            "APIM_SUBSCRIPTION_KEY": "set" if self.subscription_key else "not set",
            "MANAGED_IDENTITY_CLIENT_ID": self.client_id or "not set (system-assigned or developer credential)",
            "MANAGED_IDENTITY_WRITE_CLIENT_ID": self.write_client_id or "not set (uses MANAGED_IDENTITY_CLIENT_ID)",
            "AZURE_TENANT_ID": self.tenant_id or "not set",
            "TIMER_API_PATH": self.timer_api_path or "not set",
        }


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Validate the app settings, raising ConfigurationError that lists every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    unresolved: set[str] = set()

    def read(name: str) -> str | None:
        value = (env.get(name) or "").strip()
        if not value:
            return None
        if _KEY_VAULT_REFERENCE.match(value):
            problems.append(
                f"{name} is an unresolved Key Vault reference (the literal '@Microsoft.KeyVault(...)' text): "
                "the Function App could not read the secret. Grant the identity in keyVaultReferenceIdentity "
                "the 'Key Vault Secrets User' role and check the secret URI."
            )
            unresolved.add(name)
            return None
        return value

    def required(name: str, check: Callable[[str | None, list[str]], str | None]) -> str | None:
        value = read(name)
        if name in unresolved:
            return None  # reported as an unresolved reference: "not set" would send the reader elsewhere
        return check(value, problems)

    base_url = required("APIM_BASE_URL", _check_base_url)
    app_id_uri = required("API_APP_ID_URI", _check_app_id_uri)
    key = read("APIM_SUBSCRIPTION_KEY")
    if key and not re.fullmatch(r"[\x21-\x7e]+", key):
        problems.append("APIM_SUBSCRIPTION_KEY contains spaces or non-printable characters: paste the key alone.")
    client_id = _check_guid("MANAGED_IDENTITY_CLIENT_ID", read("MANAGED_IDENTITY_CLIENT_ID"), problems)
    write_id = _check_guid("MANAGED_IDENTITY_WRITE_CLIENT_ID", read("MANAGED_IDENTITY_WRITE_CLIENT_ID"), problems)
    tenant_id = _check_guid("AZURE_TENANT_ID", read("AZURE_TENANT_ID"), problems)
    timer_path = read("TIMER_API_PATH")
    if timer_path and not timer_path.startswith("/"):
        problems.append("TIMER_API_PATH must start with '/', e.g. /status.")

    if problems:
        raise ConfigurationError(problems)
    assert base_url and app_id_uri  # both reported above when missing
    return Settings(
        apim_base_url=base_url,
        api_app_id_uri=app_id_uri,
        subscription_key=key,
        client_id=client_id,
        write_client_id=write_id,
        tenant_id=tenant_id,
        timer_api_path=timer_path,
    )


def _check_base_url(value: str | None, problems: list[str]) -> str | None:
    example = "e.g. https://contoso.azure-api.net/orders"
    if value is None:
        problems.append(f"APIM_BASE_URL is not set: the API's base URL on the APIM gateway, {example}.")
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        # Never the value itself: a misplaced secret must not reach health output or logs.
        found = f"its scheme is {parts.scheme!r}" if parts.scheme not in ("", "https", "http") else (
            "it has no host" if parts.scheme else "it does not start with https://")
        problems.append(f"APIM_BASE_URL must be an absolute https URL, {example} ({found}).")
        return None
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        problems.append("APIM_BASE_URL must use https: bearer tokens are only sent over TLS (or to loopback).")
        return None
    if parts.username or parts.password or parts.query or parts.fragment:
        problems.append(f"APIM_BASE_URL must not contain credentials, a query or a fragment, {example}.")
        return None
    return value.rstrip("/")


def _check_app_id_uri(value: str | None, problems: list[str]) -> str | None:
    example = "e.g. api://contoso-orders"
    if value is None:
        problems.append(f"API_APP_ID_URI is not set: the Application ID URI of the API's app registration, {example}.")
        return None
    if value.endswith("/.default"):
        problems.append(f"API_APP_ID_URI must not end with '/.default' (the app adds it), {example}.")
        return None
    if not (value.startswith(("api://", "https://")) or _is_guid(value)):
        problems.append(f"API_APP_ID_URI must be an Application ID URI (api://… or https://…) or a client ID, "
                        f"{example}.")
        return None
    return value.rstrip("/")


def _check_guid(name: str, value: str | None, problems: list[str]) -> str | None:
    if value is not None and not _is_guid(value):
        found = "that is a resource ID: use the identity's client ID" if value.startswith("/subscriptions/") else (
            "the value set is not one")
        problems.append(f"{name} must be a GUID such as 00000000-0000-0000-0000-000000000000 ({found}).")
        return None
    # Lower case: the same identity written in another case is the same identity (one token source).
    return value.lower() if value is not None else None


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36
