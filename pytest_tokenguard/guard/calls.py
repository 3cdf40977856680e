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
imports it), and removed when the last session that uses them ends. Which test's recorder a
wrapped call reports to, and with which options, is the innermost session's (``routing.current``).
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
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from pytest_tokenguard import versions
from pytest_tokenguard.guard import capture, routing
from pytest_tokenguard.static.layout import TOKEN_ID_ATTRIBUTES

if TYPE_CHECKING:
    from pytest_tokenguard.static.layout import TokenLayout

# The checks themselves (static checks, alignment, catalog) are imported inside the functions that run
# them, at the first wrapped call: attaching the guard stays a few milliseconds.


class Recorder(Protocol):
    def add(
        self,
        code: str,
        title: str,
        message: str,
        logger: str,
        channel: str,
        level: str,
        fix: str,
        details: dict[str, Any] | None = None,
        severity: str | None = None,
    ) -> None: ...


@dataclass
class Options:
    """What one session asks of the call checks (``--tokenguard-calls``, ``--tokenguard-strict``, ini
    ``tokenguard_synthesize``)."""

    #: "auto" (only where the installed Trainer does not align), "always" or "never"
    synthesize: str = "never"
    calls: bool = False
    strict: bool = False
    _synthesize_now: bool | None = None

    @property
    def synthesizing(self) -> bool:
        if self._synthesize_now is None:
            self._synthesize_now = self.synthesize == "always" or (self.synthesize == "auto" and not versions.trainer_aligns())
        return self._synthesize_now

    @property
    def active(self) -> bool:
        """Whether the session needs the wrappers: always, since the trl trainer checks (TG102) run whenever
        the guard is attached; ``Trainer.train`` itself is wrapped only for synthesis or call checks."""
        return True


_MODULES = ("transformers.trainer", "transformers.generation.utils")
#: trl's trainer modules (``trl.trainer.sft_trainer``, ``trl.experimental.orpo.orpo_trainer`` ...); trl imports
#: them lazily, on the first access to a name such as ``trl.SFTTrainer``
_TRL_MODULE_PREFIXES = ("trl.trainer.", "trl.experimental.")


def _watched(name: str) -> bool:
    return name in _MODULES or name.startswith(_TRL_MODULE_PREFIXES)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps ``Trainer.train``/``generate`` and the trl trainers' ``__init__`` right after their module is
    imported, even when that happens inside a test (the first Trainer of a run is often built inside the
    first test that trains)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if getattr(self.local, "busy", False):
            return None
        if _trl.pending:  # a trl trainer module was still executing when the guard attached: it may be done now
            self.local.busy = True
            try:
                ensure_installed()
            finally:
                self.local.busy = False
        if not _watched(name):
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
            if name.startswith(_TRL_MODULE_PREFIXES) and _installation.users:
                _wrap_trl_module(module)  # still flagged as initializing: the scan would leave it for later
            ensure_installed()

        loader.exec_module = exec_module
        return spec


class _Installation:
    """The wrappers and the import hook, shared by every live session that wants them (reference-counted:
    an inner in-process session that ends leaves the outer session's wrappers in place)."""

    def __init__(self) -> None:
        self.users: list[Options] = []
        self.patched: list[tuple[Any, str, Any]] = []  # (owner, attribute, original)
        self.done: set[str] = set()
        self.finder: _AfterImport | None = None


_installation = _Installation()


def acquire(options: Options) -> None:
    """A session starts using the wrappers: the import hook always (trl trainers are watched under plain
    ``--tokenguard``), ``Trainer.train`` for synthesis or call checks, ``generate`` / ``training_step`` for call checks."""
    if options.active:
        _installation.users.append(options)
        ensure_installed()


def release(options: Options) -> None:
    """That session ends: the last user removes the wrappers and the import hook; an inner session (pytester)
    that needed wrappers the outer one does not (``--tokenguard-calls`` inside a plain ``--tokenguard`` run)
    takes them away again, so the outer session keeps exactly what it asked for."""
    users = _installation.users
    for index, user in enumerate(users):
        if user is options:
            del users[index]
            break
    if not users:
        _uninstall()
    elif (options.calls or options.synthesizing) and not any(user.calls or user.synthesizing for user in users):
        _uninstall()
        ensure_installed()


