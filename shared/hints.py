"""Explain APIM refusals (401, 403, 415) from what we sent and what came back.

We hold the token we sent, so its claims say more than APIM's one-line message:
which identity it was, which audience, which roles. Only non-secret claims are
read (see `shared.tokens.describe_token`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .redaction import scrub
from .settings import Settings
from .tokens import Renewal

__all__ = ["apim_message", "content_type_hint", "hint_for", "is_subscription_key_refusal"]

# Longer than any error APIM writes itself: a bigger body is the API's, and not worth parsing for a message.
MAX_PARSED_BODY = 64 * 1024


def apim_message(body: bytes, secrets: Iterable[str | None] = ()) -> str:
    """APIM's error message from a `{"statusCode": …, "message": …}` body, if that is what it is.

    Scrubbed (`shared.redaction`): it goes into our error message, logs and telemetry.
    """
    if len(body) > MAX_PARSED_BODY:
        return ""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError), or nested too deeply
        return ""
    if not isinstance(data, dict):
        return ""
    message = data.get("message")
    error = data.get("error")
    if not message and isinstance(error, dict):
        message = error.get("message")
    return scrub(str(message or ""), secrets)[:300]  # scrubbed first: a cap could cut a secret in two


def is_subscription_key_refusal(body: bytes) -> bool:
    """Whether APIM's 401 is about the subscription key (missing or invalid), not the token.

    APIM says so in its message ("Access denied due to missing subscription key…",
    "…invalid subscription key…"); a new token cannot fix that, so none is asked for.
    """
    return "subscription key" in apim_message(body).lower()


def content_type_hint(content_type: str | None) -> str:
    """For a 415: what was sent, and what the API takes."""
    return (f"The API does not accept the request's content type ({content_type or 'none'}). Send the body as "
            "JSON with 'Content-Type: application/json'.")


def hint_for(status: int, message: str, *, method: str, claims: dict[str, Any], settings: Settings,
             renewal: Renewal = Renewal.NONE, renew_interval: float = 300) -> str:
    """For a 401 or 403: the subscription key, the token, or the identity's app roles."""
    lowered = message.lower()
    if "subscription key" in lowered:
        return _subscription_key_hint(lowered, settings)
    identity = claims.get("azp") or claims.get("appid") or settings.client_id_for(method) or "(default identity)"
    roles = claims.get("roles") or []
    if status == 401:
        return _token_hint(identity, claims, settings) + " " + _renewal_note(renewal, renew_interval, settings)
    if not claims:
        return (f"APIM refused identity {identity} for {method.upper()}: it most likely lacks the app role this "
                f"operation requires on {settings.api_app_id_uri}.")
    which = settings.identity_setting_for(method)
    if not roles:
        return (f"Identity {identity} has no app role on the API {settings.api_app_id_uri}: assign it a role "
                f"(an appRoleAssignedTo on the API's service principal; infra/ does this). {_role_lag(settings)} "
                f"Meanwhile, set {which} to an identity that already has the role.")
    return (f"Identity {identity} has roles {roles} on {settings.api_app_id_uri}, but APIM requires another role "
            f"for {method.upper()}. Assign the required role, or set {which} to an identity that has it. "
            + _role_lag(settings))


# Managed-identity tokens are cached by the platform (App Service, IMDS) for up to 24 hours, and it
# cannot be made to refresh: a role assigned now is in the token only once the cached one expires.
def _role_lag(settings: Settings) -> str:
    return ("A role assigned or removed shows only in a token issued after it: Azure caches a managed "
            f"identity's token for up to 24 hours, and {_token_probe(settings)} shows when the current one was "
            "issued and when it expires.")


def _token_probe(settings: Settings) -> str:
    """The connection's health route that shows its token's claims."""
    return settings.route("health") + "?probe=token"


def _renewal_note(renewal: Renewal, interval: float, settings: Settings) -> str:
    every = f"The app asks for a new token after a 401 at most once every {interval:g} s per identity"
    if renewal is Renewal.UNCHANGED:
        return (f"{every}; the identity endpoint handed back the same token, so it was not sent again: Azure "
                "caches a managed identity's token for up to 24 hours, so a role assigned or an audience changed "
                "recently shows only in a later token. Meanwhile, wait for the token to expire (see "
                f"{_token_probe(settings)}), or use an identity whose token is already right.")
    if renewal is Renewal.FAILED:
        return f"{every}; getting a new one failed (see the log)."
    if renewal is Renewal.RENEWED:
        return f"{every}; a new token was refused as well."
    return every + "."


def _subscription_key_hint(message: str, settings: Settings) -> str:
    if "missing" in message or not settings.subscription_key:
        return (f"The API requires an APIM subscription key: set {settings.name('APIM_SUBSCRIPTION_KEY')} (in Azure, "
                "a Key Vault reference to the subscription's key).")
    return (f"{settings.name('APIM_SUBSCRIPTION_KEY')} is not a valid key for an active subscription to this API: "
            "it may have been regenerated, or belong to another product or APIM instance.")


def _token_hint(identity: str, claims: dict[str, Any], settings: Settings) -> str:
    if not claims:
        return ("APIM rejected the token. Check that the identity exists and is assigned to this app, and that "
                f"{settings.name('API_APP_ID_URI')} matches the API's app registration.")
    audience = claims.get("aud")
    asked = settings.api_app_id_uri
    if isinstance(audience, str) and _is_uri(audience) and audience.rstrip("/") != asked.rstrip("/"):
        # Entra puts the App ID URI asked for in a v1 token's aud (a v2 token has the API's client ID).
        return (f"APIM rejected the token of identity {identity}: its audience is {audience!r}, but the app asked "
                f"for {asked!r} ({settings.name('API_APP_ID_URI')}). The identity endpoint answered for another "
                "resource: on a laptop, check which endpoint IDENTITY_ENDPOINT names.")
    return (f"APIM rejected the token of identity {identity} (audience {audience!r}, tenant {claims.get('tid')!r}). "
            f"If the audience is not the API's ({settings.api_app_id_uri!r} or its client ID), fix "
            f"{settings.name('API_APP_ID_URI')}; "
            "otherwise check validate-azure-ad-token in the API policy: its tenant, its audiences, and that "
            f"{identity} is one of its client-application-ids.")


def _is_uri(audience: str) -> bool:
    """An App ID URI (api://…, https://…), not a client ID: what Entra puts in a v1 token's aud."""
    return "://" in audience
