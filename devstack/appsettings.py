"""Turn a running stack's `endpoints.json` into the function app's settings.

One mapping, used by `python -m devstack settings|env|up`, the demo and the
tests, so that they all configure the app the same way. The setting names are
those in the README's "App settings" table.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from shared.settings import SETTINGS, is_loopback_host, setting_name
from shared.telemetry import LIVE_METRICS_SETTING

DEFAULT_IDENTITY = "reader"
DEFAULT_WRITE_IDENTITY = "writer"
# The identity the exporter sends telemetry with: in Azure the host's identity, which holds
# Monitoring Metrics Publisher on Application Insights (infra/modules/rbac.bicep).
DEFAULT_TELEMETRY_IDENTITY = "host"
DEFAULT_TIMER_SCHEDULE = "0 */5 * * * *"  # NCRONTAB (with seconds): every five minutes
DEFAULT_TIMER_API_PATH = "/status"

# The stand-in is offline: keep the Azure Monitor exporter from calling
# Microsoft's own endpoints. Statsbeat reports to a fixed Azure host and the
# OneSettings control plane polls settings.sdk.monitor.azure.com; customer
# SDK stats would only add noise to the stand-in's telemetry. Outside Azure the
# distro's VM resource detector asks the VM metadata endpoint (169.254.169.254)
# for 0.2 s on the first invocation; in Functions it skips that, and so does the stand-in.
# Live Metrics pings Azure's own host unless the connection string names a
# LiveEndpoint: the app's own setting turns it off (shared.telemetry).
OFFLINE_EXPORTER_SETTINGS = {
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_app_service",
    LIVE_METRICS_SETTING: "false",
}


# The distro samples traces at 5 per second by default, and that rate limiter
# starts from an empty window: right after start-up it drops most spans. Locally
# every trace should show, so the stand-in's settings keep them all.
LOCAL_SAMPLING_SETTINGS = {"OTEL_TRACES_SAMPLER": "always_on"}


# Settings a developer may have changed on purpose: updating an existing local.settings.json
# adds them when missing but never replaces them. Every other setting the stand-in writes is
# its own (endpoints, header, key, client IDs, ...) and is replaced with the running stack's.
KEPT_IF_SET = frozenset({"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "TIMER_SCHEDULE", "TIMER_API_PATH",
                         "OTEL_TRACES_SAMPLER"})
_TIMER_SETTINGS = ("TIMER_SCHEDULE", "TIMER_API_PATH")


def _kept_if_set(endpoints: Mapping[str, Any]) -> frozenset[str]:
    """KEPT_IF_SET, and each further connection's own timer settings (INVENTORY_TIMER_SCHEDULE, ...)."""
    return KEPT_IF_SET | {setting_name(name, connection) for connection in endpoints.get("apis", {})
                          for name in _TIMER_SETTINGS}


# What the timer of each further API connection GETs.
EXTRA_API_TIMER_PATHS = {"inventory": "/items"}


def connection_settings(endpoints: Mapping[str, Any], api: Mapping[str, Any], identity: str, write_identity: str, *,
                        connection: str | None = None, timer_schedule: str = DEFAULT_TIMER_SCHEDULE,
                        timer_api_path: str = DEFAULT_TIMER_API_PATH) -> dict[str, str]:
    """One API connection's settings, named by the app's own table (`shared.settings.SETTINGS`)."""
    values = {
        "APIM_BASE_URL": api["apim_base_url"],
        "API_APP_ID_URI": api["api_app_id_uri"],
        "APIM_SUBSCRIPTION_KEY": endpoints.get("subscription_key"),  # optional: an API may not require a key
        "MANAGED_IDENTITY_CLIENT_ID": _client_id(endpoints, identity),
        "MANAGED_IDENTITY_WRITE_CLIENT_ID": _client_id(endpoints, write_identity),
        "AZURE_TENANT_ID": endpoints["tenant_id"],
        "TIMER_SCHEDULE": timer_schedule,
        "TIMER_API_PATH": timer_api_path,
    }
    # A setting the table gains and this writer does not know fails here, not in a user's app.
    return {setting_name(s.name, connection): values[s.name] for s in SETTINGS if values[s.name]}


class UnknownIdentity(ValueError):
    """The identity name is not in the stack's `identities`."""


def _client_id(endpoints: Mapping[str, Any], name: str) -> str:
    identities = endpoints["identities"]
    if name not in identities:
        raise UnknownIdentity(f"unknown identity '{name}'; the stack has: {', '.join(sorted(identities))}")
    return identities[name]["client_id"]


