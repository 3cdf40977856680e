"""Costs of the static side, measured side by side in one run. Prints figures; not a test.

1. ``tokenguard check`` on a Qwen3-sized folder (a byte-level BPE ``tokenizer.json`` with 151,643 vocab
   entries and 151,387 merges, about 12 MB, as tokenizers writes it; then the same file re-saved by Python's
   json with sorted keys, indented and ASCII-escaped: "another writer") against loading ``AutoConfig`` +
   ``AutoTokenizer`` + ``GenerationConfig`` from the same folder: in-process (both warm, alternating) and as
   fresh processes (what a CI step pays; goal: <= 0.1 s and >= 20x faster).
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

    script = Path(sys.executable).parent / "tokenguard"  # the console script users run (make install puts it there)
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "pytest_tokenguard"]
    cli += ["check", str(folder)]
    label = "tokenguard check FOLDER" if script.exists() else "python -m pytest_tokenguard check FOLDER"
    probe = subprocess.run(cli, capture_output=True, text=True, check=False, cwd=folder.parent)
    if probe.returncode not in (0, 1):  # 0 clean, 1 findings: anything else would time an error
        raise SystemExit(f"{label} failed ({probe.returncode}): {probe.stderr}")
    load_script = (
        "from transformers import AutoConfig, AutoTokenizer, GenerationConfig; import sys; p = sys.argv[1]; "
        "AutoConfig.from_pretrained(p); AutoTokenizer.from_pretrained(p); GenerationConfig.from_pretrained(p)"
    )
    hf = [sys.executable, "-c", load_script, str(folder)]
    env_rounds = max(5, rounds // 2)
    # run outside the source tree: the installed package, as users have it (not ./pytest_tokenguard)
    process_check, process_load = alternate(
        lambda: subprocess.run(cli, capture_output=True, check=False, cwd=folder.parent),
        lambda: subprocess.run(hf, capture_output=True, check=True, cwd=folder.parent),
        env_rounds,
    )
    median_process_check, median_process_load = statistics.median(process_check), statistics.median(process_load)
    print(f"[1] fresh processes, {env_rounds} alternating rounds, median wall [min..max]:")
    spread = f"[{min(process_check) * 1000:.1f}..{max(process_check) * 1000:.1f}]"
    print(f"    {label:<40} {median_process_check * 1000:7.1f} ms {spread}   (goal <= 100 ms)")
    print(f"    {'python -c <load with transformers>':<40} {median_process_load * 1000:7.1f} ms")
    print(f"    {'ratio':<40} {median_process_load / median_process_check:7.1f}x faster   (goal >= 20x)")


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


def qwen3_sized_tokenizer(folder: Path) -> None:
    """Replace the zoo tokenizer's filler vocab with a real byte-level BPE of Qwen3's size: tokens are prefixes
    of the words of Python's own sources (so quotes, backslashes and braces occur as in a code-heavy vocab),
    each made by a merge of the previous prefix and one byte; the added tokens keep their ids."""
    import json
    import os
    import re

    from tokenizers import Tokenizer
    from tokenizers.pre_tokenizers import ByteLevel

    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    size = min(token["id"] for token in data["added_tokens"])  # Qwen3: 151,643 vocab entries, then the specials
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    byte_char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}  # GPT-2's map
    tokens = sorted(ByteLevel.alphabet())
    seen, merges = set(tokens), []
    sources = sorted(Path(os.__file__).parent.rglob("*.py"))
    for source in sources:
        for word in re.findall(r" ?\S+", source.read_text(encoding="utf-8", errors="replace")):
            mapped = "".join(byte_char[b] for b in word.encode("utf-8"))[:16]
            for end in range(2, len(mapped) + 1):
                if mapped[:end] not in seen and len(tokens) < size:
                    seen.add(mapped[:end])
                    tokens.append(mapped[:end])
                    merges.append([mapped[: end - 1], mapped[end - 1]])
        if len(tokens) == size:
            break
    data["model"]["vocab"] = {token: index for index, token in enumerate(tokens)}
    data["model"]["merges"] = merges
    Tokenizer.from_str(json.dumps(data)).save(str(path))  # tokenizers' own writer: ids in order


def resave_sorted(source: Path, target: Path) -> None:
    """The same checkpoint with ``tokenizer.json`` re-saved by Python's json: keys sorted (the vocab no longer in
    id order, "merges" before "vocab"), indented, non-ASCII escaped."""
    import json
    import shutil

    shutil.copytree(source, target)
    path = target / "tokenizer.json"
    path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8")), sort_keys=True, indent=2), encoding="utf-8")


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
        qwen3_sized_tokenizer(folder)
        resave_sorted(folder, Path(tmp) / "qwen3-0.6b-resaved")
        for name in ("qwen3-0.6b", "qwen3-0.6b-resaved"):
            size = (Path(tmp) / name / "tokenizer.json").stat().st_size
            print(f"== {name}: tokenizer.json {size / 1e6:.1f} MB")
            folder_benchmark(Path(tmp) / name, args.rounds)
    predict_benchmark(args.calls)
    wrapper_benchmark(args.calls)


if __name__ == "__main__":
    main()
