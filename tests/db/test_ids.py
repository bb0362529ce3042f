"""Row ids sort in creation order, so rows created in the same clock tick stay FIFO."""

from __future__ import annotations

import threading
import uuid

import pytest

from app import ids


def test_ids_from_one_process_strictly_increase() -> None:
    made = [ids.new_id() for _ in range(20_000)]  # far more than one millisecond's 4096 counter values
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)


def test_ids_are_rfc9562_version_7_with_the_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_800_000_000_123_456_789)
    monkeypatch.setattr(ids, "_last_ms", -1)
    u = uuid.UUID(hex=ids.new_id())
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert int(u.hex[:12], 16) == 1_800_000_000_123


def test_a_clock_stepping_back_does_not_break_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter([2_000_000_000_000_000_000, 1_999_999_999_000_000_000, 1_999_999_998_000_000_000])
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(times))
    monkeypatch.setattr(ids, "_last_ms", -1)
    made = [ids.new_id() for _ in range(3)]
    assert made == sorted(made) and len(set(made)) == 3


def test_ids_from_threads_are_unique() -> None:
    out: list[str] = []

    def work() -> None:
        out.extend(ids.new_id() for _ in range(2000))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 8000
