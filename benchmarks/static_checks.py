"""Costs of the static side, measured side by side in one run. Prints figures; not a test.

1. ``tokenguard check`` on a Qwen3-sized folder (tokenizer.json with 151,669 tokens) against loading
   ``AutoConfig`` + ``AutoTokenizer`` + ``GenerationConfig`` from the same folder: in-process (both
   warm, alternating) and as fresh processes (what a CI step pays).
2. ``predict_trainer_alignment`` per call (goal <= 5 ms).
3. The ``--tokenguard-calls`` / synthesis wrappers per ``generate()`` call: unwrapped, wrapped with
   no test running, and wrapped while checking.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def alternate(a: Callable[[], object], b: Callable[[], object], rounds: int) -> tuple[list[float], list[float]]:
    first, second = [], []
    for _ in range(rounds):
        first.append(timed(a))
        second.append(timed(b))
    return first, second


def folder_benchmark(folder: Path, rounds: int) -> None:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from pytest_tokenguard.static.checks import check_layout
    from pytest_tokenguard.static.folder import read_folder

    def ours() -> object:
        return check_layout(read_folder(folder).layout)

    def theirs() -> object:
        return (
            AutoConfig.from_pretrained(folder),
            AutoTokenizer.from_pretrained(folder),
            GenerationConfig.from_pretrained(folder),
        )

    first_call = timed(ours)  # includes importing and compiling the chat template once
    check, load = alternate(ours, theirs, rounds)
    median_check, median_load = statistics.median(check), statistics.median(load)
    print(f"[1] in-process, {rounds} alternating rounds, median:")
    print(f"    tokenguard check      {median_check * 1000:8.1f} ms   (first call {first_call * 1000:.1f} ms)")
    print(f"    transformers loading  {median_load * 1000:8.1f} ms")
    print(f"    ratio                 {median_load / median_check:8.1f}x faster   (goal >= 20x)")

    cli = [sys.executable, "-m", "pytest_tokenguard", "check", str(folder)]
    load_script = (
        "from transformers import AutoConfig, AutoTokenizer, GenerationConfig; import sys; p = sys.argv[1]; "
        "AutoConfig.from_pretrained(p); AutoTokenizer.from_pretrained(p); GenerationConfig.from_pretrained(p)"
    )
    hf = [sys.executable, "-c", load_script, str(folder)]
    env_rounds = max(3, rounds // 5)
    process_check, process_load = alternate(
        lambda: subprocess.run(cli, capture_output=True, check=False, cwd=ROOT),
        lambda: subprocess.run(hf, capture_output=True, check=True, cwd=ROOT),
        env_rounds,
    )
    median_process_check, median_process_load = statistics.median(process_check), statistics.median(process_load)
    print(f"[1] fresh processes, {env_rounds} alternating rounds, median wall:")
    print(f"    python -m pytest_tokenguard check   {median_process_check:6.2f} s")
    print(f"    python -c 'load with transformers'  {median_process_load:6.2f} s")
    print(f"    ratio                               {median_process_load / median_process_check:6.1f}x faster")


def predict_benchmark(calls: int) -> None:
    from pytest_tokenguard import predict_trainer_alignment
    from pytest_tokenguard.suite import zoo

    for family in ("qwen3-0.6b", "gemma-2-2b-it", "tinyllama-1.1b-chat-v1.0"):
        model, tokenizer = zoo.build(family)
        predict_trainer_alignment(model, tokenizer)  # first call imports the Trainer's module
        durations = []
        for _ in range(calls):
            start = time.perf_counter()
            predict_trainer_alignment(model, tokenizer)
            durations.append(time.perf_counter() - start)
        print(
            f"[2] predict_trainer_alignment({family}): median {statistics.median(durations) * 1000:.2f} ms, "
            f"max {max(durations) * 1000:.2f} ms over {calls} calls (goal <= 5 ms)"
        )


def wrapper_benchmark(calls: int) -> None:
    import torch

    from pytest_tokenguard.guard import routing
    from pytest_tokenguard.guard.calls import Options
    from pytest_tokenguard.guard.findings import TestRecorder
    from pytest_tokenguard.suite import zoo

    model, _ = zoo.build("smollm2-135m-instruct")
    inputs = torch.tensor([[1, 5, 6, 7]])
    mask = torch.ones_like(inputs)

    def generate() -> object:
        return model.generate(inputs, attention_mask=mask, max_new_tokens=1, do_sample=False)

    for _ in range(5):
        generate()
    from transformers.generation.utils import GenerationMixin

    recorder = TestRecorder()
    samples: dict[str, list[float]] = {"unwrapped": [], "wrapped, no test running": [], "wrapped, checking each call": []}
    with routing.guarding(recorder, Options(synthesize="never", calls=True)) as state:
        original = GenerationMixin.generate.__tokenguard_original__  # type: ignore[attr-defined]
        for _ in range(calls):  # round-robin, so machine noise hits the three alike
            samples["unwrapped"].append(
                timed(lambda: original(model, inputs, attention_mask=mask, max_new_tokens=1, do_sample=False))
            )
            routing.receive(state, None)
            samples["wrapped, no test running"].append(timed(generate))
            routing.receive(state, recorder)
            samples["wrapped, checking each call"].append(timed(generate))
    base = statistics.median(samples["unwrapped"])
    print(f"[3] generate(max_new_tokens=1) on a tiny model, {calls} round-robin calls each, median:")
    for label, values in samples.items():
        median = statistics.median(values)
        print(f"    {label:<28} {median * 1000:7.3f} ms   ratio {median / base:.3f}   ({(median - base) * 1e6:+.0f} us per call)")
    print(f"    findings recorded while checking: {sum(f.count for f in recorder.findings)} (expected 0: aligned model)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    from pytest_tokenguard.suite import zoo

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "qwen3-0.6b"
        model, tokenizer = zoo.build("qwen3-0.6b")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folder_benchmark(folder, args.rounds)
    predict_benchmark(args.calls)
    wrapper_benchmark(args.calls)


if __name__ == "__main__":
    main()
