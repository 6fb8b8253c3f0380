"""The logger the stand-ins' HTTP servers log their own errors to, without the request's bytes.

aiohttp logs a request it cannot parse with the parser's exception, whose text quotes the
offending line: `Authorization: Bearer <token>` or the subscription key, whole. This adapter
logs the kind of error instead, so no token or key reaches a log line, whatever a caller sends.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger


class _WithoutRequestBytes(logging.LoggerAdapter):  # type: ignore[type-arg]
    def log(self, level: int, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            msg, args = "%s: a request that could not be parsed (%s, HTTP %s)", (
                msg % args if args else msg, type(exc_info).__name__, exc_info.code)
            exc_info = None
        super().log(level, msg, *args, exc_info=exc_info, **kwargs)


SERVER_LOGGER: logging.LoggerAdapter = _WithoutRequestBytes(server_logger, {})  # type: ignore[type-arg]
