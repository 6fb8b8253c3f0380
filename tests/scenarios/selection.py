"""The one target `python -m tests.scenarios` chose (None in the suite, which runs its own two)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.scenarios.drivers import Driver


@dataclass(frozen=True)
class Chosen:
    name: str
    driver: Callable[[], Driver]


CHOSEN: Chosen | None = None
