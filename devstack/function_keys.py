"""Function keys for the host stand-in, generated per run, checked as the Functions host checks them.

The host knows three kinds: the master key (`_master`, admin level: every function and
the `/admin` API), host keys (function level, every function) and each function's own
keys (function level, that function only). A caller presents one as the
`x-functions-key` header or, if that header is absent, the `code` query parameter.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"
LEVELS = ("anonymous", "function", "admin")


def _new_key() -> str:
    # 40 random bytes, URL-safe: usable as `?code=` without encoding, as the host's own keys are.
    return secrets.token_urlsafe(40)


@dataclass(frozen=True)
class FunctionKeys:
    """The keys of one host run. Never logged; written only to the state dir's endpoints.json."""

    master: str
    host: Mapping[str, str]
    functions: Mapping[str, Mapping[str, str]]

    @classmethod
    def generate(cls, function_names: Iterable[str]) -> FunctionKeys:
        return cls(master=_new_key(), host={"default": _new_key()},
                   functions={name: {"default": _new_key()} for name in function_names})

    def level_of(self, key: str | None, function_name: str | None = None) -> str:
        """The level a key grants for `function_name`: admin, function, or anonymous (no match)."""
        if not key:
            return "anonymous"
        if secrets.compare_digest(key.encode(), self.master.encode()):
            return "admin"
        own = self.functions.get(function_name, {}).values() if function_name else ()
        if any(secrets.compare_digest(key.encode(), k.encode()) for k in (*self.host.values(), *own)):
            return "function"
        return "anonymous"

    def allows(self, required_level: str, key: str | None, function_name: str | None = None) -> bool:
        """Whether `key` may call something that needs `required_level` (the admin level grants every level)."""
        if required_level not in LEVELS:
            raise ValueError(f"unknown auth level {required_level!r}; one of {', '.join(LEVELS)}")
        granted = self.level_of(key, function_name)
        return LEVELS.index(granted) >= LEVELS.index(required_level)

    def to_json(self) -> dict[str, Any]:
        """The shape `az functionapp keys list` prints, plus each function's keys."""
        return {"masterKey": self.master, "functionKeys": dict(self.host), "systemKeys": {},
                "functions": {name: dict(keys) for name, keys in self.functions.items()}}


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key a request presents: the header wins over the query parameter, as in the host."""
    if KEY_HEADER in headers:
        return headers[KEY_HEADER]
    return query.get(KEY_QUERY)
