"""argparse value types for the ``hinn`` commands: a bad value is argparse's one-line usage error
(exit 2) naming the flag, not a traceback from deep inside torch, numpy or pydantic."""

from __future__ import annotations

import argparse
from collections.abc import Callable

#: `hinn_core.data.MAX_SEED` (tested equal): not imported, so that ``hinn --help`` needs no torch
MAX_SEED = 2**63 - 1


def _number(kind: type, test: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        return value

    return parse


seed = _number(int, lambda v: 0 <= v <= MAX_SEED, f"must be an integer in [0, {MAX_SEED}]")
positive_int = _number(int, lambda v: v >= 1, "must be an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "must be an integer >= 0")
port = _number(int, lambda v: 1 <= v <= 65535, "must be a port number in [1, 65535]")
positive_float = _number(float, lambda v: v > 0 and v != float("inf"), "must be a finite number > 0")
