"""Wall time of the bundled suite over the zoo (goal: <= 60 s on 2 CPU cores). Prints figures; not a test.

Runs ``pytest --tokenguard --pyargs pytest_tokenguard.suite`` in a fresh process from an empty folder,
once in a single process and once with ``-n 2`` (pytest-xdist, both cores), and prints the build time
of each zoo family (goal: <= 1 s each, then cached for the session).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time

GOAL_SECONDS = 60.0


def run_suite(*extra: str) -> tuple[float, int, str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--tokenguard",
        "--pyargs",
        "pytest_tokenguard.suite",
        "-q",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    with tempfile.TemporaryDirectory() as empty:
        start = time.perf_counter()
        run = subprocess.run(command, cwd=empty, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    last = [line for line in run.stdout.splitlines() if " passed" in line or " failed" in line]
    return elapsed, run.returncode, last[-1] if last else run.stdout[-500:]


def build_times() -> None:
    code = (
        "import time; from pytest_tokenguard.suite import zoo; import transformers, torch\n"
        "for name in zoo.families():  # import each architecture's modeling module first: that is not building\n"
        "    getattr(transformers, zoo.layout(name)['architecture'], None)\n"
        "zoo.build_tokenizer(zoo.layout('gpt2')['tokenizer'])\n"
        "for name in zoo.families():\n"
        "    start = time.perf_counter(); zoo.build(name); first = time.perf_counter() - start\n"
        "    start = time.perf_counter(); zoo.build(name); again = time.perf_counter() - start\n"
        '    print(f\'    {name:<26} build {first:5.2f} s   cached copy {again:5.2f} s   {"ok" if first <= 1 else "SLOW"}\')\n'
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def main() -> None:
    print("family build times (transformers, torch and the modeling modules imported first; goal <= 1 s):")
    build_times()
    runs = [("single process", ())]
    if importlib.util.find_spec("xdist") is not None:
        runs.append(("pytest -n 2 (2 cores)", ("-n", "2")))
    for label, extra in runs:
        elapsed, code, summary = run_suite(*extra)
        verdict = "within" if elapsed <= GOAL_SECONDS else "OVER"
        print(
            f"suite over the zoo, {label}: {elapsed:5.1f} s wall ({verdict} the {GOAL_SECONDS:.0f} s goal), "
            f"exit {code}: {summary.strip()}"
        )


if __name__ == "__main__":
    main()
