"""See every transformers log record and warning, without changing what logging does.

transformers hides its records three ways: its root logger does not propagate, the verbosity
(logger level) stops records from being created at all, and ``warning_once`` is an
``lru_cache`` that skips repeats for the whole process. Adding a handler, lowering levels or
clearing the cache would each change what stderr, ``caplog`` or ``CaptureLogger`` receive.

Instead, while attached, every watched logger (``transformers``, its children, and
``ContinuousBatchingLogger``) has its class swapped for a subclass that reports each call to a
sink *before* the normal logic runs, and then behaves exactly as before: same levels, same
handlers, same cache, same caller information. New watched loggers get the subclass through
the logging manager's logger class. ``warnings.warn`` is wrapped the same way for warnings
issued by transformers modules. Nothing is imported from transformers.

trl logs on ``trl.*`` loggers, mostly through accelerate's ``MultiProcessAdapter`` (``get_logger``): its
``log`` checks the level itself and calls ``Logger.log`` only when enabled (adding ``"[RANK n] "`` with
accelerate >= 1.14), and its ``warning_once`` is an ``lru_cache`` of its own. So ``trl`` loggers are swapped
like transformers' (what reaches ``Logger.log``/``handle`` is seen), ``warnings.warn`` from trl modules is
watched, and once a trl logger exists and accelerate's logging module is loaded, the adapter's ``log`` and
``warning_once`` are wrapped the same way (observe every call, whatever the level, the cache or the logger
say, then run the original). Nothing is imported from trl or accelerate; everything is restored on detach.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pytest_tokenguard.guard.catalog import is_trl, is_watched_logger, is_watched_module

#: sink(logger_name, level, message, channel) with channel "log" or "warnings".
Sink = Callable[[str, int, str, str], None]

_sink: Sink | None = None
_local = threading.local()


def set_sink(sink: Sink | None) -> None:
    """Route observations to ``sink``; ``None`` makes every guarded call a plain pass-through.

    Sessions do not call this directly: ``routing`` decides which session's test receives.
    """
    global _sink
    _sink = sink


def busy() -> bool:
    """True while this thread is inside the guard's own work (nothing it logs is observed)."""
    return bool(getattr(_local, "busy", False))


@contextmanager
def muted() -> Iterator[None]:
    """Do not observe what this thread logs or warns inside the block (the guard's own probing)."""
    already = getattr(_local, "busy", False)
    _local.busy = True
    try:
        yield
    finally:
        _local.busy = already


def _observe(name: str, level: int, msg: object, args: Any) -> None:
    sink = _sink
    if sink is None or getattr(_local, "busy", False):
        return
    try:
        message = logging.LogRecord(name, level, "", 0, msg, args, None).getMessage()
    except Exception:  # a broken format string is logging's problem to report, not ours
        return
    _emit(sink, name, level, message, "log")


def _emit(sink: Sink, name: str, level: int, message: str, channel: str) -> None:
    # The sink may log or warn itself; never observe that re-entrantly.
    _local.busy = True
    try:
        sink(name, level, message, channel)
    finally:
        _local.busy = False