def app_settings(endpoints: Mapping[str, Any], identity: str = DEFAULT_IDENTITY, *,
                 timer_schedule: str = DEFAULT_TIMER_SCHEDULE,
                 timer_api_path: str = DEFAULT_TIMER_API_PATH,
                 telemetry_identity: str = DEFAULT_TELEMETRY_IDENTITY) -> dict[str, str]:
    """The app settings that point the function app at the stack described by `endpoints`.

    With the default `reader`, non-GET calls use the `writer` identity, the
    least-privilege pair the template recommends. Any other identity is used for
    every call (so `unassigned` shows what a missing role assignment looks like).
    Telemetry is sent as in Azure: Entra-authenticated, with a token the exporter
    gets through the managed-identity endpoint for `telemetry_identity` (a stack
    whose config has no such identity gets no APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
    """
    write_identity = DEFAULT_WRITE_IDENTITY if identity == DEFAULT_IDENTITY else identity
    settings = {
        "IDENTITY_ENDPOINT": endpoints["identity_endpoint"],
        "IDENTITY_HEADER": endpoints["identity_header"],
        **connection_settings(endpoints, endpoints, identity, write_identity, timer_schedule=timer_schedule,
                              timer_api_path=timer_api_path),
        "APPLICATIONINSIGHTS_CONNECTION_STRING": endpoints["connection_string"],
        **OFFLINE_EXPORTER_SETTINGS,
        **LOCAL_SAMPLING_SETTINGS,
    }
    for name, api in (endpoints.get("apis") or {}).items():
        settings.update(connection_settings(endpoints, api, identity, write_identity, connection=name,
                                            timer_schedule=timer_schedule,
                                            timer_api_path=EXTRA_API_TIMER_PATHS.get(name, timer_api_path)))
    if telemetry_identity in endpoints["identities"]:
        settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] = (
            f"ClientId={_client_id(endpoints, telemetry_identity)};Authorization=AAD")
    if endpoints.get("ca_bundle"):
        # Ingestion is served over HTTPS with the stand-in's own CA (devstack/tls.py).
        settings["REQUESTS_CA_BUNDLE"] = endpoints["ca_bundle"]
    return settings


def local_settings(endpoints: Mapping[str, Any], identity: str = DEFAULT_IDENTITY) -> dict[str, Any]:
    """A Core Tools `local.settings.json` document for `func start` against the stack."""
    return {
        "IsEncrypted": False,
        "Values": {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            # Timer triggers keep their schedule state in storage: run Azurite locally.
            # (No AzureWebJobsFeatureFlags: worker indexing for the v2 model is on by
            # default since Core Tools 4.21.)
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            **app_settings(endpoints, identity),
        },
    }


def update_local_settings(document: Mapping[str, Any], endpoints: Mapping[str, Any],
                          identity: str = DEFAULT_IDENTITY) -> dict[str, Any]:
    """`document` (an existing local.settings.json) pointed at the stack; everything else is kept."""
    fresh = local_settings(endpoints, identity)["Values"]
    values = dict(document.get("Values") or {})
    kept = _kept_if_set(endpoints)
    for name, value in fresh.items():
        if name in kept:
            values.setdefault(name, value)
        else:
            values[name] = value
    if "APIM_SUBSCRIPTION_KEY" not in fresh:  # this stack's API takes no key: a stale one would mislead
        values.pop("APIM_SUBSCRIPTION_KEY", None)
    return {**document, "IsEncrypted": False, "Values": values}


def azure_reason(values: Mapping[str, Any]) -> str | None:
    """Why these settings point at something other than a stand-in on loopback, or None."""
    for name, value in values.items():
        if ("APIM_BASE_URL" in name or name == "IDENTITY_ENDPOINT") and isinstance(value, str) and value \
                and not is_loopback_url(value):
            return f"{name} is {value}, not a loopback address"
    connection = values.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if isinstance(connection, str) and connection.strip():
        ingestion = _connection_string_part(connection, "IngestionEndpoint")
        if not ingestion or not is_loopback_url(ingestion):
            return "APPLICATIONINSIGHTS_CONNECTION_STRING sends telemetry to Azure, not to a loopback address"
    if values.get("APIM_BASE_URL") and not values.get("IDENTITY_ENDPOINT"):
        return ("it sets APIM_BASE_URL but no IDENTITY_ENDPOINT, as a laptop-against-Azure file does "
                "(the app then signs in with your developer credential)")
    return None


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urllib.parse.urlsplit(url.strip()).hostname or "")


def _connection_string_part(connection: str, key: str) -> str:
    for part in connection.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == key.lower():
            return value.strip()
    return ""
