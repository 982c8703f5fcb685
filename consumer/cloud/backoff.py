"""One backoff policy for every retry in the consumer: exponential, capped, with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base: float = 0.2  # seconds before the first retry (upper bound of its jitter)
    cap: float = 20.0  # no wait is longer
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1 for the first retry)."""
        ceiling = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        return (rng or random).uniform(0, ceiling)
