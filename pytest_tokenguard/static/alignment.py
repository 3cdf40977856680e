"""What the Trainer does to special tokens (predicted exactly), and helpers that make them agree.

``predict_trainer_alignment`` asks the installed transformers: it runs the installed alignment
code (``trainer_utils.align_special_tokens`` from 5.2, ``Trainer._align_special_tokens`` in
4.56-5.1) on copies of the configs, and reads the "Updated tokens" it would log. Before 4.56 the
Trainer aligns nothing, so the prediction is ``{}``. ``current_alignment`` is the 5.18+
algorithm on plain values, used where the installed version has none (synthesized TG101) and
tested against the installed function.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pytest_tokenguard.guard.catalog import classify, parse_updated_tokens
from pytest_tokenguard.static.layout import FIELDS, TOKEN_ID_ATTRIBUTES, TokenLayout, id_list, valid_ids
from pytest_tokenguard.static.objects import (
    base_model,
    layout_from_objects,
    special_ids,
    text_config,
    tokenizer_end_of_turn,
    unwrap_tokenizer,
)

_TRAP_LOCK = threading.RLock()  # re-entrant: a tokenizer property may predict again


def current_alignment(layout: TokenLayout) -> dict[str, Any]:
    """The ``Updated tokens`` dict of transformers >= 5.18 for ``layout`` (pure; eos, bos, pad order)."""
    updated: dict[str, Any] = {}
    if layout.model is None or layout.tokenizer is None:
        return updated
    for name in ("eos", "bos", "pad"):
        tok = layout.tokenizer[name]
        if tok is None:  # a token the tokenizer does not define is never propagated
            continue
        in_config = tok in id_list(layout.model[name])
        in_generation = layout.generation is None or tok in _as_list(layout.generation[name])
        if not (in_config and in_generation):
            updated[f"{name}_token_id"] = tok
    return updated


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class _Standin:
    """What the alignment code reads of a model: copies of ``config`` and ``generation_config``."""

    def __init__(self, model: Any) -> None:
        self.config = copy.deepcopy(model.config)
        if hasattr(model, "generation_config"):
            self.generation_config = copy.deepcopy(model.generation_config)


class _Trap:
    """Stands in for a transformers module logger: keeps this thread's TG101, forwards the rest."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.owner = threading.get_ident()
        self.updated: list[dict[str, Any]] = []

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if threading.get_ident() == self.owner:
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                text = str(msg)
            match = classify(text, 30)
            if match is not None and match.code == "TG101":
                self.updated.append(parse_updated_tokens(match.groups.get("updated", "{}")) or {})
                return
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the caller, not this stand-in
        self.real.warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@contextmanager
def _trapped(module: Any) -> Iterator[_Trap]:
    with _TRAP_LOCK:
        trap = _Trap(module.logger)
        module.logger = trap
        try:
            yield trap
        finally:
            module.logger = trap.real


def predict_trainer_alignment(model: Any, tokenizer: Any) -> dict[str, Any]:
    """Exactly the ``Updated tokens`` dict the installed ``Trainer.train()`` would log for ``model`` and
    ``tokenizer``, e.g. ``{"pad_token_id": 151643}`` (``{}`` when it changes nothing).

    The answer comes from the installed transformers itself: ``trainer_utils.align_special_tokens`` (5.2+)
    or ``Trainer._align_special_tokens`` (4.56-5.1), run on copies of ``model.config`` and
    ``model.generation_config``; before 4.56 the Trainer aligns nothing and this returns ``{}``, as it does
    when ``tokenizer`` is not a tokenizer or processor (the Trainer skips alignment then). Neither argument
    is modified. Raises ``ImportError`` when transformers is not installed.
    """
    from transformers import PreTrainedTokenizerBase
    from transformers.processing_utils import ProcessorMixin

    if not isinstance(tokenizer, (PreTrainedTokenizerBase, ProcessorMixin)) or not hasattr(model, "config"):
        return {}  # the Trainer skips alignment in this case
    standin = _Standin(model)
    import transformers.trainer_utils as trainer_utils

    function = getattr(trainer_utils, "align_special_tokens", None)
    if function is not None:  # 5.2+
        with _trapped(trainer_utils) as trap:
            function(standin, tokenizer)
    else:
        import transformers.trainer as trainer_module

        method = getattr(trainer_module.Trainer, "_align_special_tokens", None)
        if method is None:  # before 4.56 the Trainer aligns nothing
            return {}
        fake_trainer = type("_FakeTrainer", (), {})()
        fake_trainer.model = standin
        fake_trainer.processing_class = tokenizer
        with _trapped(trainer_module) as trap:
            method(fake_trainer)
    return trap.updated[-1] if trap.updated else {}


