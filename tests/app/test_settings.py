"""Settings: every missing or malformed value is named, with what a good one looks like."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import load_settings

GOOD = {
    "APIM_BASE_URL": "https://contoso.azure-api.net/orders/",
    "API_APP_ID_URI": "api://contoso-orders",
    "APIM_SUBSCRIPTION_KEY": "0123456789abcdef",
    "MANAGED_IDENTITY_CLIENT_ID": "0b7c6e3a-1f2d-4a5b-9c8d-7e6f5a4b3c21",
    "MANAGED_IDENTITY_WRITE_CLIENT_ID": "1c8d7f4b-2e3f-4b6c-8d9e-8f7a6b5c4d32",
    "TIMER_API_PATH": "/status",
}


def problems(**changes: str | None) -> list[str]:
    env = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env)
    return caught.value.problems


def test_good_settings_are_normalised():
    settings = load_settings(GOOD)
    assert settings.apim_base_url == "https://contoso.azure-api.net/orders"
    assert settings.scope == "api://contoso-orders/.default"
    assert settings.client_id_for("GET") == GOOD["MANAGED_IDENTITY_CLIENT_ID"]
    assert settings.client_id_for("post") == GOOD["MANAGED_IDENTITY_WRITE_CLIENT_ID"]


def test_writer_falls_back_to_the_reader_identity():
    settings = load_settings({**GOOD, "MANAGED_IDENTITY_WRITE_CLIENT_ID": ""})
    assert settings.client_id_for("DELETE") == GOOD["MANAGED_IDENTITY_CLIENT_ID"]
    assert settings.client_ids == {GOOD["MANAGED_IDENTITY_CLIENT_ID"]}  # one identity, one token source


def test_the_same_identity_in_another_letter_case_is_one_identity():
    reader = GOOD["MANAGED_IDENTITY_CLIENT_ID"]
    settings = load_settings({**GOOD, "MANAGED_IDENTITY_CLIENT_ID": reader.upper(),
                              "MANAGED_IDENTITY_WRITE_CLIENT_ID": reader})
    assert settings.client_ids == {reader}  # one token source, not two for one identity
    assert settings.client_id_for("GET") == settings.client_id_for("POST") == reader


def test_each_method_names_the_setting_of_its_identity():
    settings = load_settings(GOOD)
    assert settings.client_ids == {GOOD["MANAGED_IDENTITY_CLIENT_ID"], GOOD["MANAGED_IDENTITY_WRITE_CLIENT_ID"]}
    assert settings.identity_setting_for("head") == "MANAGED_IDENTITY_CLIENT_ID"
    assert settings.identity_setting_for("PATCH") == "MANAGED_IDENTITY_WRITE_CLIENT_ID"


def test_only_required_settings_are_required():
    settings = load_settings({"APIM_BASE_URL": GOOD["APIM_BASE_URL"], "API_APP_ID_URI": GOOD["API_APP_ID_URI"]})
    assert settings.subscription_key is None and settings.client_id is None


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("APIM_BASE_URL", None, "APIM_BASE_URL is not set"),
    ("APIM_BASE_URL", "contoso.azure-api.net/orders", "absolute https URL"),
    ("APIM_BASE_URL", "http://contoso.azure-api.net/orders", "must use https"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders?x=1", "must not contain"),
    ("API_APP_ID_URI", None, "API_APP_ID_URI is not set"),
    ("API_APP_ID_URI", "api://contoso-orders/.default", "must not end with '/.default'"),
    ("API_APP_ID_URI", "contoso-orders", "Application ID URI"),
    ("MANAGED_IDENTITY_CLIENT_ID", "not-a-guid", "MANAGED_IDENTITY_CLIENT_ID must be a GUID"),
    ("MANAGED_IDENTITY_WRITE_CLIENT_ID", "1234", "MANAGED_IDENTITY_WRITE_CLIENT_ID must be a GUID"),
    ("AZURE_TENANT_ID", "contoso.onmicrosoft.com", "AZURE_TENANT_ID must be a GUID"),
    ("TIMER_API_PATH", "status", "TIMER_API_PATH must start with '/'"),
    ("APIM_SUBSCRIPTION_KEY", "abc def", "APIM_SUBSCRIPTION_KEY contains spaces"),
])
def test_each_bad_setting_is_named(name, value, expected):
    found = problems(**{name: value})
    assert len(found) == 1
    assert expected in found[0]


def test_all_problems_are_reported_at_once():
    found = problems(APIM_BASE_URL=None, API_APP_ID_URI=None, MANAGED_IDENTITY_CLIENT_ID="x")
    assert len(found) == 3


def test_unresolved_key_vault_reference_is_recognised():
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-contoso.vault.azure.net/secrets/apim-key/)"
    found = problems(APIM_SUBSCRIPTION_KEY=reference)
    assert "APIM_SUBSCRIPTION_KEY is an unresolved Key Vault reference" in found[0]
    assert "Key Vault Secrets User" in found[0]


def test_a_bad_key_is_never_echoed():
    secret = "s3cret key with spaces"
    found = problems(APIM_SUBSCRIPTION_KEY=secret)
    assert secret not in " ".join(found)


def test_loopback_may_use_http():
    settings = load_settings({**GOOD, "APIM_BASE_URL": "http://127.0.0.1:8080/orders"})
    assert settings.apim_base_url.startswith("http://127.0.0.1")


def test_summary_shows_no_secret():
    summary = load_settings(GOOD).summary()
    assert GOOD["APIM_SUBSCRIPTION_KEY"] not in str(summary)
    assert summary["APIM_SUBSCRIPTION_KEY"] == "set"
