"""The sequence checks (TG3xx) where batches meet the model, under ``--tokenguard-calls``.

* training: the first few batches each ``Trainer`` (and any subclass: trl's trainers too) hands to
  ``training_step``, whatever collator built them, are checked field by field (``check_fields``): every token
  field ``input_ids`` / ``<prefix>input_ids`` with its ``<prefix>attention_mask``, ``<prefix>labels`` and
  ``<prefix>completion_mask`` (trl's DPO / KTO ``input_ids`` + ``completion_mask``, ORPO / CPO ``chosen_*`` /
  ``rejected_*`` / ``prompt_*``, KTO ``KL_*``). Online trainers (trl's GRPO, RLOO, ...) hand ``training_step`` a
  list of raw rows, not token ids: those batches are skipped with a note (``notes()``, and the test's
  observations under ``"call_notes"``); their prompts reach ``generate()``, checked there;
* generation: every ``generate()`` input (``input_ids`` / ``attention_mask``) with ``purpose="generate"``. A
  trainer's ``generate()`` call passes no tokenizer: the tokenizer of the trainer that last trained that model
  stands in (token strings in messages, the chat end of turn, the bos the tokenizer declares).

Failing findings (errors; warnings too with strict) are recorded like every other runtime finding, with
``[at ...]`` in the message. The static checks are imported at the first checked batch.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_tokenguard.guard.calls import Options, Recorder

#: batches checked per Trainer: the collator's behaviour shows in the first ones, and checking more costs time
BATCHES_PER_TRAINER = 2

_seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
#: model -> the processing class of the trainer that trains it (for its generate() calls, which pass none)
_tokenizers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: the latest notes on batches the checks could not read (newest last)
_notes: collections.deque[str] = collections.deque(maxlen=64)
#: the ``observations`` key of a test's recorder that holds its notes
NOTES_KEY = "call_notes"


def notes() -> list[str]:
    """The latest notes on batches skipped at ``training_step`` (no token fields), newest last."""
    return list(_notes)


def _note(target: Recorder, text: str) -> None:
    """Keep a note of a skipped batch: in :func:`notes` and the test's observations (``"call_notes"``)."""
    if text not in _notes:
        _notes.append(text)
    observations = getattr(target, "observations", None)
    if isinstance(observations, dict):
        listed = observations.setdefault(NOTES_KEY, [])
        if isinstance(listed, list) and text not in listed:
            listed.append(text)


def _remember_tokenizer(trainer: Any, tokenizer: Any) -> None:
    if tokenizer is None:
        return
    from pytest_tokenguard.static.objects import base_model

    for model in (getattr(trainer, "model", None), getattr(trainer, "model_wrapped", None)):
        for each in (model, base_model(model) if model is not None else None):
            if each is not None:
                try:
                    _tokenizers[each] = tokenizer
                except TypeError:  # not weak-referenceable
                    pass


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
    tokenizer = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    _remember_tokenizer(trainer, tokenizer)
    inputs = kwargs.get("inputs", args[1] if len(args) > 1 else None)
    name = type(trainer).__name__
    if not isinstance(inputs, Mapping):
        what = f"a {type(inputs).__name__}" + (f" of {len(inputs)} raw rows" if isinstance(inputs, (list, tuple)) else "")
        _note(
            target,
            f"{name}.training_step(): the batch is {what}, not token ids (an online trainer generates from it): "
            "skipped; its prompts are checked at generate()",
        )
        return
    from pytest_tokenguard.static.sequences import check_fields, token_fields

    if not token_fields(inputs):
        _note(target, f"{name}.training_step(): the batch has no token field (keys {sorted(map(str, inputs))[:8]}): skipped")
        return
    model = getattr(trainer, "model", None)
    where = f"{name}.training_step() batch {count + 1}"
    for prefix, report in check_fields(inputs, tokenizer, model, purpose="train").items():
        record(target, options, report, f"{where}, {prefix}input_ids" if prefix else where)


def check_generate_inputs(target: Recorder, options: Options, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``generate(inputs, attention_mask=..., tokenizer=...)``: check the prompt batch."""
    input_ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
    if input_ids is None or not hasattr(input_ids, "shape") or len(input_ids.shape) != 2:
        return
    from pytest_tokenguard.static.sequences import check_batch

    batch: dict[str, Any] = {"input_ids": input_ids}
    if kwargs.get("attention_mask") is not None:
        batch["attention_mask"] = kwargs["attention_mask"]
    tokenizer = kwargs.get("tokenizer")
    if tokenizer is None:
        try:
            tokenizer = _tokenizers.get(model)
        except TypeError:  # not weak-referenceable
            tokenizer = None
    report = check_batch(batch, tokenizer, model, purpose="generate")
    record(target, options, report, "generate()")
