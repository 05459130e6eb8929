"""Figures and the time budget of the fuzz suite (tests/test_fuzz_*.py).

``FUZZ`` counts examples, independent-checker violations and crashes per target (LP, fast, MILP,
PuLP, OCPP, controller, bad inputs). Under the ``explore`` hypothesis profile with
``LOADOPT_FUZZ_MINUTES`` set, :func:`explore` re-runs each fuzz test with fresh random examples
until its share of the minutes is used; the figures are printed at exit and, with
``LOADOPT_FUZZ_STATS=path``, written there as JSON.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from collections import Counter

MINUTES = float(os.environ.get("LOADOPT_FUZZ_MINUTES", "0") or 0)
EXPLORING = os.environ.get("HYPOTHESIS_PROFILE") == "explore" and MINUTES > 0
#: How many fuzz tests share the minutes (tests/test_fuzz_safety.py + test_fuzz_controller.py).
N_FUZZ_TESTS = 9


class _Figures:
    def __init__(self) -> None:
        self.examples: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.crashes: Counter[str] = Counter()
        self.t0 = time.time()

    def example(self, target: str, violations: int = 0) -> None:
        self.examples[target] += 1
        self.violations[target] += violations

    def crash(self, target: str) -> None:
        self.crashes[target] += 1

    def report(self) -> dict:
        return {
            "minutes": round((time.time() - self.t0) / 60, 2),
            "examples": dict(self.examples),
            "total_examples": sum(self.examples.values()),
            "violations": dict(self.violations),
            "total_violations": sum(self.violations.values()),
            "crashes": dict(self.crashes),
            "total_crashes": sum(self.crashes.values()),
        }


FUZZ = _Figures()


def _at_exit() -> None:
    if not FUZZ.examples:
        return
    rep = FUZZ.report()
    path = os.environ.get("LOADOPT_FUZZ_STATS")
    if path:
        with open(path, "w") as f:
            json.dump(rep, f, indent=2)
    if EXPLORING or path:
        print("loadopt fuzz figures: " + json.dumps(rep), file=sys.stderr)


atexit.register(_at_exit)


def fuzz(max_examples: int):
    """The hypothesis settings of one fuzz test: ``max_examples`` on top of the loaded profile
    ("ci": derandomised), no deadline, no health check about slow data generation."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def explore(test):
    """Under the exploratory run, call the hypothesis test ``test`` again and again (fresh random
    examples each time) until its share of ``LOADOPT_FUZZ_MINUTES`` is used up."""
    if not EXPLORING:
        return test
    budget_s = MINUTES * 60.0 / N_FUZZ_TESTS

    def run() -> None:
        deadline = time.monotonic() + budget_s
        while True:
            test()
            if time.monotonic() >= deadline:
                break

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    run.__module__ = test.__module__
    return run
