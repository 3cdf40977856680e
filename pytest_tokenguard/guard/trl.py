"""TG102: a trl trainer that rewrites the model's special tokens while it is built.

trl >= 1.13 copies the tokenizer's pad id (and, with ``eos_token=`` or ``chat_template_path=``, its eos id)
onto the model config and generation config inside the ``__init__`` of its trainers (``SFTTrainer``,
``DPOTrainer``, ``GRPOTrainer``, ``KTOTrainer``, ``RLOOTrainer``, ``RewardTrainer``, the experimental ones),
and logs nothing. ``Trainer.train()`` then finds nothing left to align, so no TG101 is logged: a model that
fails under a plain ``Trainer`` would pass under trl.

While the guard is attached, the ``__init__`` of every trl trainer class (a ``transformers.Trainer`` subclass
defined in a ``trl.trainer.*`` or ``trl.experimental.*`` module) is wrapped: the model's bos/eos/pad ids (its
config and generation config, peft unwrapped) are read before the original ``__init__`` and compared after
it; what trl changed is recorded as a TG102 in the running test's recorder (``routing.current``).

:mod:`pytest_tokenguard.guard.calls` installs the wrappers right after trl's trainer modules are imported
(``ensure_installed``) and removes them with the others; this module imports neither trl nor transformers.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from pytest_tokenguard.guard import capture, routing
from pytest_tokenguard.static.layout import TOKEN_ID_ATTRIBUTES

#: The finding's message; the catalog's TG102 pattern matches it.
MESSAGE = "{trainer}.__init__ rewrote special tokens: {updated}"
#: The logger name a TG102 finding carries (trl itself logs nothing).
LOGGER = "pytest_tokenguard.trl"

_local = threading.local()

#: a config has no such attribute / the model has no generation config
_ABSENT = object()


def trainer_classes(module: ModuleType) -> list[type]:
    """The trainer classes ``module`` defines: ``transformers.Trainer`` subclasses with their own ``__init__``."""
    trainer = getattr(sys.modules.get("transformers.trainer"), "Trainer", None)
    if not isinstance(trainer, type):
        return []
    name = module.__name__
    return [
        value
        for value in list(vars(module).values())
        if isinstance(value, type) and value.__module__ == name and issubclass(value, trainer) and "__init__" in value.__dict__
    ]


def _model_position(init: Callable[..., Any]) -> int | None:
    """Where ``model`` is among the positional arguments after ``self`` (None when there is no such parameter)."""
    try:
        names = list(inspect.signature(init).parameters)[1:]
    except (TypeError, ValueError):
        return 0
    return names.index("model") if "model" in names else None


def _token_ids(owner: Any) -> dict[str, Any]:
    if owner is None:
        return dict.fromkeys(TOKEN_ID_ATTRIBUTES, _ABSENT)
    values = {}
    for key in TOKEN_ID_ATTRIBUTES:
        value = getattr(owner, key, _ABSENT)
        values[key] = list(value) if isinstance(value, (list, tuple)) else value
    return values


def snapshot(model: Any) -> dict[str, dict[str, Any]] | None:
    """bos/eos/pad of the model's config (the text config, where trl writes, and the top-level one) and its
    generation config; None when ``model`` is no model (a hub id, None)."""
    from pytest_tokenguard.static.objects import base_model, text_config

    model = base_model(model)
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = text_config(config)
    return {
        "config": _token_ids(text),
        "top": _token_ids(config if config is not text else None),
        "generation": _token_ids(getattr(model, "generation_config", None)),
    }


def rewritten(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ids that changed, with their new value: the model config's where it changed, else the generation
    config's (bos, eos, pad order)."""
    updated: dict[str, Any] = {}
    for key in TOKEN_ID_ATTRIBUTES:
        for source in ("config", "top", "generation"):
            old, new = before[source][key], after[source][key]
            if old != new and new is not _ABSENT:
                updated[key] = new
                break
    return updated


def record(recorder: Any, trainer: str, updated: dict[str, Any]) -> None:
    """Add the TG102 finding for ``trainer`` (a class name) having rewritten ``updated`` to ``recorder``."""
    from pytest_tokenguard.guard.catalog import BY_CODE

    entry = BY_CODE["TG102"]
    recorder.add(
        "TG102",
        entry.title,
        MESSAGE.format(trainer=trainer, updated=updated),
        LOGGER,
        "synthesized",
        "WARNING",
        entry.fix,
        {"updated_tokens": updated, "trainer": trainer},
    )


def wrapped_init(cls: type, original: Callable[..., Any]) -> Callable[..., Any]:
    """``cls.__init__`` that records a TG102 when ``original`` changed the model's bos/eos/pad.

    Only the outermost wrapped ``__init__`` of a construction checks (``super().__init__`` of a trl base class
    is not a second finding); the check never breaks the trainer and records only while a test runs.
    """
    trainer = cls.__name__
    position = _model_position(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        state = routing.current
        if state is None or state.options is None or state.recorder is None or capture.busy() or getattr(_local, "inside", False):
            original(self, *args, **kwargs)
            return
        recorder = state.recorder
        model = before = None
        with capture.muted(), contextlib.suppress(Exception):
            if "model" in kwargs:
                model = kwargs["model"]
            elif position is not None and position < len(args):
                model = args[position]
            before = snapshot(model)
        _local.inside = True
        try:
            original(self, *args, **kwargs)
        finally:
            _local.inside = False
        if before is None:
            return
        with capture.muted(), contextlib.suppress(Exception):
            after = snapshot(model)
            updated = rewritten(before, after) if after is not None else {}
            if updated:
                record(recorder, trainer, updated)

    __init__.__tokenguard_original__ = original  # type: ignore[attr-defined]
    return __init__
