"""What pytest-tokenguard costs a test run, measured so that it tells the truth on a noisy machine.

Each scenario runs two commands, A (the plugin installed, enabled or imported) and B (the baseline),
as fresh subprocesses of this interpreter. After one warm-up pair that is not counted, the commands
alternate pair by pair, and the order inside a pair alternates too (AB, BA, AB, ...): whatever else the
shared machine does at that moment hits both sides of a pair alike. Each pair gives one ratio A/B and
one difference A - B; the table shows their medians and the spread (min..max) of the ratios, for wall
time and for the child's CPU time (user + system, from getrusage(RUSAGE_CHILDREN)).

Scenarios (``--only`` picks some, comma separated):

  idle         plugin installed, not enabled, vs ``-p no:tokenguard``; 2,000 trivial
               tests in 20 modules that import transformers                     goal <= 1.005x
  import       ``import pytest, pytest_tokenguard.plugin`` vs ``import pytest``; and
               the import timed in-process (perf_counter, median of 20 fresh
               processes)                                                       goal < 10 ms
  guarded      ``--tokenguard`` vs ``-p no:tokenguard`` on the same 2,000 tests  goal <= 1.02x
  one-test     ``--tokenguard`` vs ``-p no:tokenguard``, one test that imports
               transformers and builds a GenerationConfig (the fixed cost)      goal < 50 ms
  third-party  ``--tokenguard`` vs ``-p no:tokenguard`` on more-itertools 10.8.0's
               own tests (its sdist, downloaded once into .bench/; never
               imports transformers)                                            goal <= 1.02x
  children     ``--tokenguard`` vs ``--tokenguard --tokenguard-children=no``: one test
               file whose 50 tests each start a short Python child
               (``python -c "import json"``)                                     goal <= 1.10x
  startup      ``python -c pass`` in a virtual environment holding the child
               guard's ``.pth`` file (variable unset) vs an identical one
               without it                                                       goal < 2 ms
  per-test     the 2,000 tests with ``--tokenguard`` under cProfile: time in the
               plugin's hooks that run for every test / 2,000 (the one-time
               part, imports excepted, shown apart; and, when ``guarded`` ran,
               its CPU difference / 2,000)                                      goal < 10 us

A ratio goal must hold for the median pair ratio on both clocks, wall and CPU; a millisecond goal
for the median difference on both clocks. A ``*`` after yes/no says the goal lies inside the spread of
the pairs: more pairs (``--pairs``) would be needed to be sure either way. Missing a goal is reported,
never an error: the exit status is 0 unless something crashed (2) or A and B gave different test
outcomes (1).

The commands import the *installed* pytest_tokenguard (they run from temporary folders, never from the
checkout), so reinstall after editing: ``make bench`` does (``make install`` first), or by hand::

    python -m pip install --no-deps --force-reinstall .
    python benchmarks/guard_overhead.py [--pairs 7] [--only idle,guarded] [--json bench.json]

Not a test: nothing here is timed against a threshold in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench"
MORE_ITERTOOLS = "more-itertools==10.8.0"
TRIVIAL_TESTS = 2000
IMPORT_SAMPLES = 20
SCHEMA_VERSION = 1

PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist")
GUARD_ON = ("--tokenguard",)
GUARD_OFF = ("-p", "no:tokenguard")

SCENARIOS = ("idle", "import", "guarded", "one-test", "third-party", "children", "startup", "per-test")
CHILDREN = 50

# Imports the plugin module after pytest in a fresh process and prints how long that import took.
IMPORT_TIMER = "import time, pytest; t = time.perf_counter(); import pytest_tokenguard.plugin; print(time.perf_counter() - t)"

# Runs the trivial suite under cProfile and writes what the plugin's code cost, as JSON, to argv[1].
# Only calls *into* pytest_tokenguard from outside count (pytest, pluggy, the test): summing the
# cumulative time of every plugin function would count nested plugin calls twice. Module bodies are
# left out: one plugin module imports the next through importlib, so each would look like an entry
# (the `import` scenario measures the imports). Entry points called at least once per test are the
# per-test work; the rest (configure, collection, unconfigure) runs once per session.
PROFILER = """
import cProfile, json, pstats, sys
import pytest
out, tests = sys.argv[1], int(sys.argv[2])
profile = cProfile.Profile()
code = profile.runcall(pytest.main, sys.argv[3:])
stats = pstats.Stats(profile).stats

