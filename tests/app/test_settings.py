"""Settings: every missing or malformed value is named, with what a good one looks like."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ConfigurationError
from shared.paths import build_url
from shared.settings import SETTINGS, Settings, load_settings, setting_name

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
    ("AZURE_TENANT_ID", "contoso", "AZURE_TENANT_ID must be a GUID"),
    ("AZURE_TENANT_ID", "contoso..com", "AZURE_TENANT_ID must be a GUID"),
    ("TIMER_API_PATH", "status", "TIMER_API_PATH must be a path under the API that starts with '/'"),
    ("APIM_SUBSCRIPTION_KEY", "abc def", "APIM_SUBSCRIPTION_KEY contains spaces"),
    # What Python's URL parser rejects, and what would let a call leave the API's prefix.
    ("APIM_BASE_URL", "https://[::1/orders", "Python's URL parser rejects it"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net:99999/orders", "Python's URL parser rejects it"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net:port/orders", "Python's URL parser rejects it"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders?", "must not contain a query or a fragment"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders#", "must not contain a query or a fragment"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders/..", "'.' or '..' segments"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders/%2e%2e/admin", "'.' or '..' segments"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders/%252e%252e", "'.' or '..' segments"),
    ("APIM_BASE_URL", "https://@contoso.azure-api.net/orders", "must not contain credentials"),
    ("APIM_BASE_URL", "https://user:pw@contoso.azure-api.net/orders", "must not contain credentials"),
    ("API_APP_ID_URI", "api://contoso-orders/.default/", "must not end with '/.default'"),
    ("API_APP_ID_URI", "api://", "Application ID URI"),
    ("API_APP_ID_URI", "https:///", "Application ID URI"),
    ("MANAGED_IDENTITY_CLIENT_ID", "urn:uuid:0b7c6e3a-1f2d-4a5b-9c8d-7e6f5a4b3c21", "must be a GUID"),
    ("MANAGED_IDENTITY_CLIENT_ID", "0b7c6e3a1f2d-4a5b-9c8d-7e6f-5a4b3c21", "must be a GUID"),
    ("MANAGED_IDENTITY_CLIENT_ID", "{0b7c6e3a-1f2d-4a5b-9c8d-7e6f5a4b3c21}", "must be a GUID"),
    ("AZURE_TENANT_ID", "8b0e1f7a3c2d4e5f9a1b2c3d4e5f6a7b", "AZURE_TENANT_ID must be a GUID"),
    ("TIMER_API_PATH", "/", "TIMER_API_PATH must be a path under the API"),
    ("TIMER_API_PATH", "/../status", "TIMER_API_PATH must be a path under the API"),
    ("TIMER_API_PATH", "//evil.example/status", "TIMER_API_PATH must be a path under the API"),
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


def test_the_timer_path_query_is_kept_apart_from_the_path():
    settings = load_settings({**GOOD, "TIMER_API_PATH": "/orders?top=2&status=open"})
    assert (settings.timer().path, settings.timer().query) == ("/orders", "top=2&status=open")


def test_a_missing_timer_path_is_named_when_the_timer_asks():
    named = {f"INVENTORY_{name}": value for name, value in GOOD.items() if name != "TIMER_API_PATH"}
    settings = load_settings(named, connection="inventory")
    with pytest.raises(ConfigurationError, match="INVENTORY_TIMER_API_PATH is not set"):
        settings.timer()


NAMED = {f"INVENTORY_{name}": value for name, value in GOOD.items()}


def test_a_named_connection_reads_its_own_settings_only():
    settings = load_settings({**NAMED, "INVENTORY_APIM_BASE_URL": "https://contoso.azure-api.net/inventory",
                              "APIM_BASE_URL": "https://other.example/x"}, connection="inventory")
    assert settings.apim_base_url == "https://contoso.azure-api.net/inventory"
    assert settings.connection == "INVENTORY"
    assert settings.identity_setting_for("POST") == "INVENTORY_MANAGED_IDENTITY_WRITE_CLIENT_ID"
    assert set(settings.summary()) == {f"INVENTORY_{s.name}" for s in SETTINGS if s.field}


def test_a_named_connections_problems_name_its_full_setting_names():
    with pytest.raises(ConfigurationError) as caught:
        load_settings({**GOOD, "INVENTORY_MANAGED_IDENTITY_CLIENT_ID": "x"}, connection="inventory")
    found = " ".join(caught.value.problems)
    assert "INVENTORY_APIM_BASE_URL is not set" in found
    assert "INVENTORY_API_APP_ID_URI is not set" in found
    assert "INVENTORY_MANAGED_IDENTITY_CLIENT_ID must be a GUID" in found
    assert len(caught.value.problems) == 3


def test_the_default_connection_keeps_the_documented_names():
    assert [s.name for s in SETTINGS] == ["APIM_BASE_URL", "API_APP_ID_URI", "APIM_SUBSCRIPTION_KEY",
                                          "MANAGED_IDENTITY_CLIENT_ID", "MANAGED_IDENTITY_WRITE_CLIENT_ID",
                                          "AZURE_TENANT_ID", "TIMER_SCHEDULE", "TIMER_API_PATH"]
    assert setting_name("APIM_BASE_URL") == "APIM_BASE_URL"
    assert setting_name("APIM_BASE_URL", "inventory") == "INVENTORY_APIM_BASE_URL"


def test_the_readme_settings_table_is_the_settings_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## App settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", section, re.MULTILINE)
    documented = {name: required.strip() for name, required in rows}
    for setting in SETTINGS:
        assert documented.get(setting.name) == setting.required, setting.name


# Hosts made of the labels that DNS, IDNA or yarl refuse (empty, 64 characters, U+200B) and ones they take.
_LABELS = st.sampled_from(["contoso", "", "a" * 63, "a" * 64, "xn--", "xn--9ca", "-a", "a-", "a_b", "é", "ß",
                           "\u200b", "a\u200bb", "%41", "a b", "\x00", "1", "[::1]", "127.0.0.1", "\ufeff", "\uff0e"])
_HOSTS = st.lists(_LABELS, min_size=1, max_size=4).map(".".join)
ODD_BASE_URLS = st.builds("{}://{}{}/orders".format, st.sampled_from(["https", "http"]), _HOSTS,
                       st.sampled_from(["", ":443", ":0", ":8080"]))
# Values drawn from the characters settings are made of, plus the ones that break parsers.
SETTING_VALUES = st.one_of(
    ODD_BASE_URLS,
    st.text(alphabet=st.sampled_from("abcAZ09-_.:/?#@[]%\\{}~ \t\n\x00\ufeff\ud800é"), max_size=40),
    st.sampled_from(["https://", "https://[", "http://[::1", "https://h:0", "https://h:65536/x", "api://",
                     "/%2e%2e", "urn:uuid:", "@Microsoft.KeyVault(x)"]).flatmap(
        lambda head: st.text(max_size=12).map(lambda tail: head + tail)),
)


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(name=st.sampled_from([s.name for s in SETTINGS]), value=SETTING_VALUES,
       connection=st.sampled_from([None, "inventory"]))
def test_any_value_gives_settings_or_a_configuration_error_naming_it(name, value, connection):
    full = setting_name(name, connection)
    env = {setting_name(k, connection): v for k, v in GOOD.items()}
    env[full] = value
    try:
        loaded = load_settings(env, connection=connection)
    except ConfigurationError as error:
        assert error.problems and all(p.startswith(full + " ") for p in error.problems), error.problems
    else:
        assert isinstance(loaded, Settings)
        loaded.summary()
        _call_url(loaded.apim_base_url)


def _call_url(base_url: str) -> None:
    """What a call does with an accepted base URL before it sends: none of it may fail."""
    url = yarl.URL(build_url(base_url, "/status"))  # aiohttp parses the URL with yarl
    host = url.raw_host or ""
    if not host.startswith("[") and ":" not in host:
        host.encode("idna")  # the resolver (socket.getaddrinfo) encodes a name so


@pytest.mark.parametrize("value", ["https://a..b/orders", f"https://{'a' * 64}.azure-api.net/orders",
                                   "https://contoso\u200b.azure-api.net/orders", "https://.contoso.net/orders",
                                   "https://contoso.net/\ud800", f"https://{'a.' * 127}net/orders"])
@pytest.mark.parametrize("connection", [None, "inventory"])
def test_a_base_url_a_call_could_not_use_is_refused_naming_the_setting(value, connection):
    name = setting_name("APIM_BASE_URL", connection)
    env = {setting_name(k, connection): v for k, v in GOOD.items()}
    env[name] = value
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env, connection=connection)
    [problem] = caught.value.problems
    assert problem.startswith(f"{name} ") and value not in problem, problem


@pytest.mark.parametrize("value", ["https://contoso.azure-api.net/orders", "https://é.example/orders",
                                   "https://a_b.azure-api.net/x", f"https://{'a' * 63}.net/x", "http://[::1]:8080/x",
                                   "https://10.0.0.4/orders", "https://contoso.azure-api.net./orders"])
def test_a_base_url_a_call_can_use_is_accepted(value):
    _call_url(load_settings({**GOOD, "APIM_BASE_URL": value}).apim_base_url)


@pytest.mark.parametrize(("name", "value", "said"), [
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders\u200b", "U+200B at position 37"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/my orders", "U+0020"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders\nx", "U+000A"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/\ufefforders", "U+FEFF"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net:0/orders", "its port is 0"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net//orders", "empty path segment"),
    ("APIM_BASE_URL", "https://contoso.azure-api.net/orders%00", "control character"),
    ("API_APP_ID_URI", "api://contoso-orders\u200b", "U+200B"),
    ("API_APP_ID_URI", "api://contoso orders", "U+0020"),
    ("APIM_SUBSCRIPTION_KEY", '"0123456789abcdef"', "in quotes"),
    ("APIM_SUBSCRIPTION_KEY", "'0123456789abcdef'", "in quotes"),
])
def test_copy_and_paste_artefacts_are_refused_before_a_call_fails_on_them(name, value, said):
    # Each of these once passed validation and failed only at call time: a 404, a refused token, a 401.
    [problem] = problems(**{name: value})
    assert problem.startswith(f"{name} ") and said in problem, problem
    assert "0123456789abcdef" not in problem  # never the key


@pytest.mark.parametrize(("name", "value"), [("APIM_SUBSCRIPTION_KEY", '"x'), ("APIM_SUBSCRIPTION_KEY", "a'b'"),
                                             ("APIM_BASE_URL", "https://contoso.azure-api.net/orders/v%C3%A9"),
                                             ("APIM_BASE_URL", "https://contoso.azure-api.net:8443/orders")])
def test_values_like_them_that_are_fine_are_kept(name, value):
    load_settings({**GOOD, name: value})
