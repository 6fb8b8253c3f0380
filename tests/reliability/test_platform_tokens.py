"""The app against Azure's managed-identity behaviour: one cached platform token per identity, roles that lag.

The identity stand-in, like App Service and IMDS, hands the same token to every
request for an identity and resource (a request that bypasses azure-identity's
cache included) until its cache rolls over; a role assigned meanwhile shows only
in the next token it mints.
"""

from __future__ import annotations

import asyncio
import json

from shared import runtime
from tests.plugin import FUNCTIONS, http_request, invocation_context
from tests.reliability.conftest import error_of, eventually
from tests.reliability.test_faults import counts, get, post

health = FUNCTIONS["apim_health"]


async def probe() -> dict:
    response = await health(http_request("GET", "health", query="probe=token"), invocation_context("apim_health"))
    assert response.status_code == 200, response.get_body()
    return json.loads(response.get_body())["token"]


async def test_a_401_answered_with_the_platforms_same_token_is_not_resent_and_says_why(use_stack, control, backoff):
    await use_stack("reader")
    assert (await get()).status_code == 200
    control.fault("apim", status=401, times=5)
    for _ in range(5):
        error = error_of(await get(), 401, "access_denied")
    assert "handed back the same token" in error["hint"] and "24 hours" in error["hint"]
    assert counts(control)["token_requests"] == 2  # the first token, and one renewal for all five 401s
    assert counts(control)["apim_by_status"] == {"200": 1, "401": 5}  # none sent again


async def test_a_401_about_the_subscription_key_makes_no_token_request(use_stack, control, backoff):
    await use_stack("reader", APIM_SUBSCRIPTION_KEY="f" * 32)
    for _ in range(3):
        error = error_of(await get(), 401, "access_denied")
        assert "APIM_SUBSCRIPTION_KEY" in error["hint"]
    assert counts(control)["token_requests"] == 1  # the first call's token; none for the key's 401s
    assert counts(control)["apim"] == 3


async def test_callers_keep_the_current_token_while_a_renewal_is_slow(use_stack, control, backoff):
    await use_stack("reader")
    assert (await get()).status_code == 200
    control.roll_over_tokens()  # so the renewal gets a new token, late
    control.fault("apim", status=401, times=1)
    control.fault("identity", delay_ms=1500, times=1)
    refused = asyncio.create_task(get())
    await eventually(lambda: counts(control)["token_requests"] == 2, "the renewal under way at the endpoint")
    others = await asyncio.gather(*(get() for _ in range(10)))
    assert [r.status_code for r in others] == [200] * 10
    assert not refused.done()  # the ten did not wait for the renewal
    assert (await refused).status_code == 200  # sent once more, with the new token
    assert counts(control)["token_requests"] == 2


async def test_a_role_assigned_now_shows_only_in_a_later_platform_token(use_stack, control, backoff):
    await use_stack("reader", MANAGED_IDENTITY_WRITE_CLIENT_ID=None)  # the reader writes too
    error = error_of(await post(), 403, "access_denied")
    assert "Orders.Read" in error["hint"] and "24 hours" in error["hint"] and "issued" in error["hint"]
    before = await probe()
    assert before["roles"] == ["Orders.Read"] and before["issued_at"] and before["expires_at"]
    control.assign_role("reader", "Orders.Write")
    try:
        await runtime.reset_runtime()  # even a restarted app gets the platform's cached token
        error_of(await post(), 403, "access_denied")
        assert (await probe())["issued_at"] == before["issued_at"]
        control.roll_over_tokens("reader")  # the platform's cache rolls over, as after up to 24 hours
        await runtime.reset_runtime()
        assert (await post()).status_code == 201
        assert sorted((await probe())["roles"]) == ["Orders.Read", "Orders.Write"]
    finally:
        control.remove_role("reader", "Orders.Write")
        control.roll_over_tokens()