def mine(filename):
    return "pytest_tokenguard" in filename

per_test = once = naive = 0.0
for (filename, _line, name), (_cc, _nc, _tt, cumulative, callers) in stats.items():
    if not mine(filename):
        continue
    naive += cumulative
    if name == "<module>":
        continue
    entered = [(nc, ct) for caller, (_c, nc, _t, ct) in callers.items() if not mine(caller[0])]
    calls, seconds = sum(nc for nc, _ in entered), sum(ct for _, ct in entered)
    if calls >= tests:
        per_test += seconds
    else:
        once += seconds
json.dump({"exit": int(code), "per_test_s": per_test, "once_s": once, "naive_cumulative_s": naive}, open(out, "w"))
"""


class BenchError(Exception):
    """A command crashed or the setup failed: the figures would mean nothing."""


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    pytest: bool  # a pytest run: its summary line is the outcome, and exit 1 (tests failed) is not a crash


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    outcome: str


@dataclass(frozen=True)
class Goal:
    kind: Literal["ratio", "ms", "us"]
    limit: float

    def describe(self) -> str:
        return f"<= {self.limit:g}x" if self.kind == "ratio" else f"< {self.limit:g} {self.kind}"


@dataclass(frozen=True)
class Scenario:
    name: str
    a: Command
    b: Command
    goal: Goal


@dataclass
class Pairs:
    """The counted pairs of one scenario: a[i] and b[i] ran back to back."""

    a: list[Run] = field(default_factory=list)
    b: list[Run] = field(default_factory=list)
    outcomes_a: set[str] = field(default_factory=set)
    outcomes_b: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Spread:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def contains(self, limit: float) -> bool:
        return self.min <= limit <= self.max


@dataclass(frozen=True)
class Figures:
    scenario: str
    command_a: list[str]
    command_b: list[str]
    pairs: int
    a_wall_s: float
    b_wall_s: float
    a_cpu_s: float
    b_cpu_s: float
    wall_ratio: Spread
    cpu_ratio: Spread
    wall_diff_ms: Spread
    cpu_diff_ms: Spread
    goal: str
    met: bool
    goal_inside_spread: bool
    outcome_a: list[str]
    outcome_b: list[str]
    same_outcomes: bool
    note: str = ""
    raw: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class PerTest:
    direct_us_per_test: float  # benchmarks/per_test.py: the hook bodies timed in a real run, plus pluggy's dispatch
    profile_hooks_us_per_test: float  # plugin code entered at least once per test (the runtest hooks), / 2,000
    profile_once_ms: float  # plugin code entered fewer times (configure, collection, unconfigure), imports excluded
    profile_amortized_us_per_test: float  # both, / 2,000
    profile_naive_cumulative_us_per_test: float  # every plugin function's cumulative time, imports too: counts nesting twice
    cpu_delta_us_per_test: float | None  # (guarded A - B median CPU) / 2,000, when guarded ran
    goal: str
    met: bool


# --- workloads -------------------------------------------------------------------------------------


def trivial_suite(directory: Path, tests: int = TRIVIAL_TESTS, per_module: int = 100) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for module in range(tests // per_module):
        body = ["import transformers", "from transformers.utils import logging", ""]
        for index in range(per_module):
            body += [f"def test_{module}_{index}():", f"    assert {index} + 1 > {index}", ""]
        (directory / f"test_trivial_{module:02d}.py").write_text("\n".join(body))
    return directory


def one_test_suite(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = "from transformers import GenerationConfig\n\n\ndef test_generation_config():\n    GenerationConfig()\n"
    (directory / "test_one.py").write_text(body)
    return directory


def third_party_suite() -> Path:
    CACHE.mkdir(exist_ok=True)
    unpacked = [p for p in CACHE.glob("more_itertools-*") if p.is_dir()]
    if not unpacked:
        # The sdist, not the wheel: only the sdist carries the project's own tests.
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*download, MORE_ITERTOOLS, "-d", str(CACHE)], check=True)
        archive = next(CACHE.glob("more_itertools-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
        unpacked = [p for p in CACHE.glob("more_itertools-*") if p.is_dir()]
    return unpacked[0]


def children_suite(directory: Path, children: int = CHILDREN) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = ["import subprocess, sys", ""]
    for index in range(children):
        body += [f"def test_child_{index}():", '    subprocess.run([sys.executable, "-c", "import json"], check=True)', ""]
    (directory / "test_children.py").write_text("\n".join(body))
    return directory


def startup_venvs(work: Path) -> tuple[Path, Path]:
    """Two identical virtual environments of this interpreter (no pip); the first holds the child guard's
    ``.pth`` file, as a guarded session writes it."""
    from pytest_tokenguard.children import parent

    pythons = []
    for name in ("with-pth", "without-pth"):
        venv = work / name
        if not venv.exists():
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        pythons.append(venv / "bin" / "python")
    site = subprocess.check_output([str(pythons[0]), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True)
    (Path(site.strip()) / f"{parent.PTH_PREFIX}-benchmark.pth").write_text(parent.pth_text(str(ROOT)))
    return pythons[0], pythons[1]


def child_env(pythonpath: Path | None = None) -> dict[str, str]:
    # The user's PYTEST_ADDOPTS or a disabled plugin autoload would silently change what A and B mean.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def guard_pair(name: str, directory: Path, goal: Goal, env: Mapping[str, str]) -> Scenario:
    on = Command((*PYTEST, *GUARD_ON), directory, env, pytest=True)
    off = Command((*PYTEST, *GUARD_OFF), directory, env, pytest=True)
    return Scenario(name, on, off, goal)


def build_scenario(name: str, work: Path) -> Scenario:
    env = child_env()
    trivial = work / "trivial"
    if name in ("idle", "guarded") and not trivial.exists():
        trivial_suite(trivial)
    if name == "idle":
        installed = Command(PYTEST, trivial, env, pytest=True)
        return Scenario(name, installed, Command((*PYTEST, *GUARD_OFF), trivial, env, pytest=True), Goal("ratio", 1.005))
    if name == "import":
        # From an empty folder, so that `python -c` finds the installed package, not the checkout.
        empty = work / "empty"
        empty.mkdir(exist_ok=True)
        a = Command((sys.executable, "-c", "import pytest, pytest_tokenguard.plugin"), empty, env, pytest=False)
        b = Command((sys.executable, "-c", "import pytest"), empty, env, pytest=False)
        return Scenario(name, a, b, Goal("ms", 10))
    if name == "guarded":
        return guard_pair(name, trivial, Goal("ratio", 1.02), env)
    if name == "one-test":
        return guard_pair(name, one_test_suite(work / "one"), Goal("ms", 50), env)
    if name == "third-party":
        suite = third_party_suite()
        return guard_pair(name, suite / "tests", Goal("ratio", 1.02), child_env(pythonpath=suite))
    if name == "children":
        suite = children_suite(work / "children")
        on = Command((*PYTEST, *GUARD_ON), suite, env, pytest=True)
        off = Command((*PYTEST, *GUARD_ON, "--tokenguard-children=no"), suite, env, pytest=True)
        return Scenario(name, on, off, Goal("ratio", 1.10))
    if name == "startup":
        with_pth, without_pth = startup_venvs(work)
        plain = {k: v for k, v in env.items() if not k.startswith("PYTEST_TOKENGUARD")}
        a = Command((str(with_pth), "-c", "pass"), work, plain, pytest=False)
        return Scenario(name, a, Command((str(without_pth), "-c", "pass"), work, plain, pytest=False), Goal("ms", 2))
    raise ValueError(f"not a pair scenario: {name}")


# --- running ---------------------------------------------------------------------------------------

# pytest's final line, e.g. "695 passed, 1 skipped, 8 warnings, 19866 subtests passed in 17.49s"
# (framed by "=" without -q); the duration is cut off so that the two commands compare equal.
SUMMARY = re.compile(r"^=*\s*(\d+ [a-z][^=]*?) in [\d.]+s\b")


def outcome_of(command: Command, done: subprocess.CompletedProcess[str]) -> str:
    # Exit 1 from pytest is "tests failed": an outcome to compare. Anything else non-zero is a crash.
    crashed = done.returncode not in ((0, 1) if command.pytest else (0,))
    if crashed:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise BenchError(f"{' '.join(command.argv)} (in {command.cwd}) exited {done.returncode}:\n{tail}")
    if not command.pytest:
        return f"exit {done.returncode}"
    summaries = [m.group(1) for line in done.stdout.splitlines() if (m := SUMMARY.match(line.strip()))]
    if not summaries:
        # Without it the outcome check would compare nothing; better to stop than to claim "identical".
        raise BenchError(f"{' '.join(command.argv)} (in {command.cwd}) printed no summary line:\n{done.stdout[-2000:]}")
    return f"{summaries[-1]} (exit {done.returncode})"


def run(command: Command) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command.argv, cwd=command.cwd, env=command.env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the child alone: less sensitive than wall time to the other tenants of the machine.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, outcome_of(command, done))


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_pairs(scenario: Scenario, pairs: int) -> Pairs:
    result = Pairs()
    # The warm-up pair fills the page cache and writes the bytecode (and pytest's rewritten asserts).
    progress(f"[{scenario.name}] warm-up pair")
    for command in (scenario.a, scenario.b):
        run(command)
    for index in range(pairs):
        progress(f"[{scenario.name}] pair {index + 1}/{pairs}")
        # Alternate which side goes first: a drift within a pair then favours neither side.
        if index % 2 == 0:
            a, b = run(scenario.a), run(scenario.b)
        else:
            b, a = run(scenario.b), run(scenario.a)
        result.a.append(a)
        result.b.append(b)
        result.outcomes_a.add(a.outcome)
        result.outcomes_b.add(b.outcome)
    return result


def figures(scenario: Scenario, pairs: Pairs) -> Figures:
    a_wall, b_wall = [r.wall for r in pairs.a], [r.wall for r in pairs.b]
    a_cpu, b_cpu = [r.cpu for r in pairs.a], [r.cpu for r in pairs.b]
    wall_ratio = Spread.of([a / b for a, b in zip(a_wall, b_wall, strict=True)])
    cpu_ratio = Spread.of([a / b for a, b in zip(a_cpu, b_cpu, strict=True)])
    wall_diff = Spread.of([(a - b) * 1000 for a, b in zip(a_wall, b_wall, strict=True)])
    cpu_diff = Spread.of([(a - b) * 1000 for a, b in zip(a_cpu, b_cpu, strict=True)])
    goal = scenario.goal
    if goal.kind == "ratio":
        met = wall_ratio.median <= goal.limit and cpu_ratio.median <= goal.limit
        inside = wall_ratio.contains(goal.limit)
        note = ""
    else:
        met = wall_diff.median < goal.limit and cpu_diff.median < goal.limit
        inside = wall_diff.contains(goal.limit)
        note = f"cpu diff {cpu_diff.median:+.1f} ms"
    same = len(pairs.outcomes_a) == 1 and pairs.outcomes_a == pairs.outcomes_b
    return Figures(
        scenario=scenario.name,
        command_a=list(scenario.a.argv[1:]),
        command_b=list(scenario.b.argv[1:]),
        pairs=len(pairs.a),
        a_wall_s=statistics.median(a_wall),
        b_wall_s=statistics.median(b_wall),
        a_cpu_s=statistics.median(a_cpu),
        b_cpu_s=statistics.median(b_cpu),
        wall_ratio=wall_ratio,
        cpu_ratio=cpu_ratio,
        wall_diff_ms=wall_diff,
        cpu_diff_ms=cpu_diff,
        goal=goal.describe(),
        met=met,
        goal_inside_spread=inside,
        outcome_a=sorted(pairs.outcomes_a),
        outcome_b=sorted(pairs.outcomes_b),
        same_outcomes=same,
        note=note,
        raw={"a_wall_s": a_wall, "b_wall_s": b_wall, "a_cpu_s": a_cpu, "b_cpu_s": b_cpu},
    )


def import_in_process(work: Path, samples: int = IMPORT_SAMPLES) -> list[float]:
    """Milliseconds spent in ``import pytest_tokenguard.plugin`` after ``import pytest``, one fresh process each."""
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    timings = []
    for index in range(samples):
        progress(f"[import] in-process sample {index + 1}/{samples}")
        done = subprocess.run([sys.executable, "-c", IMPORT_TIMER], cwd=empty, env=child_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"timing the plugin import failed:\n{done.stderr[-2000:]}")
        timings.append(float(done.stdout.split()[-1]) * 1000)
    return timings


def profile_per_test(work: Path) -> dict[str, float]:
    """Seconds spent in pytest_tokenguard code while running the trivial suite with --tokenguard, under cProfile."""
    trivial = work / "trivial"
    if not trivial.exists():
        trivial_suite(trivial)
    out = work / "profile.json"
    args = [str(out), str(TRIVIAL_TESTS), "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *GUARD_ON]
    progress("[per-test] 2,000 tests under cProfile")
    done = subprocess.run([sys.executable, "-c", PROFILER, *args], cwd=trivial, env=child_env(), capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise BenchError(f"profiling the trivial suite failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    data: dict[str, float] = json.loads(out.read_text())
    if data["exit"] != 0:
        raise BenchError(f"the trivial suite did not pass under cProfile (pytest exit {data['exit']})")
    return data


# --- reporting -------------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pytest": version("pytest"),
        "transformers": version("transformers"),
        "pytest-tokenguard": version("pytest-tokenguard"),
        "loadavg_at_start": list(os.getloadavg()),
    }


def verdict(met: bool, inside: bool) -> str:
    return ("yes" if met else "no") + ("*" if inside else "")


def row(f: Figures) -> list[str]:
    return [
        f.scenario,
        f"{f.a_wall_s:.3f}s",
        f"{f.b_wall_s:.3f}s",
        f"{f.wall_diff_ms.median:+.1f}",
        f"{f.wall_ratio.median:.3f} [{f.wall_ratio.min:.3f}..{f.wall_ratio.max:.3f}]",
        f"{f.cpu_ratio.median:.3f} [{f.cpu_ratio.min:.3f}..{f.cpu_ratio.max:.3f}]",
        f.goal,
        verdict(f.met, f.goal_inside_spread),
        f.note,
    ]


def per_test_row(p: PerTest) -> list[str]:
    cpu = "n/a (guarded not run)" if p.cpu_delta_us_per_test is None else f"{p.cpu_delta_us_per_test:+.1f} us/test"
    note = f"direct {p.direct_us_per_test:.1f} us/test; profile: hooks {p.profile_hooks_us_per_test:.1f} us/test, "
    note += f"once {p.profile_once_ms:.0f} ms"
    note += f" (amortized {p.profile_amortized_us_per_test:.1f} us/test); guarded cpu delta {cpu}"
    return ["per-test", "-", "-", "-", "-", "-", p.goal, verdict(p.met, False), note]


def table(rows: Sequence[Sequence[str]]) -> str:
    header = ["scenario", "A median", "B median", "diff ms", "wall ratio median [min..max]", "cpu ratio median [min..max]"]
    header += ["goal", "met?", "note"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------


def parse_only(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return names


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tokenguard-bench-") as tmp:
        yield Path(tmp)


def direct_per_test_us() -> float:
    """``benchmarks/per_test.py``'s figure: the per-test hook bodies timed one by one in a real run, plus
    pluggy's dispatch of them (no profiler overhead)."""
    script = Path(__file__).resolve().parent / "per_test.py"
    progress("[per-test] direct measurement (benchmarks/per_test.py)")
    done = subprocess.run(
        [sys.executable, str(script), "--runs", "5"],
        capture_output=True,
        text=True,
        check=True,
        env=child_env(),
        cwd=tempfile.gettempdir(),
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("plugin work per guarded test"))
    return float(line.split(": ")[1].split(" us")[0])


