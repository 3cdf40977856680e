"""Checks where the objects meet: at ``Trainer.train()`` and ``generate()``, while the guard is on.

Two independent uses of the same wrappers:

* synthesis — on transformers < 4.56 the Trainer aligns nothing and logs nothing, so a test that
  trains on misaligned tokens would pass there and fail on 5.x. At each ``Trainer.train()`` the
  5.18+ algorithm is run on the objects and, where it would have aligned something, a TG101 is
  recorded (marked as synthesized), so the verdict is the same on every version.
* ``--tokenguard-calls`` — every ``Trainer.train()`` (model and processing class before the Trainer
  touches them) and ``generate()`` (model and effective generation config) is checked statically;
  failing TG2xx findings are recorded like log findings.

The wrappers are installed lazily, once the transformers module is imported (the plugin never
imports it), and removed at the end of the session.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from types import SimpleNamespace
from typing import Any, Protocol

from . import capture
from .alignment import current_alignment
from .catalog import BY_CODE, version_key
from .checks import STATIC_CODES, check_layout
from .layout import TokenLayout
from .objects import layout_from_objects, unwrap_tokenizer

#: First transformers release whose Trainer aligns special tokens (PR #38441).
TRAINER_ALIGNS_SINCE = (4, 56)
_TOKEN_KWARGS = ("bos_token_id", "eos_token_id", "pad_token_id")


class Recorder(Protocol):
    def add(self, code: str, title: str, message: str, logger: str, channel: str, level: str, fix: str,
            details: dict[str, Any] | None = None) -> None: ...


@dataclass
class Options:
    #: "auto" (only where the installed Trainer does not align), "always" or "never"
    synthesize: str = "never"
    calls: bool = False
    strict: bool = False
    _synthesize_now: bool | None = None

    @property
    def synthesizing(self) -> bool:
        if self._synthesize_now is None:
            self._synthesize_now = self.synthesize == "always" or (
                self.synthesize == "auto" and not trainer_aligns(installed_transformers()))
        return self._synthesize_now

    @property
    def active(self) -> bool:
        return self.calls or self.synthesizing


def installed_transformers() -> str | None:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def version_tuple(version: str) -> tuple[int, int]:
    major, minor, _ = version_key(version)
    return major, minor


def trainer_aligns(version: str | None) -> bool:
    return version is None or version_tuple(version) >= TRAINER_ALIGNS_SINCE


_options = Options()
_target: Recorder | None = None
_patched: list[tuple[Any, str, Any]] = []  # (owner, attribute, original)
_done: set[str] = set()


def synthesizing() -> bool:
    """Whether this session synthesizes TG101 at ``Trainer.train()``."""
    return _options.synthesizing


def configure(options: Options) -> None:
    global _options
    _options = options


def set_target(recorder: Recorder | None) -> None:
    global _target
    _target = recorder


_MODULES = ("transformers.trainer", "transformers.generation.utils")


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps ``Trainer.train``/``generate`` right after their module is imported, even when that happens
    inside a test (the first Trainer of a run is often built inside the first test that trains)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _MODULES or getattr(self.local, "busy", False):
            return None
        self.local.busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.local.busy = False
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return None
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            loader.exec_module = original
            ensure_installed()

        loader.exec_module = exec_module
        return spec


_finder: _AfterImport | None = None


def ensure_installed() -> None:
    """Wrap ``Trainer.train`` / ``generate`` once their modules are imported. Cheap when done."""
    global _finder
    if not _options.active or len(_done) == 2:
        return
    if _finder is None:
        _finder = _AfterImport()
        sys.meta_path.insert(0, _finder)
    if "train" not in _done and "transformers.trainer" in sys.modules:
        _done.add("train")
        _wrap(sys.modules["transformers.trainer"].Trainer, "train", _check_train)
    if "generate" not in _done and "transformers.generation.utils" in sys.modules:
        _done.add("generate")
        if _options.calls:
            _wrap(sys.modules["transformers.generation.utils"].GenerationMixin, "generate", _check_generate)


def uninstall() -> None:
    global _finder
    if _finder is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_finder)
        _finder = None
    while _patched:
        owner, name, original = _patched.pop()
        setattr(owner, name, original)
    _done.clear()
    set_target(None)


def _wrap(owner: Any, name: str, check: Callable[[Recorder, Any, tuple[Any, ...], dict[str, Any]], None]) -> None:
    original = owner.__dict__[name]

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        target = _target
        if target is not None and not capture.busy():
            # What the check itself logs is not the test's; and a check must never break the call it guards.
            with capture.muted(), contextlib.suppress(Exception):
                check(target, self, args, kwargs)
        return original(self, *args, **kwargs)

    wrapper.__tokenguard_original__ = original  # type: ignore[attr-defined]
    _patched.append((owner, name, original))
    setattr(owner, name, wrapper)


def _record_static(target: Recorder, layout: TokenLayout, where: str) -> None:
    for finding in check_layout(layout).failing(strict=_options.strict):
        target.add(finding.code, STATIC_CODES[finding.code].title, f"{finding.message} [at {where}]",
                   "pytest_tokenguard.calls", "check", finding.severity.upper(), finding.hint,
                   {"field": finding.field, "values": finding.values, "severity": finding.severity, "at": where})


def _check_train(target: Recorder, trainer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    model = getattr(trainer, "model", None)
    processing = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    tokenizer = unwrap_tokenizer(processing)
    # like the Trainer: only a tokenizer (or a processor carrying one) is aligned
    if model is None or not hasattr(model, "config") or not hasattr(tokenizer, "eos_token_id"):
        return
    layout = layout_from_objects(model, processing)
    if _options.synthesizing:
        updated = current_alignment(layout)
        if updated:
            entry = BY_CODE["TG101"]
            version = installed_transformers()
            message = (
                "The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation config. "
                "The model config and generation config were aligned accordingly, being updated with the "
                f"tokenizer's values. Updated tokens: {updated}."
            )
            target.add("TG101", entry.title, message, "pytest_tokenguard.synthesized", "synthesized", "WARNING",
                       entry.fix, {"updated_tokens": updated, "synthesized": True, "transformers": version})
    if _options.calls:
        _record_static(target, layout, "Trainer.train()")


def _token_fingerprint(config: Any) -> tuple[Any, ...]:
    if config is None:
        return (None,)
    values = [getattr(config, key, None) for key in _TOKEN_KWARGS]
    return (id(config), *(tuple(v) if isinstance(v, list) else v for v in values),
            getattr(config, "transformers_version", None))


#: fingerprint of everything the effective token ids depend on -> those ids
_effective_cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def effective_token_ids(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """bos/eos/pad of the generation config ``generate`` will use (a plain namespace).

    The installed ``_prepare_generation_config`` decides (its merging rules changed across versions);
    its answer is cached on the token ids it depends on, because it deep-copies whole configs and a
    test may call ``generate`` in a loop.
    """
    passed = kwargs.get("generation_config", args[1] if len(args) > 1 else None)
    token_kwargs = {key: kwargs[key] for key in _TOKEN_KWARGS if key in kwargs}
    key: tuple[Any, ...] = (
        id(type(model)), _token_fingerprint(passed), _token_fingerprint(getattr(model, "generation_config", None)),
        tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in token_kwargs.items()),
    )
    try:
        cached = _effective_cache.get(key)
    except TypeError:  # an unhashable id value: not cacheable, compute it
        cached, key = None, ()
    if cached is None:
        config = effective_generation_config(model, passed, token_kwargs)
        cached = tuple(copy.deepcopy(getattr(config, k, None)) for k in _TOKEN_KWARGS) if config is not None else ()
        if key:
            if len(_effective_cache) > 256:
                _effective_cache.clear()
            _effective_cache[key] = cached
    if not cached:
        return None
    return SimpleNamespace(**dict(zip(_TOKEN_KWARGS, copy.deepcopy(cached), strict=True)))


def effective_generation_config(model: Any, passed: Any, token_kwargs: dict[str, Any]) -> Any:
    """The installed ``_prepare_generation_config`` when it accepts the call, else the passed (or the
    model's) config with the token kwargs applied."""
    prepare = getattr(model, "_prepare_generation_config", None)
    if callable(prepare):
        try:
            prepared = prepare(passed, **token_kwargs)
            return prepared[0] if isinstance(prepared, tuple) else prepared
        except Exception:  # generate() itself will raise or warn about this; the fallback is enough here
            pass
    config = copy.deepcopy(passed if passed is not None else getattr(model, "generation_config", None))
    for key, value in token_kwargs.items():
        if config is not None:
            setattr(config, key, value)
    return config


def _check_generate(target: Recorder, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if not hasattr(model, "config"):
        return
    generation = effective_token_ids(model, args, kwargs)
    layout = layout_from_objects(model, kwargs.get("tokenizer"), generation)
    _record_static(target, layout, "generate()")
