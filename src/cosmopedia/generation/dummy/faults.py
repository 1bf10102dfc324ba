"""Faults the dummy engine injects (for tests and drills): 429, 503, connection resets,
hangs, and a crash after N requests.

Which request meets which fault is drawn from a seeded hash of the request and of how often
that exact request was seen, so a faulty run is reproducible whatever the timing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

# Exit code of a simulated crash (`crash_after`).
CRASH_EXIT_CODE = 70
# A hung request gives up after this long even if its client never leaves.
MAX_HANG_S = 3600.0


@dataclass(frozen=True)
class Faults:
    """Injected faults. Rates are probabilities per request, drawn in this order."""

    seed: int = 0
    rate_429: float = 0.0
    rate_503: float = 0.0
    rate_reset: float = 0.0
    rate_hang: float = 0.0
    # Exit abruptly (code CRASH_EXIT_CODE) when this request number arrives; 0: never.
    crash_after: int = 0

    def __post_init__(self):
        rates = [self.rate_429, self.rate_503, self.rate_reset, self.rate_hang]
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        if self.crash_after < 0:
            raise ValueError("crash_after must be >= 0")

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "seed")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def draw(self, request_hash: str, occurrence: int) -> str | None:
        """The fault of the `occurrence`-th sending of a request (0 = first), if any.

        A pure function of (seed, request, occurrence): a rerun with the same requests meets
        the same faults, whatever the order in which concurrent requests arrive.
        """
        digest = hashlib.sha256(f"{self.seed}\0{request_hash}\0{occurrence}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for kind, rate in (
            ("overloaded", self.rate_429),
            ("unavailable", self.rate_503),
            ("reset", self.rate_reset),
            ("hang", self.rate_hang),
        ):
            if u < rate:
                return kind
            u -= rate
        return None
