"""Settings in the forms Azure and its tools write them: each accepted, or refused naming the setting."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from devstack.invocation import timer_request
from shared import blueprint
from shared.errors import ConfigurationError
from shared.settings import load_settings
from tests.plugin import FUNCTIONS, http_request, invocation_context

proxy, health, timer = FUNCTIONS["apim_proxy"], FUNCTIONS["apim_health"], FUNCTIONS["apim_timer"]
GOOD = {"APIM_BASE_URL": "https://contoso.azure-api.net/orders", "API_APP_ID_URI": "api://contoso-orders"}


async def health_report() -> tuple[int, dict]:
    response = await health(http_request("GET", "health"), invocation_context("apim_health"))
    return response.status_code, json.loads(response.get_body())


@pytest.mark.parametrize("value", ["every 5 minutes", "0 */5 * * *  * *", "0 */5 * * * ;"])
async def test_a_timer_schedule_the_host_cannot_read_is_named_by_health(use_stack, value):
    await use_stack("reader", TIMER_SCHEDULE=value)
    status, report = await health_report()
    [problem] = report["error"]["problems"]
    assert status == 503 and problem.startswith("TIMER_SCHEDULE must be an NCRONTAB expression"), report


@pytest.mark.parametrize(("value", "shown"), [(None, "not set (the host does not run a registered timer without it)"),
                                              ("0 */5 * * * *", "0 */5 * * * *"),
                                              ("*/5 * * * *", "*/5 * * * *"), ("00:05:00", "00:05:00")])
async def test_health_shows_the_timer_schedule(use_stack, value, shown):
    await use_stack("reader", TIMER_SCHEDULE=value)
    status, report = await health_report()
    assert (status, report["settings"]["TIMER_SCHEDULE"]) == (200, shown)


async def test_an_invisible_character_in_the_timer_path_is_refused_up_front(use_stack):
    await use_stack("reader", TIMER_API_PATH="/sta\u200btus")  # it would be a 404 that looks like /status
    status, report = await health_report()
    [problem] = report["error"]["problems"]
    assert status == 503 and problem.startswith("TIMER_API_PATH contains") and "U+200B" in problem
    with pytest.raises(ConfigurationError, match="U\\+200B"):
        await timer(timer_request(past_due=False), invocation_context("apim_timer"))


@pytest.mark.parametrize("tenant", ["contoso.onmicrosoft.com", "Contoso.com", "72F988BF-86F1-41AF-91AB-2D7CD011DB47"])
async def test_a_tenant_as_a_domain_or_a_guid_is_taken(use_stack, tenant):
    await use_stack("reader", AZURE_TENANT_ID=tenant)
    assert (await proxy(http_request("GET", "status"), invocation_context())).status_code == 200


@pytest.mark.parametrize("url", ["http://127.0.0.2:8080/orders", "http://[0:0:0:0:0:0:0:1]:8080/orders",
                                 "http://LOCALHOST.:8080/orders", "http://[::1]:8080/orders"])
def test_any_loopback_address_may_use_http(url):
    assert load_settings({**GOOD, "APIM_BASE_URL": url}).apim_base_url == url


@pytest.mark.parametrize("url", ["http://127.0.0.1.example.com/orders", "http://localhost.example/orders",
                                 "http://10.0.0.1/orders", "http://[::2]/orders"])
def test_any_other_host_must_use_https(url):
    with pytest.raises(ConfigurationError, match="APIM_BASE_URL must use https"):
        load_settings({**GOOD, "APIM_BASE_URL": url})


def test_an_unresolved_app_configuration_reference_is_named_with_its_fix():
    reference = "@Microsoft.AppConfiguration(Endpoint=https://appcs-contoso.azconfig.io; Key=apim-key)"
    with pytest.raises(ConfigurationError) as raised:
        load_settings({**GOOD, "APIM_SUBSCRIPTION_KEY": reference})
    [problem] = raised.value.problems
    assert problem.startswith("APIM_SUBSCRIPTION_KEY is an unresolved App Configuration reference")
    assert "App Configuration Data Reader" in problem and "apim-key" not in problem


@pytest.mark.parametrize("name", ["health", "Health", "HEALTH"])
def test_health_cannot_name_a_connection_whose_proxy_would_take_the_health_route(name):
    with pytest.raises(ValueError, match="cannot name a connection"):
        func.FunctionApp().register_functions(blueprint(name))