def _dedupe(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _eos_value(ids: list[int], previous: Any) -> Any:
    """Keep the declared shape: a single id stays an int unless a list was declared."""
    if len(ids) == 1 and not isinstance(previous, list):
        return ids[0]
    return ids or None


def _end_of_turn_id(tokenizer: Any) -> int | None:
    found, _ = tokenizer_end_of_turn(tokenizer)
    return found[1] if found else None


def _set(target: Any, label: str, name: str, value: Any, changes: dict[str, tuple[Any, Any]]) -> None:
    attribute = f"{name}_token_id"
    old = getattr(target, attribute, None)
    if old != value:
        setattr(target, attribute, value)
        changes[f"{label}.{attribute}"] = (old, value)


def align_special_tokens(model: Any, tokenizer: Any, *, source: str = "tokenizer") -> dict[str, tuple[Any, Any]]:
    """Make model config, generation config and tokenizer agree; return ``{"where.field": (old, new)}``.

    ``source="tokenizer"`` (what the Trainer does, done deliberately): the configs take the tokenizer's
    ids; the generation eos keeps its ids and gains the tokenizer eos and the chat end of turn.
    ``source="model"``: the tokenizer's special tokens are set from the model config, and the
    generation config follows. An int id is never replaced by ``None``; ids the model cannot embed are
    dropped from stop lists. ``model`` may be a ``PreTrainedModel`` or a peft ``PeftModel`` (its base is
    changed); the chat end of turn comes from rendering ``tokenizer.chat_template``.

    Returns the changes made, e.g. ``{"model_config.pad_token_id": (None, 151643)}``. Raises ``ValueError``
    for another ``source``.
    """
    if source not in ("tokenizer", "model"):
        raise ValueError(f"source must be 'tokenizer' or 'model', not {source!r}")
    inner = base_model(model)
    config = text_config(inner.config)
    generation = getattr(inner, "generation_config", None)
    tok = unwrap_tokenizer(tokenizer)
    changes: dict[str, tuple[Any, Any]] = {}
    rows = layout_from_objects(inner).rows

    def embeddable(value: Any) -> list[int]:
        # an id the model cannot embed can never be generated: dropping it from a stop list loses nothing
        return [v for v in valid_ids(value) if v >= 0 and (rows is None or v < rows)]

    old_model_eos = embeddable(getattr(config, "eos_token_id", None))
    eot = _end_of_turn_id(tok)

    if source == "model":
        for name in FIELDS:
            ids = valid_ids(getattr(config, f"{name}_token_id", None))
            if not ids or getattr(tok, f"{name}_token_id", None) in ids:
                continue
            attribute = f"{name}_token"
            old = getattr(tok, attribute, None)
            setattr(tok, attribute, tok.convert_ids_to_tokens(ids[0]))
            changes[f"tokenizer.{attribute}"] = (old, getattr(tok, attribute))
    for name in FIELDS:
        value = getattr(tok, f"{name}_token_id", None)
        if value is None:
            continue
        if name == "eos":
            declared = getattr(config, "eos_token_id", None)
            if isinstance(declared, list):
                new = (
                    _dedupe([value, *embeddable(declared)])
                    if value not in declared or embeddable(declared) != declared
                    else declared
                )
            else:
                new = value
            _set(config, "model_config", name, new, changes)
        else:
            _set(config, "model_config", name, value, changes)
    if generation is None and eot is not None and eot not in valid_ids(getattr(config, "eos_token_id", None)):
        # no generation config: generate() stops on the model config eos, so the end of turn goes there; the
        # tokenizer's eos stays even where the model cannot embed it (dropping it would be a new TG201; the
        # out-of-range id is reported as TG204 either way)
        declared = getattr(config, "eos_token_id", None)
        tokenizer_eos = getattr(tok, "eos_token_id", None)
        kept = [v for v in valid_ids(declared) if v == tokenizer_eos or v in embeddable(declared)]
        _set(config, "model_config", "eos", _eos_value(_dedupe([*kept, eot]), declared), changes)
    if generation is not None:
        for name in FIELDS:
            value = getattr(tok, f"{name}_token_id", None)
            if name == "eos":
                current = getattr(generation, "eos_token_id", None)
                ids = _dedupe(
                    [
                        *embeddable(current),
                        *valid_ids(value),
                        *old_model_eos,
                        *embeddable(getattr(config, "eos_token_id", None)),
                        *([eot] if eot is not None else []),
                    ]
                )
                if ids and ids != id_list(current):  # nothing valid to stop on: leave it (never None)
                    _set(generation, "generation_config", name, _eos_value(ids, current), changes)
            elif value is not None:
                _set(generation, "generation_config", name, value, changes)
    return changes


_TOKEN_KEYWORDS = frozenset(TOKEN_ID_ATTRIBUTES)


def generation_config_ids(model: Any, tokenizer: Any) -> dict[str, Any]:
    """The bos/eos/pad ids ``generation_config_for`` uses (pure reading, no GenerationConfig)."""
    inner = base_model(model)
    config = text_config(inner.config)
    tok = unwrap_tokenizer(tokenizer)
    eot = _end_of_turn_id(tok)
    # stop ids the existing generation config declares that are the tokenizer's special tokens stay: they are
    # deliberate (<|tool_response>: without it tool calls run on)
    current = getattr(getattr(inner, "generation_config", None), "eos_token_id", None)
    specials = special_ids(tok) if tok is not None else frozenset()
    eos = _dedupe(
        [
            *valid_ids(getattr(config, "eos_token_id", None)),
            *valid_ids(getattr(tok, "eos_token_id", None)),
            *([eot] if eot is not None else []),
            *(v for v in valid_ids(current) if v in specials),
        ]
    )

    def first(*values: Any) -> Any:
        return next((v for v in values if v is not None), None)

    return {
        "bos_token_id": first(getattr(tok, "bos_token_id", None), getattr(config, "bos_token_id", None)),
        "eos_token_id": _eos_value(eos, None),
        "pad_token_id": first(getattr(tok, "pad_token_id", None), getattr(config, "pad_token_id", None), eos[0] if eos else None),
    }


def generation_config_for(model: Any, tokenizer: Any, **sampling: Any) -> Any:
    """A ``GenerationConfig`` whose special tokens check clean, with ``sampling`` passed through.

    eos: model eos + tokenizer eos + the chat template's end of turn; pad: the tokenizer's (else
    the model's, else eos); bos: the tokenizer's, else the model's. Returns a
    ``transformers.GenerationConfig``; raises ``TypeError`` when ``sampling`` names a token id (this
    function sets them) and whatever ``GenerationConfig`` raises for invalid sampling values.
    """
    clash = _TOKEN_KEYWORDS & set(sampling)
    if clash:
        raise TypeError(f"generation_config_for() sets {', '.join(sorted(clash))} itself from the model and tokenizer")
    from transformers import GenerationConfig

    return GenerationConfig(**generation_config_ids(model, tokenizer), **sampling)  # type: ignore[no-untyped-call]


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> list[str]:
    return [f"{where}: {old!r} -> {new!r}" for where, (old, new) in changes.items()]
