"""The plugin's own work per guarded test with no finding, measured directly in one process.

Whole-process timings cannot resolve a few microseconds per test on a noisy machine (a 2,000-test run
varies by tens of milliseconds). This script times what the plugin adds, piece by piece:

1. the bodies of the session's per-test hooks (``_enter`` at setup, ``_report`` for the three reports, which
   also starts the next phase), timed with ``perf_counter_ns`` around each call during a real in-process run of
   2,000 trivial tests under ``--tokenguard`` (the timer's own cost is measured and subtracted);
2. pluggy's dispatch of those hook implementations: one plain ``tryfirst`` impl (setup) and one
   ``wrapper=True`` impl (makereport, three calls), measured on a private ``PluginManager`` with and without them.

Run: ``python benchmarks/per_test.py`` (``make bench`` runs it too). It measures the installed package.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pluggy
import pytest

TESTS = 2000


def trivial_suite(directory: Path, tests: int = TESTS, per_module: int = 100) -> Path:
    for module in range(tests // per_module):
        body = ["import transformers", ""]
        for index in range(per_module):
            body += [f"def test_{module}_{index}():", f"    assert {index} + 1 > {index}", ""]
        (directory / f"test_trivial_{module:02d}.py").write_text("\n".join(body))
    return directory


def timer_cost_ns(rounds: int = 200_000) -> float:
    """What one ``perf_counter_ns`` pair plus a dict update costs (subtracted from every timed call)."""
    totals = {"x": 0}
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(rounds):
        t = clock()
        totals["x"] += clock() - t
    return (clock() - start) / rounds


def hook_bodies_ns_per_test(directory: Path, runs: int) -> list[float]:
    """Median-ready samples: ns per test spent in the session's per-test hook bodies, one per run."""
    import transformers  # noqa: F401  # imported once, as every module of the suite does

    from pytest_tokenguard import session as session_module

    cls = session_module.TokenguardSession
    totals = {"ns": 0, "calls": 0}
    clock = time.perf_counter_ns

    def timed(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            t = clock()
            result = function(*args)
            totals["ns"] += clock() - t
            totals["calls"] += 1
            return result

        return wrapper

    originals = {name: getattr(cls, name) for name in ("_enter", "_report")}
    overhead = timer_cost_ns()
    samples = []
    try:
        for name, function in originals.items():
            setattr(cls, name, timed(function))
        for _ in range(runs):
            totals.update(ns=0, calls=0)
            with contextlib.redirect_stdout(io.StringIO()):
                code = pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "--tokenguard", str(directory)])
            assert code == 0, f"pytest exit {code}"
            assert totals["calls"] == 4 * TESTS, totals
            samples.append((totals["ns"] - overhead * totals["calls"]) / TESTS)
    finally:
        for name, function in originals.items():
            setattr(cls, name, function)
    return samples


def dispatch_ns_per_test(rounds: int = 100_000) -> float:
    """pluggy's cost of calling the plugin's plain setup impl once and its makereport wrapper three times, per test."""
    spec = pluggy.HookspecMarker("bench")
    impl = pluggy.HookimplMarker("bench")

    class Spec:
        @spec
        def plain(self, item: object) -> None: ...

        @spec
        def report(self, item: object) -> object: ...

    class Base:  # stands in for the other plugins pytest always has
        @impl
        def plain(self, item: object) -> None:
            return None

        @impl
        def report(self, item: object) -> object:
            return item

    class Guard:
        @impl(tryfirst=True)
        def plain(self, item: object) -> None:
            return None

        @impl(wrapper=True, tryfirst=True)
        def report(self, item: object) -> Generator[None, object, object]:
            result = yield
            return result

    def cost(with_guard: bool) -> float:
        manager = pluggy.PluginManager("bench")
        manager.add_hookspecs(Spec)
        manager.register(Base())
        if with_guard:
            manager.register(Guard())
        hook = manager.hook
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(rounds):
                hook.plain(item=None)  # setup; the call and teardown hooks have no tokenguard impl
                for _phase in range(3):  # the setup, call and teardown reports
                    hook.report(item=None)
            best = min(best, (time.perf_counter_ns() - start) / rounds)
        return best

    return cost(True) - cost(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="in-process runs of the 2,000 tests (default 7)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = trivial_suite(Path(tmp))
        bodies = hook_bodies_ns_per_test(directory, args.runs + 1)[1:]  # the first run warms caches and imports
    dispatch = dispatch_ns_per_test()
    body = statistics.median(bodies) / 1000
    total = body + dispatch / 1000
    print(
        f"hook bodies per guarded test: median {body:.2f} us (min {min(bodies) / 1000:.2f}, max {max(bodies) / 1000:.2f}; "
        f"{args.runs} runs of {TESTS} tests)"
    )
    print(f"pluggy dispatch of the plugin's per-test hookimpls (1 setup, 3 makereport): {dispatch / 1000:.2f} us per test")
    print(f"plugin work per guarded test with no finding: {total:.2f} us (goal < 10 us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
