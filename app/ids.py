"""Row ids that sort in creation order (UUIDv7 layout, RFC 9562 §5.7, as 32 hex digits).

Rows are listed and claimed by ``(created_at, id)``. SQLite's clock has millisecond resolution,
so rows created within one millisecond tie on ``created_at``; a random id then broke FIFO
(a worker could claim the second of three jobs first). These ids carry the Unix time in
milliseconds followed by a per-process counter (RFC 9562 "method 1", 12 bits in ``rand_a``)
and 62 random bits, so ids from one process are strictly increasing and ids from different
processes are ordered to the millisecond of their host clocks.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = -1
_counter = 0


def new_id() -> str:
    """A new 32-hex-digit id, strictly greater than the previous one from this process."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:  # same millisecond, or the clock stepped back: keep counting
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                ms += 1
                _counter = 0
        else:
            _counter = 0
        _last_ms = ms
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (_counter << 64) | (0b10 << 62) | rand_b
    return f"{value:032x}"
