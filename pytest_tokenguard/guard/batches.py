"""The sequence checks (TG3xx) where batches meet the model, under ``--tokenguard-calls``.

* training: the first few batches each ``Trainer`` (and any subclass: trl's trainers too) hands to
  ``training_step``, whatever collator built them, are checked with ``check_batch(purpose="train")``;
* generation: every ``generate()`` input (``input_ids`` / ``attention_mask``) with ``purpose="generate"``.

Failing findings (errors; warnings too with strict) are recorded like every other runtime finding, with
``[at ...]`` in the message. The static checks are imported at the first checked batch.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tokenguard.guard.calls import Options, Recorder

#: batches checked per Trainer: the collator's behaviour shows in the first ones, and checking more costs time
BATCHES_PER_TRAINER = 2

_seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def record(target: Recorder, options: Options, report: Any, where: str) -> None:
    """Record the failing findings of a ``check_batch`` report (``StaticFinding``s) on ``target``."""
    from pytest_tokenguard.static.checks import STATIC_CODES

    for finding in report.failing(strict=options.strict):
        target.add(
            finding.code,
            STATIC_CODES[finding.code].title,
            f"{finding.message} [at {where}]",
            "pytest_tokenguard.calls",
            "check",
            finding.severity.upper(),
            finding.hint,
            {"field": finding.field, "values": finding.values, "severity": finding.severity, "at": where},
            "fault" if finding.severity == "error" else "notice",  # warnings reach here only under strict
        )


def check_training_step(target: Recorder, options: Options, trainer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``Trainer.training_step(model, inputs, ...)``: check the trainer's first ``BATCHES_PER_TRAINER`` batches."""
    if not options.calls:
        return
    count = _seen.get(trainer, 0)
    if count >= BATCHES_PER_TRAINER:
        return
    _seen[trainer] = count + 1
    inputs = kwargs.get("inputs", args[1] if len(args) > 1 else None)
    if not isinstance(inputs, Mapping) or inputs.get("input_ids") is None:
        return
    from pytest_tokenguard.static.sequences import check_batch

    tokenizer = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    model = getattr(trainer, "model", None)
    report = check_batch(inputs, tokenizer, model, purpose="train")
    record(target, options, report, f"{type(trainer).__name__}.training_step() batch {count + 1}")


def check_generate_inputs(target: Recorder, options: Options, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``generate(inputs, attention_mask=..., tokenizer=...)``: check the prompt batch."""
    input_ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
    if input_ids is None or not hasattr(input_ids, "shape") or len(input_ids.shape) != 2:
        return
    from pytest_tokenguard.static.sequences import check_batch

    batch: dict[str, Any] = {"input_ids": input_ids}
    if kwargs.get("attention_mask") is not None:
        batch["attention_mask"] = kwargs["attention_mask"]
    report = check_batch(batch, kwargs.get("tokenizer"), model, purpose="generate")
    record(target, options, report, "generate()")
