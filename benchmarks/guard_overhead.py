"""Overhead of `pytest --tokenguard` against `-p no:tokenguard`, measured side by side in one run.

Two workloads:
  1. 2,000 trivial tests in modules that import transformers (the guard attaches, sees nothing);
  2. a real third-party suite that never imports transformers (more-itertools' own tests, from
     its sdist on the package registry; cached under .bench/).

Runs alternate (off, on, off, on, ...) so machine noise hits both sides alike; the child's CPU
time is compared (minimum, and median). Prints the ratios and checks the outcomes are identical. Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench"
MORE_ITERTOOLS = "more-itertools==10.8.0"


def trivial_suite(directory: Path, tests: int = 2000, per_module: int = 100) -> Path:
    for module in range(tests // per_module):
        body = ["import transformers", "from transformers.utils import logging", ""]
        for index in range(per_module):
            body += [f"def test_{module}_{index}():", f"    assert {index} + 1 > {index}", ""]
        (directory / f"test_trivial_{module:02d}.py").write_text("\n".join(body))
    return directory


def third_party_suite() -> Path:
    CACHE.mkdir(exist_ok=True)
    unpacked = [p for p in CACHE.glob("more_itertools-*") if p.is_dir()]
    if not unpacked:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                MORE_ITERTOOLS,
                "-d",
                str(CACHE),
            ],
            check=True,
        )
        archive = next(CACHE.glob("more_itertools-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
        unpacked = [p for p in CACHE.glob("more_itertools-*") if p.is_dir()]
    return unpacked[0]


def run(directory: Path, guard: bool, env_path: Path | None = None) -> tuple[float, str]:
    args = ["--tokenguard"] if guard else ["-p", "no:tokenguard"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *args]
    env = None if env_path is None else dict(os.environ, PYTHONPATH=str(env_path))
    # CPU time of the child (user + system): far less noisy than wall time on a shared 2-core box.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line]
    outcome = lines[-1].split(" in ")[0] if lines else f"exit {done.returncode}"
    return elapsed, outcome


def compare(name: str, directory: Path, rounds: int, env_path: Path | None = None) -> float:
    off: list[float] = []
    on: list[float] = []
    outcomes = set()
    for _ in range(rounds):
        for guard, bucket in ((False, off), (True, on)):
            elapsed, outcome = run(directory, guard, env_path)
            bucket.append(elapsed)
            outcomes.add(outcome)
    # min is the least noisy estimate of the true cost; the median is printed alongside.
    ratio = min(on) / min(off)
    median_ratio = statistics.median(on) / statistics.median(off)
    same = "identical outcomes" if len(outcomes) == 1 else f"OUTCOMES DIFFER: {sorted(outcomes)}"
    print(
        f"{name}: CPU time off {min(off):.2f}s, --tokenguard {min(on):.2f}s (min of {rounds}), "
        f"ratio {ratio:.3f}, median ratio {median_ratio:.3f} ({same}: {min(outcomes)})",
        flush=True,
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trivial = compare("2000 trivial tests importing transformers", trivial_suite(Path(tmp)), args.rounds)
    suite = third_party_suite()
    third = compare(f"{suite.name} own tests (no transformers)", suite / "tests", args.rounds, suite)
    print(f"ratios: trivial {trivial:.3f}, third-party {third:.3f} (goal <= 1.02)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
