"""Cost of the sequence checks (TG3xx, ``check_batch``), measured side by side in one run. Prints figures; not a test.

1. ``check_batch`` per call on 8 x 512 batches of a zoo family's ids, torch tensors on the CPU: a generate
   batch (left-padded prompts: ``input_ids`` + ``attention_mask``; goal well under 1 ms) and a training batch
   (+ ``labels``, rows ending in eos; goal under 2 ms). The two are called alternately and the medians of many
   calls printed; the same batches as numpy arrays and as lists of lists, and the first read of
   ``report.layout`` (the table, built on first use), are printed for comparison.
2. One-step LoRA training of a zoo family (``zoo.lora_train(model, tokenizer, tmpdir, steps=1)``) with and
   without ``check_batch`` on its first two collated batches (the dataset's first rows, collated in order with
   the ``DataCollatorForLanguageModeling(tokenizer, mlm=False)`` the zoo's Trainer uses), in alternating runs:
   median wall time of each, their ratio, and the part of a checked run spent collating and checking
   (run-to-run noise of the training dwarfs it). Model building is outside the timed part.

Run from the repository root:
    .venv/bin/python benchmarks/sequence_checks.py [--calls 2000] [--rounds 9] [--family qwen3-0.6b]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROWS, WIDTH = 8, 512


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def batches(tokenizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A generate and a training batch, 8 x 512: ordinary ids, left padding of 0-63 per row, bos first; the
    training rows end in eos and their labels are the ids with -100 on padding."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(300, 5000, (ROWS, WIDTH), generator=generator)
    mask = torch.ones_like(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for row, start in enumerate(torch.randint(0, 64, (ROWS,), generator=generator).tolist()):
        ids[row, :start] = pad
        mask[row, :start] = 0
        if tokenizer.bos_token_id is not None:
            ids[row, start] = tokenizer.bos_token_id
    generate = {"input_ids": ids, "attention_mask": mask}
    train_ids = ids.clone()
    train_ids[:, -1] = tokenizer.eos_token_id
    train = {"input_ids": train_ids, "attention_mask": mask, "labels": torch.where(mask.bool(), train_ids, -100)}
    return generate, train


def per_call(family: str, calls: int) -> None:
    from pytest_tokenguard.static.sequences import check_batch
    from pytest_tokenguard.suite import zoo

    model, tokenizer = zoo.build(family)
    generate, train = batches(tokenizer)
    for batch, purpose in ((generate, "generate"), (train, "train")):
        report = check_batch(batch, tokenizer, model)
        assert report.codes() == [], f"{purpose} batch should be clean: {report}"  # a benchmark of the common case

    variants = {
        "torch": (generate, train),
        "numpy": tuple({k: v.numpy() for k, v in b.items()} for b in (generate, train)),
        "lists": tuple({k: v.tolist() for k, v in b.items()} for b in (generate, train)),
    }
    print(f"[1] check_batch on {ROWS} x {WIDTH} batches of {family}, {calls} alternating calls each, median per call:")
    for kind, (gen, tr) in variants.items():
        n = calls if kind != "lists" else max(20, calls // 20)
        for _ in range(min(50, n)):  # warm-up
            check_batch(gen, tokenizer, model)
            check_batch(tr, tokenizer, model)
        times: dict[str, list[float]] = {"generate": [], "train": []}
        for _ in range(n):
            times["generate"].append(timed(functools.partial(check_batch, gen, tokenizer, model)))
            times["train"].append(timed(functools.partial(check_batch, tr, tokenizer, model)))
        generate_ms, train_ms = (statistics.median(times[k]) * 1000 for k in ("generate", "train"))
        goals = "   (goals: < 1 ms, < 2 ms)" if kind == "torch" else ""
        print(f"    {kind:<6} generate {generate_ms:7.3f} ms   train (with labels) {train_ms:7.3f} ms{goals}")
    layout_times = []
    for _ in range(max(20, calls // 20)):
        report = check_batch(generate, tokenizer, model)
        layout_times.append(timed(functools.partial(getattr, report, "layout")))
    print(f"    report.layout on first use (only when the table is wanted): {statistics.median(layout_times) * 1000:.3f} ms")


def training_ratio(family: str, rounds: int) -> None:
    from transformers import DataCollatorForLanguageModeling

    from pytest_tokenguard.static.sequences import check_batch
    from pytest_tokenguard.suite import zoo

    checking: list[float] = []  # the part of a checked run spent collating and checking

    def run(checked: bool) -> float:
        model, tokenizer = zoo.build(family)
        with tempfile.TemporaryDirectory() as output, contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            if checked:
                collate = DataCollatorForLanguageModeling(tokenizer, mlm=False)
                rows = [dict(tokenizer(text, truncation=True, max_length=64)) for text in zoo.chat_texts(tokenizer)]
                for first in (0, 2):  # per_device_train_batch_size=2: the first two batches
                    check_batch(collate(rows[first : first + 2]), tokenizer, model)
                checking.append(time.perf_counter() - start)
            with warnings.catch_warnings():  # transformers' deprecation notes would interleave with the figures
                warnings.simplefilter("ignore", FutureWarning)
                zoo.lora_train(model, tokenizer, output, steps=1)
            return time.perf_counter() - start

    run(False)  # warm-up: imports, Trainer set-up caches
    plain, checked = [], []
    for _ in range(rounds):
        plain.append(run(False))
        checked.append(run(True))
    median_plain, median_checked, median_checking = (statistics.median(v) for v in (plain, checked, checking))
    print(f"[2] zoo.lora_train({family}, steps=1), {rounds} alternating runs, median wall (fastest run):")
    print(f"    without check_batch               {median_plain * 1000:8.1f} ms   ({min(plain) * 1000:.1f} ms)")
    print(f"    with check_batch on 2 batches     {median_checked * 1000:8.1f} ms   ({min(checked) * 1000:.1f} ms)")
    print(f"    ratio                             {median_checked / median_plain:8.3f}   ({min(checked) / min(plain):.3f})")
    share = median_checking / median_plain
    print(
        f"    of which collating + checking     {median_checking * 1000:8.2f} ms   ({share:.2%} of a run; "
        f"runs without the check spread over {min(plain) * 1000:.0f}-{max(plain) * 1000:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--family", default="qwen3-0.6b")
    args = parser.parse_args()
    per_call(args.family, args.calls)
    training_ratio(args.family, args.rounds)


if __name__ == "__main__":
    main()