def ensure_installed() -> None:
    """Wrap ``Trainer.train`` / ``generate`` and the trl trainers' ``__init__`` once their modules are imported.
    Cheap when done."""
    inst = _installation
    if not inst.users:
        return
    if inst.finder is None:
        inst.finder = _AfterImport()
        sys.meta_path.insert(0, inst.finder)
    if len(inst.done) < 3:
        # None while the module is still executing (``from transformers import Trainer`` as the first import runs
        # transformers.generation.utils inside transformers.trainer): its own import hook installs it afterwards
        trainer = getattr(sys.modules.get("transformers.trainer"), "Trainer", None)
        mixin = getattr(sys.modules.get("transformers.generation.utils"), "GenerationMixin", None)
        train = any(user.calls or user.synthesizing for user in inst.users)  # TG101 synthesis or call checks
        if "train" not in inst.done and trainer is not None and train:
            inst.done.add("train")
            _wrap(trainer, "train", _check_train)
        generate = any(user.calls for user in inst.users)
        if "generate" not in inst.done and mixin is not None and generate:
            inst.done.add("generate")
            _wrap(mixin, "generate", _check_generate)
        # the batches a Trainer (or a trl subclass) trains on: the first ones, whatever collator built them
        if "training_step" not in inst.done and trainer is not None and generate:
            from pytest_tokenguard.guard import batches

            inst.done.add("training_step")
            _wrap(trainer, "training_step", batches.check_training_step)
    if "trl" in sys.modules and (_trl.pending or len(sys.modules) != _trl.seen or inst.users[-1] is not _trl.seen_by):
        _scan_trl()


