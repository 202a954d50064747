"""How long to wait before attempt N+1 of anything that is retried (a relaunch, a watch, a
webhook, a store call): the one exponential backoff of every program."""

from __future__ import annotations

import random
from typing import Literal

Jitter = Literal["none", "full", "spread"]


def backoff_delay(failures: int, base: float, cap: float, jitter: Jitter = "none") -> float:
    """Seconds to wait after `failures` failures in a row (1 or more): `base`, doubled
    after each further failure, never above `cap`. `jitter`: "full" draws uniformly from
    [0, that] (many clients retrying against one server spread out); "spread" varies it by
    ±20 % (one client, a predictable pace); "none" keeps it exact."""
    delay = min(cap, base * 2 ** min(max(failures, 1) - 1, 62))
    if jitter == "full":
        return random.uniform(0, delay)
    if jitter == "spread":
        return delay * random.uniform(0.8, 1.2)
    return delay
