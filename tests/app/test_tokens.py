"""TokenSource: one fetch in flight, early refresh in the background, bounded renewal after a 401."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from azure.core.credentials import AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError

from shared.errors import TokenError
from shared.tokens import REFRESH_RETRY_SECONDS, Renewal, TokenSource


class FakeCredential:
    """Counts requests; each token is `token-N`, valid for `lifetime` seconds of the fake clock.

    `gate`, when set, holds every request until it is opened; `same` hands back the last
    token again (as the platform's cache does in Azure).
    """

    def __init__(self, clock: list[float], lifetime: int = 3600) -> None:
        self.clock, self.lifetime = clock, lifetime
        self.calls = 0
        self.options: list[object] = []
        self.fail = False
        self.same = False
        self.gate: asyncio.Event | None = None
        self.last: AccessTokenInfo | None = None

    async def get_token_info(self, *scopes, options=None):
        self.calls += 1
        self.options.append(options)
        await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ClientAuthenticationError("endpoint said no")
        if not (self.same and self.last):
            self.last = AccessTokenInfo(f"token-{self.calls}", int(self.clock[0]) + self.lifetime)
        return self.last

    async def close(self):
        pass


def make(lifetime: int = 3600, renew_interval: float = 300) -> tuple[TokenSource, FakeCredential, list[float]]:
    clock = [1_000_000.0]
    credential = FakeCredential(clock, lifetime)
    source = TokenSource(credential, "api://x/.default", client_id="id", clock=lambda: clock[0],
                         renew_interval=renew_interval)
    return source, credential, clock


async def settle() -> None:
    """Let background fetches run to their end."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_burst_of_cold_calls_makes_one_request():
    source, credential, _ = make()
    tokens = await asyncio.gather(*(source.get() for _ in range(1000)))
    assert credential.calls == 1
    assert Counter(t.token for t in tokens) == {"token-1": 1000}


async def test_early_refresh_runs_in_the_background_and_serves_the_current_token():
    source, credential, clock = make(lifetime=3600)
    await source.get()
    clock[0] += 3600 - 301  # not yet in the 300 s refresh window
    assert (await source.get()).token == "token-1"
    assert credential.calls == 1
    clock[0] += 2
    credential.gate = asyncio.Event()  # the refresh hangs until we open the gate
    tokens = await asyncio.wait_for(asyncio.gather(*(source.get() for _ in range(50))), 1)
    assert Counter(t.token for t in tokens) == {"token-1": 50}  # nobody waited for the refresh
    assert credential.calls == 2  # one refresh for all 50
    credential.gate.set()
    await settle()
    assert (await source.get()).token == "token-2"
    assert credential.calls == 2


async def test_short_lived_tokens_refresh_at_half_life_not_every_call():
    source, credential, clock = make(lifetime=60)
    await source.get()
    clock[0] += 20
    await source.get()
    await settle()
    assert credential.calls == 1
    clock[0] += 15
    await source.get()
    await settle()
    assert credential.calls == 2
    assert (await source.get()).token == "token-2"


async def test_a_failed_refresh_keeps_the_valid_token_and_is_retried_after_a_pause():
    source, credential, clock = make()
    await source.get()
    clock[0] += 3600 - 100
    credential.fail = True
    for _ in range(20):
        assert (await source.get()).token == "token-1"
        await settle()
    assert credential.calls == 2  # one failed refresh, not one per call
    clock[0] += REFRESH_RETRY_SECONDS
    credential.fail = False
    await source.get()
    await settle()
    assert credential.calls == 3
    assert (await source.get()).token == "token-3"


async def test_failure_without_a_usable_token_is_shared_by_every_waiter_and_not_remembered():
    source, credential, _ = make()
    credential.fail = True
    results = await asyncio.gather(*(source.get() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, TokenError) for r in results)
    assert "refused" in results[0].message
    assert credential.calls == 1
    credential.fail = False
    assert (await source.get()).token == "token-2"  # the next caller tries again


async def test_an_expired_token_is_never_served():
    source, credential, clock = make(lifetime=3600)
    await source.get()
    clock[0] += 3600 - 29  # within MIN_REMAINING_SECONDS of expiry
    credential.fail = True
    with pytest.raises(TokenError):
        await source.get()


async def test_a_cancelled_waiter_neither_cancels_the_fetch_nor_replays_an_older_failure():
    source, credential, _ = make()
    credential.fail = True
    with pytest.raises(TokenError):
        await source.get()
    credential.fail, credential.gate = False, asyncio.Event()
    first = asyncio.create_task(source.get())
    second = asyncio.create_task(source.get())
    await settle()
    first.cancel()
    await settle()
    credential.gate.set()
    assert (await second).token == "token-2"
    assert (await source.get()).token == "token-2"
    assert credential.calls == 2
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_renew_replaces_a_rejected_token_once_for_concurrent_callers():
    source, credential, _ = make()
    first = await source.get()
    renewed = await asyncio.gather(*(source.renew(first.token) for _ in range(10)))
    assert credential.calls == 2
    assert Counter(t.token for t in renewed if t) == {"token-2": 10}
    assert source.renewal is Renewal.RENEWED


async def test_callers_keep_the_current_token_while_a_renewal_is_slow_or_fails():
    source, credential, _ = make()
    first = await source.get()
    credential.gate, credential.fail = asyncio.Event(), True
    renewal = asyncio.create_task(source.renew(first.token))
    await settle()
    tokens = await asyncio.wait_for(asyncio.gather(*(source.get() for _ in range(20))), 1)
    assert Counter(t.token for t in tokens) == {"token-1": 20}
    credential.gate.set()
    assert await renewal is None
    assert source.renewal is Renewal.FAILED
    assert (await source.get()).token == "token-1"  # a failed renewal fails nobody else
    assert credential.calls == 2


async def test_renewals_are_bounded_per_interval():
    source, credential, clock = make(renew_interval=300)
    token = await source.get()
    renewed = await source.renew(token.token)
    assert renewed is not None and renewed.token == "token-2"
    for _ in range(10):  # the new token is refused too: no token request per invocation
        assert await source.renew(renewed.token) is None
    assert credential.calls == 2
    clock[0] += 300
    again = await source.renew(renewed.token)
    assert again is not None and again.token == "token-3"
    assert credential.calls == 3


async def test_the_same_token_handed_back_is_not_a_renewal():
    source, credential, _ = make()
    token = await source.get()
    credential.same = True
    assert await source.renew(token.token) is None
    assert source.renewal is Renewal.UNCHANGED
    assert credential.calls == 2


async def test_a_renewal_waits_for_an_early_refresh_in_flight_instead_of_a_second_request():
    source, credential, clock = make()
    token = await source.get()
    clock[0] += 3600 - 100
    credential.gate = asyncio.Event()
    await source.get()  # starts the refresh in the background
    renewal = asyncio.create_task(source.renew(token.token))
    await settle()
    credential.gate.set()
    renewed = await renewal
    assert renewed is not None and renewed.token == "token-2"
    assert credential.calls == 2