def per_test_figures(work: Path, guarded: Figures | None) -> PerTest:
    direct = direct_per_test_us()
    profile = profile_per_test(work)
    hooks_us = profile["per_test_s"] / TRIVIAL_TESTS * 1e6
    goal = Goal("us", 10)
    return PerTest(
        direct_us_per_test=direct,
        profile_hooks_us_per_test=hooks_us,
        profile_once_ms=profile["once_s"] * 1000,
        profile_amortized_us_per_test=(profile["per_test_s"] + profile["once_s"]) / TRIVIAL_TESTS * 1e6,
        profile_naive_cumulative_us_per_test=profile["naive_cumulative_s"] / TRIVIAL_TESTS * 1e6,
        cpu_delta_us_per_test=None if guarded is None else (guarded.a_cpu_s - guarded.b_cpu_s) / TRIVIAL_TESTS * 1e6,
        goal=goal.describe(),
        # The goal is about the work repeated for every test; the one-time cost has its own goals
        # (import, one-test). The direct measurement decides; the profile overestimates (cProfile adds its own
        # cost to every call) and the CPU difference of two 2,000-test runs is mostly noise at this scale.
        met=direct < goal.limit,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=positive, default=7, help="counted pairs per scenario, after one warm-up pair (7)")
    parser.add_argument("--only", type=parse_only, default=list(SCENARIOS), help=f"comma separated: {','.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure, and the raw timings, here")
    args = parser.parse_args(argv)
    selected: list[str] = [name for name in SCENARIOS if name in args.only]

    info = machine()
    print(
        f"machine: {info['cpu_count']} CPUs, python {info['python']}, pytest {info['pytest']}, "
        f"transformers {info['transformers']}, pytest-tokenguard {info['pytest-tokenguard']} (installed), "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    results: list[Figures] = []
    per_test: PerTest | None = None
    import_ms: list[float] = []
    try:
        with workdir() as work:
            for name in selected:
                if name == "per-test":
                    guarded = next((f for f in results if f.scenario == "guarded"), None)
                    per_test = per_test_figures(work, guarded)
                    continue
                scenario = build_scenario(name, work)
                figs = figures(scenario, run_pairs(scenario, args.pairs))
                if name == "import":
                    import_ms = import_in_process(work)
                    figs = replace(figs, note=f"{figs.note}; in-process import {statistics.median(import_ms):.1f} ms")
                results.append(figs)
    except (BenchError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    rows = [row(f) for f in results]
    if per_test is not None:
        rows.append(per_test_row(per_test))
    print(
        f"\n{args.pairs} pair(s) per scenario after a warm-up pair; A/B medians and diff are wall time; ratios are per pair A/B\n"
    )
    print(table(rows))
    if any(f.goal_inside_spread for f in results):
        print("* the goal lies inside the spread of the pairs: more pairs would be needed to be sure")
    differing = [f for f in results if not f.same_outcomes]
    for f in differing:
        print(f"WARNING: {f.scenario}: A and B gave different outcomes: A {f.outcome_a}, B {f.outcome_b}")
    print(f"load at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if args.json is not None:
        info["loadavg_at_end"] = list(os.getloadavg())
        document = {
            "schema_version": SCHEMA_VERSION,
            "machine": info,
            "pairs": args.pairs,
            "scenarios": {f.scenario: asdict(f) for f in results},
            "per_test": None if per_test is None else asdict(per_test),
            "import_in_process_ms": import_ms or None,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
