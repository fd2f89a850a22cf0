"""Interleaved wall-clock timing: contenders take turns, so a slow minute on a shared machine
slows them all alike instead of whichever happened to run then, and each keeps its fastest
round, since slower rounds measure whatever else the machine was doing."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def seconds_per_call(fn: Callable[[], object], number: int) -> float:
    """Mean wall time of ``number`` back-to-back calls of ``fn``, in seconds."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def calls_per_timing(fn: Callable[[], object], min_time: float) -> int:
    """Warms ``fn`` up (one call), then the number of calls that take at least ``min_time``
    seconds together, so that timer resolution and call jitter stay small."""
    fn()
    once = seconds_per_call(fn, 1)
    return max(1, math.ceil(min_time / max(once, 1e-9)))


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, min_time: float = 0.05) -> dict[str, float]:
    """The best time per call of each function over ``repeats`` rounds, in seconds,
    measured round-robin.

    After a warm-up, each round times every function once (over enough calls to last
    ``min_time``); the order rotates from round to round so that no function always runs
    right after the same neighbour. The fastest round is the one least disturbed by other
    work on the machine (as ``timeit`` advises).

    Examples:
        >>> times = interleaved_times({"a": lambda: sum(range(100)), "b": lambda: None}, repeats=3, min_time=1e-4)
        >>> sorted(times), all(t > 0 for t in times.values())
        (['a', 'b'], True)
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected a positive int, got {repeats!r}")
    names = list(fns)
    numbers = {name: calls_per_timing(fns[name], min_time) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(seconds_per_call(fns[name], numbers[name]))
    return {name: min(times) for name, times in samples.items()}
