"""TokenSource: one fetch in flight, early refresh, stale-while-refreshing, renewal after 401."""

from __future__ import annotations

import asyncio

import pytest
from azure.core.credentials import AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError

from shared.errors import TokenError
from shared.tokens import TokenSource


class FakeCredential:
    """Counts requests; each token is `token-N`, valid for `lifetime` seconds of the fake clock."""

    def __init__(self, clock: list[float], lifetime: int = 3600, delay: float = 0.01) -> None:
        self.clock, self.lifetime, self.delay = clock, lifetime, delay
        self.calls = 0
        self.fail = False

    async def get_token_info(self, *scopes, options=None):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ClientAuthenticationError("endpoint said no")
        return AccessTokenInfo(f"token-{self.calls}", int(self.clock[0]) + self.lifetime)

    async def close(self):
        pass


def make(lifetime: int = 3600) -> tuple[TokenSource, FakeCredential, list[float]]:
    clock = [1_000_000.0]
    credential = FakeCredential(clock, lifetime)
    source = TokenSource(credential, "api://x/.default", client_id="id", clock=lambda: clock[0])
    return source, credential, clock


async def test_a_burst_of_cold_calls_makes_one_request():
    source, credential, _ = make()
    tokens = await asyncio.gather(*(source.get() for _ in range(1000)))
    assert credential.calls == 1
    assert {t.token for t in tokens} == {"token-1"}


async def test_refreshes_before_expiry_and_only_once():
    source, credential, clock = make(lifetime=3600)
    await source.get()
    clock[0] += 3600 - 301  # not yet in the 300 s refresh window
    assert (await source.get()).token == "token-1"
    clock[0] += 2
    tokens = await asyncio.gather(*(source.get() for _ in range(50)))
    assert credential.calls == 2
    # Callers that came while the refresh was in flight were served the still-valid token.
    assert {t.token for t in tokens} <= {"token-1", "token-2"}
    assert (await source.get()).token == "token-2"


async def test_short_lived_tokens_refresh_at_half_life_not_every_call():
    source, credential, clock = make(lifetime=60)
    await source.get()
    clock[0] += 20
    await source.get()
    assert credential.calls == 1
    clock[0] += 15
    await source.get()
    assert credential.calls == 2


async def test_failed_refresh_keeps_the_valid_token():
    source, credential, clock = make()
    await source.get()
    clock[0] += 3600 - 100
    credential.fail = True
    assert (await source.get()).token == "token-1"


async def test_failure_without_a_usable_token_is_a_token_error():
    source, credential, _ = make()
    credential.fail = True
    with pytest.raises(TokenError) as caught:
        await source.get()
    assert "refused" in caught.value.message


async def test_renew_replaces_a_rejected_token_once_for_concurrent_callers():
    source, credential, _ = make()
    first = await source.get()
    renewed = await asyncio.gather(*(source.renew(first.token) for _ in range(10)))
    assert credential.calls == 2
    assert {t.token for t in renewed} == {"token-2"}
