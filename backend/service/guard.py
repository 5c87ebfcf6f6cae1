"""Who may try a token: failed authentications are slowed down, and an address that fails in a
burst is shut out for a while (guessing a 32-byte token is hopeless; this keeps a scanner from
filling the log and the connection slots).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

AUTH_FAILURE_DELAY_S = 1.0  # before the refusal of a wrong token is sent and the connection closed
BURST_FAILURES = 5  # failures from one address within BURST_WINDOW_S ...
BURST_WINDOW_S = 60.0
BLOCK_S = 300.0  # ... shut that address out for this long
MAX_TRACKED = 4096  # addresses remembered at most (the oldest are forgotten first)


class AuthGuard:
    """Failed authentications per address, and the addresses shut out for now."""

    def __init__(self, failures: int = BURST_FAILURES, window: float = BURST_WINDOW_S, block: float = BLOCK_S,
                 clock=time.monotonic):
        self.failures, self.window, self.block = failures, window, block
        self._clock = clock
        self._lock = threading.Lock()
        self._failed: dict[str, deque] = defaultdict(deque)
        self._blocked: dict[str, float] = {}  # address -> until

    def blocked_for(self, address: str) -> float:
        """Seconds `address` stays shut out (0 when it may connect)."""
        with self._lock:
            until = self._blocked.get(address)
            if until is None:
                return 0.0
            left = until - self._clock()
            if left <= 0:
                del self._blocked[address]
                return 0.0
            return left

    def failed(self, address: str) -> bool:
        """Count one failure of `address`; True when this one shuts it out."""
        now = self._clock()
        with self._lock:
            times = self._failed[address]
            times.append(now)
            while times and now - times[0] > self.window:
                times.popleft()
            if len(times) >= self.failures:
                self._blocked[address] = now + self.block
                times.clear()
                shut = True
            else:
                shut = False
            if len(self._failed) > MAX_TRACKED:
                for stale in list(self._failed)[: len(self._failed) - MAX_TRACKED]:
                    del self._failed[stale]
            return shut