def _bump(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keep the caller's frame as the record's origin despite our extra frame."""
    kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
    return kwargs


def _level_method(level: int, name: str) -> Callable[..., None]:
    """``Logger.info``/``warning``/...: delegate along the MRO when enabled, else only observe."""

    def method(self: logging.Logger, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            getattr(super(GuardedLogger, self), name)(msg, *args, **_bump(kwargs))
        elif _sink is not None:
            _observe(self.name, level, msg, args)

    method.__name__ = method.__qualname__ = name
    return method


class GuardedLogger(logging.Logger):
    """Mixin-style subclass: observe, then do exactly what the base class does."""

    # Records that pass the level check: seen here, whatever filters or handlers do next.
    def handle(self, record: logging.LogRecord) -> None:
        sink = _sink
        if sink is not None and not getattr(_local, "busy", False):
            try:
                message = record.getMessage()
            except Exception:
                message = None
            if message is not None:
                _emit(sink, record.name, record.levelno, message, "log")
        super().handle(record)

    # Records the level (verbosity), ``logging.disable`` or ``disabled`` stop: observed here,
    # because logging never creates them.
    info = _level_method(logging.INFO, "info")
    warning = _level_method(logging.WARNING, "warning")
    error = _level_method(logging.ERROR, "error")
    critical = _level_method(logging.CRITICAL, "critical")
    fatal = critical

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not isinstance(level, int) or self.isEnabledFor(level):
            super().log(level, msg, *args, **_bump(kwargs))
        elif _sink is not None:
            _observe(self.name, level, msg, args)

    # transformers' ``*_once`` helpers are process-wide lru_caches: a repeat never reaches
    # ``warning``. Observe every call, then let the cached original decide what to print.
    def warning_once(self, *args: Any, **kwargs: Any) -> None:
        return self._once("warning_once", logging.WARNING, args, kwargs)

    def info_once(self, *args: Any, **kwargs: Any) -> None:
        return self._once("info_once", logging.INFO, args, kwargs)

    def _once(self, method: str, level: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        original = getattr(logging.Logger, method)
        if _sink is None or not args:
            return original(self, *args, **kwargs)  # type: ignore[no-any-return]
        _observe(self.name, level, args[0], args[1:])
        already = getattr(_local, "busy", False)
        _local.busy = True
        try:
            return original(self, *args, **kwargs)  # type: ignore[no-any-return]
        finally:
            _local.busy = already


def _delegate_cache(method: str, attribute: str) -> Callable[[], Any]:
    return lambda: getattr(getattr(logging.Logger, method), attribute)()


# ``logger.warning_once.cache_clear()`` keeps working on a guarded logger.
for _method in ("warning_once", "info_once"):
    for _attribute in ("cache_clear", "cache_info"):
        setattr(getattr(GuardedLogger, _method), _attribute, _delegate_cache(_method, _attribute))

_guarded_classes: dict[type[logging.Logger], type[logging.Logger]] = {}


def _guarded_class(base: type[logging.Logger]) -> type[logging.Logger]:
    if issubclass(base, GuardedLogger):
        return base
    if base is logging.Logger:
        return GuardedLogger
    cls = _guarded_classes.get(base)
    if cls is None:
        cls = type(f"Guarded{base.__name__}", (GuardedLogger, base), {})
        _guarded_classes[base] = cls
    return cls


class _LoggerFactory:
    """Installed as ``logging.Logger.manager.loggerClass``: guards watched loggers at creation."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, name: str) -> logging.Logger:
        base = self.previous or logging.getLoggerClass()
        logger: logging.Logger = base(name)
        if is_watched_logger(name):
            _patch_warn()  # transformers is being imported: its warnings matter from now on
            _swap(logger)
            if is_trl(name):
                _trl_logger_seen()
        return logger


class _Attachment:
    def __init__(self) -> None:
        self.swapped: list[tuple[logging.Logger, type[logging.Logger]]] = []
        self.factory: _LoggerFactory | None = None
        self.original_warn: Callable[..., None] | None = None
        #: how many live sessions attached (an inner in-process session must not undo the outer's)
        self.users = 0
        #: a trl logger exists: accelerate's adapter is wrapped as soon as its module is loaded
        self.trl_seen = False
        #: (class, attribute, the class's own value before, or _ABSENT) of accelerate's wrapped adapter methods
        self.adapter_patches: list[tuple[type, str, Any]] = []


_attachment: _Attachment | None = None
_attach_lock = threading.RLock()


def _swap(logger: logging.Logger) -> None:
    original = type(logger)
    guarded = _guarded_class(original)
    if guarded is not original:
        logger.__class__ = guarded
        assert _attachment is not None
        _attachment.swapped.append((logger, original))


def _guarded_warn(message: Any, category: Any = None, stacklevel: int = 1, source: Any = None, **kwargs: Any) -> None:
    sink = _sink
    attachment = _attachment
    original = attachment.original_warn if attachment is not None else None
    if original is None:  # detached while this wrapper was still referenced somewhere
        original = _plain_warn
    if sink is not None and not getattr(_local, "busy", False):
        module = sys._getframe(1).f_globals.get("__name__", "")
        if isinstance(module, str) and is_watched_module(module):
            _emit(sink, module, logging.WARNING, str(message), "warnings")
    original(message, category, stacklevel + 1, source, **kwargs)


#: accelerate's logging module (loaded by trl's modules); never imported here
ACCELERATE_LOGGING = "accelerate.logging"
#: ``MultiProcessAdapter.log`` sets ``stacklevel`` 2 when the caller gives none (accelerate 0.2x .. 1.15)
_ADAPTER_STACKLEVEL = 2
_ABSENT = object()


def _trl_logger_seen() -> None:
    attachment = _attachment
    if attachment is not None:
        attachment.trl_seen = True
        if not attachment.adapter_patches and ACCELERATE_LOGGING in sys.modules:
            _patch_accelerate()


def _accelerate_ready() -> bool:
    """accelerate's state exists (else ``MultiProcessAdapter.log`` raises, and ``PartialState()`` would create it)."""
    state = getattr(sys.modules.get("accelerate.state"), "PartialState", None)
    return bool(getattr(state, "_shared_state", None))


def _adapter_observe(adapter: Any, level: int, msg: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Observe what ``adapter.log(level, msg, *args, **kwargs)`` logs on this process, as ``Logger.log`` would
    receive it (with accelerate's ``"[RANK n] "``), whatever the level says. False: not observed (not a watched
    logger, accelerate not initialised, or accelerate changed): the call then goes through unmuted."""
    name = getattr(getattr(adapter, "logger", None), "name", None)
    if not isinstance(name, str) or not is_watched_logger(name) or not _accelerate_ready():
        return False
    try:
        in_order = kwargs.get("in_order", False)
        should_log = getattr(adapter, "_should_log", None)
        if not in_order and should_log is not None and not should_log(kwargs.get("main_process_only", True)):
            return True  # another process (the main one) logs it
        text, _ = adapter.process(msg, {})
    except Exception:
        return False
    _observe(name, level, text, args)
    return True


def _adapter_log(self: Any, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
    """``MultiProcessAdapter.log`` while attached: observe, then the original (muted: seen once)."""
    original = _adapter_original("log")
    if not _accelerate_ready():  # the original raises; nothing is logged
        return original(self, level, msg, *args, **kwargs)  # type: ignore[no-any-return]
    kwargs["stacklevel"] = kwargs.get("stacklevel", _ADAPTER_STACKLEVEL) + 1  # the caller, not this frame
    if (
        _sink is None
        or getattr(_local, "busy", False)
        or not isinstance(level, int)
        or not _adapter_observe(self, level, msg, args, kwargs)
    ):
        return original(self, level, msg, *args, **kwargs)  # type: ignore[no-any-return]
    with muted():
        return original(self, level, msg, *args, **kwargs)  # type: ignore[no-any-return]


def _adapter_warning_once(self: Any, *args: Any, **kwargs: Any) -> None:
    """``MultiProcessAdapter.warning_once`` (a process-wide lru_cache) while attached: observe every call, then
    let the cached original decide what to print."""
    original = _adapter_original("warning_once")
    if (
        _sink is not None
        and not getattr(_local, "busy", False)
        and args
        and _adapter_observe(self, logging.WARNING, args[0], args[1:], kwargs)
    ):
        with muted():
            return original(self, *args, **kwargs)  # type: ignore[no-any-return]
    return original(self, *args, **kwargs)  # type: ignore[no-any-return]


# ``adapter.warning_once.cache_clear()`` keeps working on a wrapped adapter.
for _attribute in ("cache_clear", "cache_info"):
    setattr(
        _adapter_warning_once,
        _attribute,
        lambda _attribute=_attribute: getattr(_adapter_original("warning_once"), _attribute)(),
    )

_ADAPTER_WRAPPERS: dict[str, Callable[..., None]] = {"log": _adapter_log, "warning_once": _adapter_warning_once}
#: the adapter's own methods as they were when wrapped (kept after detach: a bound wrapper may outlive it)
_adapter_originals: dict[str, Any] = {}


def _adapter_original(name: str) -> Any:
    return _adapter_originals[name]


def _patch_accelerate() -> None:
    """Wrap ``MultiProcessAdapter.log`` / ``warning_once`` of the loaded accelerate (no import)."""
    attachment = _attachment
    module = sys.modules.get(ACCELERATE_LOGGING)
    adapter = getattr(module, "MultiProcessAdapter", None)
    if attachment is None or attachment.adapter_patches or not isinstance(adapter, type):
        return
    if not all(callable(getattr(adapter, name, None)) for name in _ADAPTER_WRAPPERS):
        return  # an accelerate whose adapter has another shape: records reaching Logger.log are still seen
    for name, wrapper in _ADAPTER_WRAPPERS.items():
        own = adapter.__dict__.get(name, _ABSENT)
        _adapter_originals[name] = getattr(adapter, name) if own is _ABSENT else own
        attachment.adapter_patches.append((adapter, name, own))
        setattr(adapter, name, wrapper)


def _unpatch_accelerate(attachment: _Attachment) -> None:
    for adapter, name, own in reversed(attachment.adapter_patches):
        if adapter.__dict__.get(name) is not _ADAPTER_WRAPPERS[name]:
            continue  # replaced after us (a mock): theirs stays
        if own is _ABSENT:
            delattr(adapter, name)
        else:
            setattr(adapter, name, own)
    attachment.adapter_patches = []


_plain_warn = warnings.warn


def attach() -> None:
    """Guard existing and future watched loggers and transformers' warnings.

    Reference-counted: every ``attach`` needs one :func:`detach`; only the first installs. Until
    transformers is imported this only installs the logger factory, which costs one name check when a
    new logger is created.
    """
    global _attachment
    with _attach_lock:
        if _attachment is not None:
            _attachment.users += 1
            return
        _attachment = _Attachment()
        _attachment.users = 1
        manager = logging.Logger.manager
        _attachment.factory = _LoggerFactory(manager.loggerClass)
        manager.loggerClass = _attachment.factory  # type: ignore[assignment]  # a factory stands in for a class
        # Code that installs its own class through the manager while attached gets it, guarded: the factory
        # creates from it from now on (and it is what detach leaves installed).
        manager.setLoggerClass = _set_logger_class  # type: ignore[method-assign]
        _swap_existing()


@contextmanager
def _logging_lock() -> Iterator[None]:
    logging._acquireLock()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        logging._releaseLock()  # type: ignore[attr-defined]


def _set_logger_class(klass: type[logging.Logger]) -> None:
    """``logging.Logger.manager.setLoggerClass`` while attached: same check as logging, then record the class
    as the one the factory creates from."""
    if klass != logging.Logger and not issubclass(klass, logging.Logger):
        raise TypeError("logger not derived from logging.Logger: " + klass.__name__)
    attachment = _attachment
    if attachment is not None and attachment.factory is not None:
        attachment.factory.previous = klass
    else:  # detached meanwhile: behave like logging
        logging.Logger.manager.loggerClass = klass


def follow_logger_class() -> None:
    """Re-install the factory if someone assigned ``manager.loggerClass`` directly; their class is kept as the
    one the factory creates from. Cheap: one comparison when nothing changed."""
    attachment = _attachment
    if attachment is not None and attachment.trl_seen and not attachment.adapter_patches:
        _trl_logger_seen()  # accelerate's logging loaded after the trl loggers were made
    manager = logging.Logger.manager
    if attachment is None or attachment.factory is None or manager.loggerClass is attachment.factory:  # type: ignore[comparison-overlap]
        return
    attachment.factory.previous = manager.loggerClass
    manager.loggerClass = attachment.factory  # type: ignore[assignment]
    _swap_existing()  # loggers created meanwhile, from the other class


def _swap_existing() -> None:
    with _logging_lock():
        existing = [obj for obj in logging.Logger.manager.loggerDict.values() if isinstance(obj, logging.Logger)]
    for logger in existing:
        if is_watched_logger(logger.name) and not isinstance(logger, GuardedLogger):
            _patch_warn()
            _swap(logger)
            if is_trl(logger.name):
                _trl_logger_seen()


def _patch_warn() -> None:
    # Only once transformers is loaded: a run that never imports it keeps the plain warnings.warn.
    assert _attachment is not None
    if _attachment.original_warn is None:
        _attachment.original_warn = warnings.warn
        warnings.warn = _guarded_warn


def detach() -> None:
    """Release one :func:`attach`; the last release undoes everything: logger classes, the manager's logger
    class, ``warnings.warn``."""
    global _attachment
    with _attach_lock:
        attachment = _attachment
        if attachment is None:
            return
        attachment.users -= 1
        if attachment.users > 0:
            return
        set_sink(None)
        manager = logging.Logger.manager
        if manager.__dict__.get("setLoggerClass") is _set_logger_class:
            del manager.setLoggerClass  # back to logging.Manager's own method
        if manager.loggerClass is attachment.factory:  # type: ignore[comparison-overlap]
            manager.loggerClass = attachment.factory.previous if attachment.factory else None
        for logger, original in attachment.swapped:
            logger.__class__ = original
        if attachment.original_warn is not None and warnings.warn is _guarded_warn:
            warnings.warn = attachment.original_warn
        _unpatch_accelerate(attachment)
        _attachment = None