class _TrlInstallation:
    """The trl trainer modules whose classes are wrapped (the ``__init__`` wrappers themselves are in
    ``_installation.patched``, restored with the others)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        #: name -> the module object whose classes were wrapped (a module imported again is a new object)
        self.modules: dict[str, Any] = {}
        self.classes: list[str] = []
        #: size of ``sys.modules`` and the newest user at the last scan: neither changed, nothing to scan
        self.seen = -1
        self.seen_by: Options | None = None
        #: a trainer module was still executing at the last scan (its classes may not exist yet)
        self.pending = False
        self.scanning = False


_trl = _TrlInstallation()


def _scan_trl() -> None:
    """Wrap the trainer classes of every imported trl trainer module not done yet (the guard may attach
    after trl was imported, e.g. in an in-process pytester run)."""
    if _trl.scanning:
        return
    _trl.scanning = True
    try:
        from pytest_tokenguard.guard import trl  # noqa: F401  (imported before the scan: its import runs the finder)

        _trl.seen = len(sys.modules)
        _trl.seen_by = _installation.users[-1] if _installation.users else None
        _trl.pending = False
        for name in [name for name in list(sys.modules) if name.startswith(_TRL_MODULE_PREFIXES)]:
            module = sys.modules.get(name)
            if module is None or _trl.modules.get(name) is module:
                continue
            if getattr(getattr(module, "__spec__", None), "_initializing", False):
                _trl.pending = True  # executing right now: wrapped at a later import (see _AfterImport.find_spec)
                continue
            _wrap_trl_module(module)
    finally:
        _trl.scanning = False


def _wrap_trl_module(module: Any) -> None:
    """Wrap the ``__init__`` of the trl trainer classes ``module`` defines (once per module)."""
    from pytest_tokenguard.guard import trl

    name = getattr(module, "__name__", "")
    if _trl.modules.get(name) is module:
        return
    _trl.modules[name] = module
    with contextlib.suppress(Exception):  # an odd module must not break the import that triggered this
        for cls in trl.trainer_classes(module):
            original = cls.__dict__["__init__"]
            if hasattr(original, "__tokenguard_original__"):
                continue
            _installation.patched.append((cls, "__init__", original))
            type.__setattr__(cls, "__init__", trl.wrapped_init(cls, original))
            _trl.classes.append(cls.__name__)


def installed_trl_wrappers() -> list[str]:
    """The trl trainer classes whose ``__init__`` is wrapped right now (for tests and diagnostics)."""
    return sorted(set(_trl.classes))


def _uninstall() -> None:
    inst = _installation
    if inst.finder is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(inst.finder)
        inst.finder = None
    while inst.patched:
        owner, name, original = inst.patched.pop()
        setattr(owner, name, original)
    inst.done.clear()
    _trl.reset()


def synthesizing() -> bool:
    """Whether the session running the current test synthesizes TG101 at ``Trainer.train()``."""
    state = routing.current
    return state is not None and state.options is not None and state.options.synthesizing


Check = Callable[[Recorder, Options, Any, tuple[Any, ...], dict[str, Any]], None]


def _wrap(owner: Any, name: str, check: Check) -> None:
    original = owner.__dict__[name]

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = routing.current
        if state is not None and state.options is not None and state.recorder is not None and not capture.busy():
            # What the check itself logs is not the test's; and a check must never break the call it guards.
            with capture.muted(), contextlib.suppress(Exception):
                check(state.recorder, state.options, self, args, kwargs)
        return original(self, *args, **kwargs)

    wrapper.__tokenguard_original__ = original  # type: ignore[attr-defined]
    _installation.patched.append((owner, name, original))
    setattr(owner, name, wrapper)


def _record_static(
    target: Recorder, options: Options, layout: TokenLayout, where: str, assistant_only_loss: bool = False
) -> None:
    from pytest_tokenguard.guard.batches import record
    from pytest_tokenguard.static.checks import check_layout

    if where == "Trainer.train()":
        layout.padding_side = None  # training pads on the right on purpose (TG211 is about serving)
    if not assistant_only_loss:  # TG214 matters only to a training loss that is the template's assistant mask
        layout.assistant_mask_end_of_turn = None
    record(target, options, check_layout(layout), where)


def _check_train(target: Recorder, options: Options, trainer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    from pytest_tokenguard.guard.catalog import BY_CODE, TG101_MESSAGE
    from pytest_tokenguard.static.alignment import current_alignment
    from pytest_tokenguard.static.objects import layout_from_objects, unwrap_tokenizer

    model = getattr(trainer, "model", None)
    processing = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    tokenizer = unwrap_tokenizer(processing)
    # like the Trainer: only a tokenizer (or a processor carrying one) is aligned
    if model is None or not hasattr(model, "config") or not hasattr(tokenizer, "eos_token_id"):
        return
    layout = layout_from_objects(model, processing)
    if options.synthesizing:
        updated = current_alignment(layout)
        if updated:
            entry = BY_CODE["TG101"]
            version = versions.installed_text("transformers")
            message = TG101_MESSAGE.format(updated=updated)
            target.add(
                "TG101",
                entry.title,
                message,
                "pytest_tokenguard.synthesized",
                "synthesized",
                "WARNING",
                entry.fix,
                {"updated_tokens": updated, "synthesized": True, "transformers": version},
            )
    if options.calls:
        # trl's SFTConfig(assistant_only_loss=True) trains on return_assistant_tokens_mask's blocks only
        assistant_only = getattr(getattr(trainer, "args", None), "assistant_only_loss", False) is True
        _record_static(target, options, layout, "Trainer.train()", assistant_only)


def _token_fingerprint(config: Any) -> tuple[Any, ...]:
    if config is None:
        return (None,)
    values = [getattr(config, key, None) for key in TOKEN_ID_ATTRIBUTES]
    return (id(config), *(tuple(v) if isinstance(v, list) else v for v in values), getattr(config, "transformers_version", None))


#: fingerprint of everything the effective token ids depend on -> those ids
_effective_cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def effective_token_ids(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """bos/eos/pad of the generation config ``generate`` will use (a plain namespace).

    The installed ``_prepare_generation_config`` decides (its merging rules changed across versions);
    its answer is cached on the token ids it depends on, because it deep-copies whole configs and a
    test may call ``generate`` in a loop.
    """
    passed = kwargs.get("generation_config", args[1] if len(args) > 1 else None)
    token_kwargs = {key: kwargs[key] for key in TOKEN_ID_ATTRIBUTES if key in kwargs}
    key: tuple[Any, ...] = (
        id(type(model)),
        _token_fingerprint(passed),
        _token_fingerprint(getattr(model, "generation_config", None)),
        tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in token_kwargs.items()),
    )
    try:
        cached = _effective_cache.get(key)
    except TypeError:  # an unhashable id value: not cacheable, compute it
        cached, key = None, ()
    if cached is None:
        config = effective_generation_config(model, passed, token_kwargs)
        cached = tuple(copy.deepcopy(getattr(config, k, None)) for k in TOKEN_ID_ATTRIBUTES) if config is not None else ()
        if key:
            if len(_effective_cache) > 256:
                _effective_cache.clear()
            _effective_cache[key] = cached
    if not cached:
        return None
    return SimpleNamespace(**dict(zip(TOKEN_ID_ATTRIBUTES, copy.deepcopy(cached), strict=True)))


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


def _check_generate(target: Recorder, options: Options, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if not options.calls:
        return
    if not hasattr(model, "config"):
        return
    from pytest_tokenguard.guard import batches
    from pytest_tokenguard.static.objects import layout_from_objects

    generation = effective_token_ids(model, args, kwargs)
    layout = layout_from_objects(model, kwargs.get("tokenizer"), generation)
    _record_static(target, options, layout, "generate()")
    batches.check_generate_inputs(target, options, model, args, kwargs)
